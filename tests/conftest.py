"""Shared test helpers, and the property tests' profiles.

The default run is deterministic: hypothesis draws the same examples every time
(``derandomize``), so a test run's outcome depends on the code only. Exploring for new
failures is a separate, deliberate run: ``HYPOTHESIS_PROFILE=explore python -m pytest -n 2``
(new random examples each run; the fuzz tests take ``FUZZ_EXAMPLES``), or
``python -m llmos_sim.stress -n 300``.
"""
from __future__ import annotations

import os

from hypothesis import settings

os.environ.setdefault("MPLBACKEND", "Agg")

settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
