"""Every loader, fed malformed files: a named error (naming the file) or a sane result, never a
raw traceback, a hang or a silently wrong result."""
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cases

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("loader", sorted(cases.LOADERS))
def test_each_loader_reads_its_valid_file(tmp_path, loader):
    """The fixture files themselves are valid (else every mutation would be an error anyway)."""
    case = cases.Case(loader, "unchanged", cases.LOADERS[loader].text.encode(), "either")
    assert cases.judge_loader(case, tmp_path) == ("ok", "unchanged")


@pytest.mark.parametrize("kind", cases.MUTATIONS)
def test_every_mutation_of_every_loader(tmp_path, kind):
    """Each mutation kind once per loader (a fixed draw)."""
    r = random.Random(kind)
    for loader in cases.LOADERS.values():
        case = cases.mutate(loader, kind, r)
        outcome, detail = cases.judge_loader(case, tmp_path)
        assert outcome in cases.GOOD, f"[{loader.name}] {outcome}: {detail}"


@FUZZ
@given(loader=st.sampled_from(sorted(cases.LOADERS)), kind=st.sampled_from(cases.MUTATIONS),
       seed=st.integers(0, 2**32 - 1))
def test_random_mutations(tmp_path, loader, kind, seed):
    case = cases.mutate(cases.LOADERS[loader], kind, random.Random(seed))
    outcome, detail = cases.judge_loader(case, tmp_path)
    assert outcome in cases.GOOD, f"[{loader}] {outcome}: {detail}"


@FUZZ
@given(loader=st.sampled_from(sorted(n for n, l in cases.LOADERS.items() if not l.json_lines)),
       row=st.integers(0, 2), col=st.integers(0, 10), token=st.text(max_size=12))
def test_random_cell_text(tmp_path, loader, row, col, token):
    """Any text in any CSV cell (quoted, so it stays one field)."""
    ld = cases.LOADERS[loader]
    rows = cases._csv_rows(ld.text)
    header, body = rows[0], rows[1:]
    i, j = row % len(body), col % len(header)
    body[i][j] = '"' + token.replace('"', '""') + '"'
    c = ld.cols.get(header[j])
    clean = token if not any(ch in token for ch in "\r\n\x00") else None
    valid = cases.token_valid(c, clean) if (c is not None and clean is not None) else None
    case = cases.Case(loader, f"line {i + 2} column {header[j]!r} = {token!r}", cases._join([header] + body),
                      "error" if valid is False else "either")
    outcome, detail = cases.judge_loader(case, tmp_path)
    assert outcome in cases.GOOD, f"[{loader}] {outcome}: {detail}"
