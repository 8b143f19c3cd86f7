"""The pass-local overlay (Tentative) agrees with a brute-force free set, through take,
release and fork (hypothesis)."""
from hypothesis import given, settings, strategies as st

from llmos_sim.types import Cluster, DeviceSpec
from llmos_sim.view import FreeDevices, Tentative

CL = Cluster.homogeneous(3, 4, DeviceSpec("d", 1.0, 1))


@settings(max_examples=150, deadline=None)
@given(st.sets(st.integers(0, 11)), st.lists(st.tuples(st.sampled_from(["take", "release", "fork"]),
                                                        st.integers(0, 11)), max_size=25))
def test_overlay_matches_a_plain_set(initially_free, ops):
    t = Tentative(FreeDevices(CL, sorted(initially_free)))
    free = set(initially_free)
    for op, d in ops:
        if op == "take" and d in free:
            t.take([d])
            free.discard(d)
        elif op == "release" and d not in free:
            t.release([d])
            free.add(d)
        elif op == "fork":
            forked = t.fork()
            if free:  # changing the fork leaves the original alone
                forked.take([min(free)])
        assert t.total == len(free)
        for n, node in enumerate(CL.nodes):
            want = sorted(x for x in node.devices if x in free)
            assert t.ids(n) == want and t.count(n) == len(want)
        for k in range(5):
            want = sorted(n for n, node in enumerate(CL.nodes) if sum(x in free for x in node.devices) == k)
            assert sorted(t.nodes_with(k)) == want
            first = t.first_node_with(k)
            assert (first is None) == (not want) and (first is None or first in want)
        for k in range(6):  # the best-fit node: first_node_with for k, k + 1, ... in one call
            asked = (t.first_node_with(m) for m in range(k, 5))
            assert t.best_fit_node(k) == next((x for x in asked if x is not None), None)
        assert all(t.is_free(x) == (x in free) for x in range(12))
