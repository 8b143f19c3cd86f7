"""Helpers for the torch backend tests: tiny real runs on the local devices (the CPU here)."""
from __future__ import annotations

import pytest

# no importorskip here: a conftest cannot skip; each test module skips itself without torch

@pytest.fixture(autouse=True)
def _no_calibration(tmp_path, monkeypatch):
    """Tests never read a developer's calibration file."""
    monkeypatch.setenv("LLMOS_CALIBRATION", str(tmp_path / "none.json"))


