"""tools/check_docs.py finds every documented command and keeps their outputs out of the repo."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from workflow.helpers import REPO

spec = importlib.util.spec_from_file_location("check_docs", REPO / "tools" / "check_docs.py")
check_docs = importlib.util.module_from_spec(spec)
sys.modules["check_docs"] = check_docs   # its dataclass looks its module up there
spec.loader.exec_module(check_docs)


def test_extracts_blocks_continuations_and_table_commands():
    cmds = check_docs.extract(REPO / "README.md")
    texts = [c.text for c in cmds]
    assert "python -m llmos_sim experiment=quickstart" in texts
    sweep = next(t for t in texts if "memory_in_cluster" in t and " -m " in t)
    assert "seed=0,1,2" in sweep and "\\" not in sweep          # continuation lines joined
    assert any(c.kind == "python" for c in cmds) and any(c.kind == "inline" for c in cmds)
    assert all("#" not in t for c in cmds if c.kind == "bash" for t in [c.text])  # comments dropped


def test_rewrite_moves_outputs_and_fills_the_sweep_placeholder(tmp_path):
    last: list[str] = []
    mk = lambda t: check_docs.Command("README.md", 1, "bash", t)  # noqa: E731
    run = check_docs._rewrite(mk("python -m llmos_sim experiment=quickstart"), tmp_path, 3, last)
    assert run.endswith(f"hydra.run.dir={tmp_path}/run3")
    sweep = check_docs._rewrite(mk("python -m llmos_sim -m experiment=quickstart seed=0,1"), tmp_path, 4, last)
    assert sweep.endswith(f"hydra.sweep.dir={tmp_path}/sweep4") and last == [f"{tmp_path}/sweep4"]
    cmp = check_docs._rewrite(mk("python -m llmos_sim.compare outputs/multirun/<date>/<time>"), tmp_path, 5, last)
    assert cmp == f"python -m llmos_sim.compare {tmp_path}/sweep4"
    rel = check_docs._rewrite(mk("python -m llmos_sim.compare outputs/multirun/memory"), tmp_path, 6, last)
    assert rel == f"python -m llmos_sim.compare {tmp_path}/outputs/multirun/memory"
    assert check_docs._rewrite(mk("python -m llmos_sim.trace_export <run dir>"), tmp_path, 7, last) is None


def test_runs_a_command_and_reports_status(tmp_path, capsys):
    assert check_docs.main(["--out", str(tmp_path), "--only", r"^python -m llmos_sim --help$"]) == 0
    out = capsys.readouterr().out
    assert "1 run, 1 ok, 0 failed" in out and "ok " in out
