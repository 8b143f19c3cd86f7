"""Helpers for the torch backend tests: tiny real runs on the local devices (the CPU here)."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

@pytest.fixture(autouse=True)
def _no_calibration(tmp_path, monkeypatch):
    """Tests never read a developer's calibration file."""
    monkeypatch.setenv("LLMOS_CALIBRATION", str(tmp_path / "none.json"))


