"""Ordering hooks for batching policies: who waits first, who is preempted first.

An ordering gives each waiting sequence a sort key (the waiting list is kept sorted by it) and
ranks running sequences for preemption (most preemptable first).
"""
from __future__ import annotations

import numpy as np

from llmos_sim.serving.view import SeqTable, WaitingSeq


class Ordering:
    """First come, first served: waiting by (arrival, id); preempt the most recently admitted
    first (vLLM's ``running.pop()``)."""

    def key(self, w: WaitingSeq) -> tuple:
        return (w.arrival_s, w.rid)

    def victims(self, running: SeqTable) -> np.ndarray:
        """Running rows, most preemptable first."""
        return np.argsort(-running.array("admit_seq"), kind="stable")


class FCFS(Ordering):
    """First come, first served (the default)."""


class ShortestPredictedFirst(Ordering):
    """Shortest predicted remaining output first; preempt the longest predicted remaining.
    The prediction is the request's ``predicted_output_tokens`` (the workload's predictor),
    or its true output length when the workload gives none (an oracle)."""

    def key(self, w: WaitingSeq) -> tuple:
        return (w.pred - w.generated, w.arrival_s, w.rid)

    def victims(self, running: SeqTable) -> np.ndarray:
        return np.lexsort((-running.array("admit_seq"), -(running.array("pred") - running.array("generated"))))


class PriorityOrder(Ordering):
    """Lower ``priority`` value first, then arrival; preempt the highest value, latest admitted."""

    def key(self, w: WaitingSeq) -> tuple:
        return (w.priority, w.arrival_s, w.rid)

    def victims(self, running: SeqTable) -> np.ndarray:
        return np.lexsort((-running.array("admit_seq"), -running.array("priority")))
