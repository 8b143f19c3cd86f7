"""The serving view is a leaf: batching policies import it and nothing of the serving system;
its block arithmetic is the one the policies and the replica use."""
import subprocess
import sys
from itertools import repeat

from hypothesis import given, settings
from hypothesis import strategies as st

from llmos_sim.serving.view import GROW, RESERVE, KVMode, block_growth, blocks_for

HEAVY = ("pandas", "pyarrow", "simpy", "hydra", "llmos_sim.engine", "llmos_sim.serving.system",
         "llmos_sim.serving.replica", "llmos_sim.serving.kv")


def test_importing_a_batching_policy_loads_no_engine_pandas_pyarrow_or_serving_system():
    code = ("import sys\n"
            "from llmos_sim.policies.batching.order import FCFS\n"
            "from llmos_sim.policies.batching import ContinuousBatching, ChunkedPrefill, StaticBatching\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
            "print(sorted(m for m in sys.modules if m.startswith('llmos_sim')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "[]", out
    assert "llmos_sim.serving.view" in out[1] and len(eval(out[1])) <= 12, out[1]


def test_the_package_names_still_load_on_first_use():
    code = "import llmos_sim.serving as s, sys; f = s.simulate; print('llmos_sim.serving.system' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"


def test_kv_mode_is_a_string_enum():
    assert GROW == "grow" and RESERVE == "reserve" and KVMode("grow") is GROW and str(RESERVE) == "reserve"


def test_blocks_for_is_a_ceiling():
    assert [blocks_for(n, 16) for n in (0, 1, 15, 16, 17, 32, 33)] == [0, 1, 1, 1, 2, 2, 3]


def test_block_growth_on_hand_built_rows():
    # block size 4: row 0 holds 1 block for 3 tokens and computes 2 more (5 -> 2 blocks: +1);
    # row 1 holds 2 for 8 and computes 0 (none); row 2 holds 0 and computes 9 (3 blocks);
    # row 3 holds 3 (more than its 5 + 1 tokens need: none, never negative)
    assert block_growth([3, 8, 0, 5], [2, 0, 9, 1], [1, 2, 0, 3], 4) == ([0, 2], [1, 3])
    # k tokens each (a decode span): 4 decode steps from 7 and 8 tokens in blocks of 4
    assert block_growth([7, 8], repeat(4), [2, 2], 4) == ([0, 1], [1, 1])
    assert block_growth([7, 8], 4, [2, 2], 4) == ([0, 1], [1, 1])  # (an int: k each)
    assert block_growth([], [], [], 16) == ([], [])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 40), st.integers(0, 25)), max_size=20),
       st.integers(1, 32), st.integers(0, 40))
def test_block_growth_is_the_ceiling_formula(rows, bt, k):
    """Whatever form ``tokens`` takes, the rows and counts are those of the definition:
    ``ceil((computed + tokens) / block_tokens) - blocks`` where it is > 0."""
    C, T, B = ([r[i] for r in rows] for i in range(3))
    g = [-(-(c + t) // bt) - b for c, t, b in zip(C, T, B)]
    want = [i for i, n in enumerate(g) if n > 0]
    assert block_growth(C, T, B, bt) == (want, [g[i] for i in want])
    assert block_growth(tuple(C), iter(T), iter(B), bt) == (want, [g[i] for i in want])
    gk = [-(-(c + k) // bt) - b for c, b in zip(C, B)]
    want_k = ([i for i, n in enumerate(gk) if n > 0], [n for n in gk if n > 0])
    assert block_growth(C, k, B, bt) == want_k == block_growth(C, repeat(k), B, bt)
