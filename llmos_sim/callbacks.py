"""Hydra callbacks: :class:`CompareCallback` merges a multirun's runs when the sweep ends.

Enable with ``+hydra/callbacks=compare`` on the command line, or in the primary config's
defaults (``- hydra/callbacks: compare``). Single runs are unaffected (Hydra calls
``on_multirun_end`` only for ``-m``).
"""
from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class OptionalFileHandler(logging.FileHandler):
    """Hydra's per-run log file, or nothing when the run folder cannot be written (a finished
    sweep kept read-only: resuming it only skips, and must not fail on its log file)."""

    def __init__(self, filename: str, mode: str = "a", encoding: str | None = None) -> None:
        try:
            super().__init__(filename, mode=mode, encoding=encoding)
        except OSError:
            super().__init__(filename, mode=mode, encoding=encoding, delay=True)
            self.disabled_reason = f"cannot write {filename}"

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self, "disabled_reason", None) is None:
            super().emit(record)


class CompareCallback(Callback):
    """At the end of a multirun, run :func:`llmos_sim.compare.compare_sweep` on its sweep folder.

    ``plots``: also write the comparison plots. A failure is logged, never raised: the runs
    themselves are done and ``python -m llmos_sim.compare <dir>`` can be rerun by hand.
    """

    def __init__(self, plots: bool = True) -> None:
        self.plots = plots

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from llmos_sim.compare import compare_sweep

        sweep_dir = config.hydra.sweep.dir
        try:
            res = compare_sweep(sweep_dir, plots=self.plots)
        except Exception as e:  # noqa: BLE001 - never lose a finished sweep to a plotting bug
            log.warning("comparison of %s failed: %s: %s", sweep_dir, type(e).__name__, e)
            return
        log.info("compared %d runs: %s", len(res.table), res.files["report"])
