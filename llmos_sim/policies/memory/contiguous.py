"""Contiguous max-length reservation: the pre-vLLM serving baseline.

Before paged KV caches (vLLM, SOSP'23), servers such as FasterTransformer and early Orca
setups reserved one contiguous region of the model's maximum sequence length per request,
whatever the request actually used. Here every request is rounded up to a whole number of
``max_len_bytes`` slots (one slot for any request up to ``max_len_bytes``) and placed
first-fit over the address range. The waste shows up as internal fragmentation
(``allocated - requested``).
"""
from __future__ import annotations

from llmos_sim.policies.memory.fit import FirstFitPool


class ContiguousReservationPool(FirstFitPool):
    """Every allocation reserves ``ceil(nbytes / max_len_bytes) * max_len_bytes`` contiguously.

    Reuses the fit base with the alignment set to ``max_len_bytes``: a request of ``n``
    bytes takes ``ceil(n / max_len_bytes)`` consecutive slots (exactly one for the usual
    ``n <= max_len_bytes``); capacity beyond the last whole slot is unused.
    """

    reserves_max_length = True

    def __init__(self, capacity_bytes: int, max_len_bytes: int) -> None:
        if max_len_bytes < 1:
            raise ValueError(f"max_len_bytes must be >= 1, got {max_len_bytes}")
        super().__init__(capacity_bytes, alignment_bytes=max_len_bytes)
        self.max_len_bytes = int(max_len_bytes)
