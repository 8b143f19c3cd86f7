"""The optional compiled build: its import hook never serves a stale extension, and a compiled
run gives the same log and tables as a pure-Python one.

The hook's rules are checked on a throwaway package and build folder (no compiler needed: they
run everywhere, CI included). The equality checks need a build of this checkout
(``python -m llmos_sim.compiled build``) and are skipped, saying so, without one.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from llmos_sim import compiled, compiled_finder
from llmos_sim.compiled_finder import CompiledFinder, ext_suffix, sha256_bytes

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ the hook's rules

def _fake(tmp_path: Path, source: bytes = b"X = 1\n", built_from: bytes | None = None, ext: bool = True):
    """A package dir with ``hot.py`` and a build dir whose manifest records ``built_from``'s
    hash (default: the source's) and, when ``ext``, an extension file for this interpreter."""
    pkg, build = tmp_path / "pkg", tmp_path / "build"
    pkg.mkdir()
    build.mkdir()
    (pkg / "hot.py").write_bytes(source)
    manifest = {"modules": {"llmos_sim.hot": {"source_sha256": sha256_bytes(built_from or source)}}}
    (build / "manifest.json").write_text(json.dumps(manifest))
    if ext:
        (build / ("llmos_sim.hot" + ext_suffix())).write_bytes(b"not loaded by these tests")
    notes: list[str] = []
    finder = CompiledFinder(compiled_finder.read_manifest(build), build, pkg, note=notes.append)
    return finder, build, notes


def test_fresh_build_is_served_from_the_build_folder(tmp_path):
    finder, build, notes = _fake(tmp_path)
    spec = finder.find_spec("llmos_sim.hot")
    assert spec is not None and spec.name == "llmos_sim.hot"
    assert spec.origin == str(build / ("llmos_sim.hot" + ext_suffix()))
    assert finder.state == {"llmos_sim.hot": "compiled"} and notes == []


def test_edited_source_falls_back_to_python_with_one_note(tmp_path):
    finder, _, notes = _fake(tmp_path, source=b"X = 2\n", built_from=b"X = 1\n")
    assert finder.find_spec("llmos_sim.hot") is None  # the normal finders import hot.py
    assert finder.state["llmos_sim.hot"].startswith("stale")
    assert len(notes) == 1 and "llmos_sim.hot" in notes[0] and "pure-Python" in notes[0]


def test_build_for_another_interpreter_or_module_is_ignored_quietly(tmp_path):
    finder, _, notes = _fake(tmp_path, ext=False)
    assert finder.find_spec("llmos_sim.hot") is None
    assert finder.state["llmos_sim.hot"].startswith("not built for this interpreter")
    assert finder.find_spec("llmos_sim.other") is None and "llmos_sim.other" not in finder.state
    assert notes == []


def test_a_stale_extension_is_never_imported(tmp_path):
    """End to end through the import system: with the finder first on ``sys.meta_path`` and a
    stale entry, ``import`` loads the edited ``.py`` (the placeholder extension would fail)."""
    pkg = tmp_path / "src" / "llmos_sim_fake"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "hot.py").write_text("VALUE = 'edited source'\n")
    build = tmp_path / "build"
    build.mkdir()
    (build / ("llmos_sim_fake.hot" + ext_suffix())).write_bytes(b"garbage: importing this would fail")
    (build / "manifest.json").write_text(json.dumps(
        {"modules": {"llmos_sim_fake.hot": {"source_sha256": sha256_bytes(b"VALUE = 'old'\n")}}}))
    code = f"""
import sys
from pathlib import Path
from llmos_sim import compiled_finder as cf
cf.source_path = lambda m, d=None: Path({str(pkg)!r}) / (m.split('.')[-1] + '.py')
f = cf.CompiledFinder(cf.read_manifest(Path({str(build)!r})), Path({str(build)!r}))
sys.meta_path.insert(0, f)
sys.path.insert(0, {str(pkg.parent)!r})
import llmos_sim_fake.hot as h
print(h.VALUE, h.__file__.endswith('hot.py'), f.state['llmos_sim_fake.hot'])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["edited", "source", "True", "stale", "(its", "source", "changed", "since", "the",
                                  "build)"]
    assert "llmos_sim_fake.hot is stale" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_switch_off(monkeypatch):
    for v in ("0", "off", "False", " no "):
        monkeypatch.setenv("LLMOS_SIM_COMPILED", v)
        assert compiled_finder.disabled()
    for v in ("", "1", "on"):
        monkeypatch.setenv("LLMOS_SIM_COMPILED", v)
        assert not compiled_finder.disabled()


def test_no_build_in_a_default_checkout_changes_nothing():
    """Without a build nothing is put on ``sys.meta_path``; with one, every module listed is a
    real module of the package (a typo would silently compile nothing)."""
    for m in compiled.MODULES:
        assert compiled_finder.source_path(m).is_file(), m
    if compiled_finder.read_manifest() is None:
        assert not any(isinstance(f, CompiledFinder) for f in sys.meta_path)
        assert compiled_finder.in_use() == []


# ------------------------------------------------------------------------------ compiled == pure

#: small runs that go through every compiled module: the fast core (FIFO, SJF with memory), the
#: general engine (fast path off, preemptive LAS with rounds), and serving
CASES = {
    "fifo_fast_core": ["experiment=quickstart", "workload.n_jobs=300"],
    "sjf_fast_core_memory": ["experiment=quickstart", "workload.n_jobs=200", "scheduler=sjf", "memory=ideal"],
    "general_engine": ["experiment=quickstart", "workload.n_jobs=200", "engine.fast_path=off"],
    "las_rounds": ["experiment=train_policies", "scheduler=las", "workload.max_jobs=300"],
    "serving": ["experiment=serving_quick", "workload.max_requests=300"],
}

_RUN = """
import pickle, sys
from llmos_sim.run import compose, run_config
from llmos_sim.compiled_finder import in_use
out = {}
for name, overrides in CASES.items():
    res = run_config(compose(overrides))
    out[name] = (list(res.log.records), {k: v for k, v in res.tables.items()}, res.summary)
out["__in_use__"] = in_use()
with open(sys.argv[1], "wb") as f:
    pickle.dump(out, f)
"""


def _fresh_build() -> str | None:
    """Why the equality checks cannot run, or ``None``."""
    rows = {r["module"]: r["build"] for r in compiled.status()}
    missing = [m for m in compiled.MODULES if rows.get(m) != "compiled"]
    if compiled_finder.disabled():
        return "LLMOS_SIM_COMPILED is off"
    if missing:
        return ("no fresh compiled build of " + ", ".join(missing)
                + " (build one: pip install -e '.[compiled]' && python -m llmos_sim.compiled build)")
    return None


def _run(tmp_path: Path, build: str) -> dict:
    env = dict(os.environ, LLMOS_SIM_COMPILED="1" if build == "compiled" else "0")
    path = tmp_path / f"{build}.pkl"
    code = f"CASES = {CASES!r}\n" + _RUN
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(path, "rb") as f:
        return pickle.load(f)


@pytest.mark.skipif(_fresh_build() is not None, reason=str(_fresh_build()))
def test_compiled_runs_equal_pure_runs_record_for_record(tmp_path):
    pure, comp = _run(tmp_path, "pure"), _run(tmp_path, "compiled")
    assert pure.pop("__in_use__") == []
    assert comp.pop("__in_use__") == sorted(compiled.MODULES)  # every compiled module was used
    assert pure.keys() == comp.keys() == CASES.keys()
    for name in CASES:
        (plog, ptables, psum), (clog, ctables, csum) = pure[name], comp[name]
        assert len(plog) == len(clog) > 0, name
        for i, (a, b) in enumerate(zip(plog, clog)):
            assert a == b and type(a[0]) is type(b[0]), (name, i, a, b)
        assert ptables.keys() == ctables.keys(), name
        for t in ptables:
            pd.testing.assert_frame_equal(ptables[t], ctables[t], check_exact=True, obj=f"{name}/{t}")
        assert json.dumps(psum, sort_keys=True, default=str) == json.dumps(csum, sort_keys=True, default=str), name
