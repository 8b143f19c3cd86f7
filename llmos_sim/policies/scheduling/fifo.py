"""First-in, first-out."""
from __future__ import annotations

from llmos_sim.policies.scheduling.base import Placement, QueueScheduler


class FIFO(QueueScheduler):
    """Serve jobs in arrival order. The default is strict (``blocking=True``): a head job that
    cannot start blocks everyone behind it (head-of-line blocking), as a plain FIFO queue does.
    ``fifo_skip`` (``blocking=False``) lets later jobs that fit start meanwhile; it has no
    reservation, so a large job can starve (EASY backfilling adds the reservation)."""

    def __init__(self, placement: Placement | None = None, blocking: bool = True, elastic_grow: bool = True) -> None:
        super().__init__(placement, blocking=blocking, elastic_grow=elastic_grow)
