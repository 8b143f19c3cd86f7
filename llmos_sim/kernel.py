"""The simulation kernel: the one module that touches SimPy's internals.

Both loops of the simulator — the job-level engine (:mod:`llmos_sim.engine`) and the
iteration-level serving replicas (:mod:`llmos_sim.serving`) — run on a SimPy environment and
share this substrate:

- :class:`Instant` and :func:`push_at`: a light, already-triggered event put on the
  environment's heap at an *absolute* time (``env.timeout(t - now)`` lands at
  ``now + (t - now)``, which floating point does not always round back to ``t``);
- :func:`queue_of`: the environment's heap and id counter, fetched once by a caller;
- :func:`move_to`: an event already on the heap moved to another time (a wait cut short);
- :func:`nothing_due_at`, :func:`events_pending`: questions about the heap;
- :func:`outcome`: whether a processed event succeeded, and its value (or exception);
- :func:`sparse_gc`: the cyclic garbage collector, run rarely while simulating.

It relies on SimPy 4's layout: the heap is ``env._queue``, a list of
``(time, priority, eid, event)`` tuples ordered by ``heapq``; ``env._eid`` is the insertion
counter that breaks ties; an event's outcome is ``event._ok`` / ``event._value``. The project
pins ``simpy<5`` and ``tests/core/test_kernel.py`` checks the layout, so a SimPy release that
changes it fails that test instead of silently reordering events.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from heapq import heapify, heappush
from typing import Any

import simpy


class Instant:
    """A triggered, successful event at an absolute time, for SimPy's ``step``: only a
    callback list and ``_ok`` — far lighter than ``simpy.Event``. The engine's own instants
    (arrivals, passes) and the SimPy model's task completions use it, one or more per job.

    Push it with :func:`push_at`, which keeps ties exact (jobs that arrive together are seen
    together).
    """

    __slots__ = ("callbacks",)
    _ok = True
    _value = None

    def __init__(self, callback=None) -> None:
        self.callbacks = [callback] if callback is not None else []


def queue_of(env: simpy.Environment) -> tuple[list, Any]:
    """``env``'s event heap and id counter, for :func:`push_at` (fetched once, kept by the caller:
    this is on the per-job path)."""
    return env._queue, env._eid  # type: ignore[attr-defined]


def push_at(queue: tuple[list, Any], time_s: float, event: Instant, priority: int = 1) -> Instant:
    """Put ``event`` on the environment's queue (from :func:`queue_of`) at absolute ``time_s``,
    in the layout ``(time, priority, eid, event)`` that ``Environment.schedule`` uses."""
    heappush(queue[0], (time_s, priority, next(queue[1]), event))
    return event


def move_to(queue: tuple[list, Any], event: Instant, time_s: float) -> bool:
    """Move ``event``, already on the heap of :func:`queue_of`, to ``time_s`` (its priority and
    insertion id kept, so it keeps its order among events pushed at the same time before and
    after it). Linear in the heap's size; False (nothing moved) when it is not on the heap."""
    heap = queue[0]
    for i, entry in enumerate(heap):
        if entry[3] is event:
            last = heap.pop()
            if i < len(heap):
                heap[i] = last
                heapify(heap)
            heappush(heap, (time_s, entry[1], entry[2], event))
            return True
    return False


def nothing_due_at(heap: list, now_s: float) -> bool:
    """No event is due at ``now_s`` on ``heap`` (the first of :func:`queue_of`): it is empty or
    its next event is later."""
    return not heap or heap[0][0] > now_s


def events_pending(heap: list) -> bool:
    """Some event other than SimPy's own stop marker (priority < 0) is still on ``heap``."""
    return any(e[1] >= 0 for e in heap)


def advance_to(env: simpy.Environment, time_s: float) -> None:
    """Set ``env``'s clock to ``time_s`` without stepping it: a run simulated outside SimPy's
    loop (the engine's fast core) leaves the environment at the time it ended."""
    env._now = time_s  # type: ignore[attr-defined]


def outcome(event: Any) -> tuple[bool, Any]:
    """``(ok, value)`` of a processed event: its value, or the exception it failed with."""
    return event._ok, event._value


@contextmanager
def sparse_gc(threshold0: int = 100_000):
    """Run the cyclic garbage collector rarely while simulating.

    A run keeps millions of small live objects (log records, jobs); with the default
    thresholds the collector rescans them over and over and doubles a large run's cost. The
    engine makes no reference cycles per job, so reference counting frees its garbage; cycles
    made elsewhere are still collected, only less often. The old thresholds come back after.
    (The serving simulation uses it too.)
    """
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], threshold0), max(old[1], 50), max(old[2], 100))
    try:
        yield
    finally:
        gc.set_threshold(*old)
