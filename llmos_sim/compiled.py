"""The optional compiled build of the hot modules, and the import hook that uses it safely.

The simulator is pure Python and needs no compiler. On request, the modules in
:data:`MODULES` are compiled with Cython from their plain ``.py`` sources (Cython's
pure-Python mode: the same file, no second copy of the logic) into extension modules::

    pip install -e ".[compiled]"            # Cython (a C compiler must be on the machine)
    python -m llmos_sim.compiled build      # compile; writes llmos_sim/_compiled/
    python -m llmos_sim.compiled status     # what is built, fresh or stale, and in use
    python -m llmos_sim.compiled clean      # remove the build (pure Python again)

The extensions never sit beside their sources (an extension there would win the import over
an edited ``.py``). They live in ``llmos_sim/_compiled/`` with ``manifest.json``, which
records the sha256 of the exact source each was compiled from. ``compiled_finder.install`` (called when
``llmos_sim`` is imported) puts a finder at the front of ``sys.meta_path`` that answers an
import of one of those modules with its extension only when the ``.py`` beside it still hashes
the same; a module whose source changed since the build is imported from its source, with a
one-line note on stderr. Without a build (the default install, CI) the finder is not installed
and nothing changes. ``LLMOS_SIM_COMPILED=0`` (or ``off``) ignores a build.

The extensions run the same Python semantics (Cython with ``annotation_typing=False``: type
hints stay hints, a ``float`` stays a Python float), so a run gives the same event log and
tables either way; ``tests/core/test_compiled.py`` compares the two record for record.
:func:`in_use` lists the modules this process imported compiled (recorded in a run's
provenance).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from llmos_sim.compiled_finder import (BUILD_DIR, MANIFEST, CompiledFinder, disabled, ext_suffix, in_use,
                                       read_manifest, sha256_bytes, source_path)

#: the modules a build compiles (dotted names, all under llmos_sim); chosen by measurement
#: (docs/architecture.md, "The compiled build")
MODULES = (
    "llmos_sim.fastcore", "llmos_sim.fastcore_las", "llmos_sim.kernel", "llmos_sim.engine", "llmos_sim.view", "llmos_sim.events",
    "llmos_sim.types", "llmos_sim.policies.scheduling.base", "llmos_sim.policies.scheduling.preemptive",
    "llmos_sim.serving.replica", "llmos_sim.serving.iteration", "llmos_sim.serving.kv", "llmos_sim.serving.system",
    "llmos_sim.serving.view", "llmos_sim.policies.batching.base", "llmos_sim.policies.batching.continuous",
    "llmos_sim.policies.memory.paged",
)
#: Cython directives: Python semantics unchanged (annotations are not C types; functions stay
#: introspectable Python functions; Python 3 language rules)
DIRECTIVES = {"language_level": 3, "annotation_typing": False, "binding": True, "embedsignature": False}


def status() -> list[dict]:
    """One row per module that :data:`MODULES` or the build names: built?, fresh?, and whether
    this process imported it compiled."""
    manifest = read_manifest() or {"modules": {}}
    finder = CompiledFinder(manifest)
    used = set(in_use())
    rows = []
    for m in sorted(set(MODULES) | set(manifest["modules"])):
        _, why = finder.check(m)
        rows.append({"module": m, "build": why, "in_use": m in used})
    return rows


# ------------------------------------------------------------------------------ building

def build(modules: tuple[str, ...] = MODULES, build_dir: Path = BUILD_DIR, parallel: int | None = None,
          quiet: bool = True) -> dict:
    """Compile ``modules`` with Cython into ``build_dir`` and write its manifest (last, so an
    interrupted build leaves the previous manifest or none). Each module is compiled from a
    copy of its source read once: the recorded hash is the hash of what was compiled."""
    import shutil
    import tempfile

    try:
        import Cython
        from Cython.Build import cythonize
    except ImportError as e:
        raise SystemExit("the compiled build needs Cython: pip install -e \".[compiled]\" "
                         "(and a C compiler, e.g. gcc)") from e
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    entries = {}
    with tempfile.TemporaryDirectory(prefix="llmos_sim_build_") as tmp:
        src_root, out, work = Path(tmp, "src"), Path(tmp, "out"), Path(tmp, "work")
        exts = []
        for m in modules:
            data = source_path(m).read_bytes()
            copy = src_root.joinpath(*m.split(".")[:-1], m.split(".")[-1] + ".py")
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(data)
            entries[m] = {"source_sha256": sha256_bytes(data)}
            exts.append(Extension(m, [str(copy)], extra_compile_args=["-O2"]))
        cwd = os.getcwd()
        os.chdir(tmp)  # Cython and setuptools write relative to here
        try:
            ext_modules = cythonize(exts, compiler_directives=DIRECTIVES, quiet=quiet, build_dir=str(work),
                                    nthreads=0)
            cmd = build_ext(Distribution({"name": "llmos_sim_compiled", "ext_modules": ext_modules}))
            cmd.build_lib, cmd.build_temp = str(out), str(work / "temp")
            cmd.parallel = parallel or min(len(exts), os.cpu_count() or 1)
            cmd.ensure_finalized()
            cmd.run()
        finally:
            os.chdir(cwd)
        build_dir.mkdir(parents=True, exist_ok=True)
        (build_dir / MANIFEST).unlink(missing_ok=True)
        for m in modules:
            built = out.joinpath(*m.split(".")[:-1], m.split(".")[-1] + ext_suffix())
            shutil.copy2(built, build_dir / (m + ext_suffix()))
    manifest = {"cython": Cython.__version__, "python": sys.version.split()[0], "ext_suffix": ext_suffix(),
                "directives": DIRECTIVES, "modules": entries}
    tmp_manifest = build_dir / (MANIFEST + ".tmp")
    tmp_manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    tmp_manifest.replace(build_dir / MANIFEST)
    return manifest


def clean(build_dir: Path = BUILD_DIR) -> bool:
    """Remove the build (``True`` if there was one)."""
    import shutil

    if not build_dir.exists():
        return False
    shutil.rmtree(build_dir)
    return True


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m llmos_sim.compiled",
                                 description="The optional compiled (Cython) build of the hot modules.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compile the hot modules (needs Cython and a C compiler)")
    b.add_argument("modules", nargs="*", help=f"dotted module names (default: {' '.join(MODULES)})")
    sub.add_parser("status", help="what is built, fresh or stale, and what this process imports")
    sub.add_parser("clean", help="remove the build")
    args = ap.parse_args(argv)
    if args.cmd == "build":
        mods = tuple(args.modules) or MODULES
        for m in mods:
            if not source_path(m).is_file():
                ap.error(f"no module {m!r} (no {source_path(m)})")
        manifest = build(mods)
        print(f"built {len(manifest['modules'])} module(s) with Cython {manifest['cython']} into {BUILD_DIR}")
    elif args.cmd == "clean":
        print("removed " + str(BUILD_DIR) if clean() else "no build to remove")
    if args.cmd in ("build", "status"):
        import importlib

        if args.cmd == "status" and not disabled():
            for m in (r["module"] for r in status()):  # import them as a run would: which are served
                try:
                    importlib.import_module(m)
                except Exception as e:  # noqa: BLE001 - a status line, not a failure
                    print(f"{m}: import failed: {e}")
        off = " (LLMOS_SIM_COMPILED is off: the build is ignored)" if disabled() else ""
        for r in status():
            used = "" if args.cmd == "build" else ("in use" if r["in_use"] else "pure Python") + off
            print(f"{r['module']:42s} {r['build']:45s} {used}".rstrip())

if __name__ == "__main__":
    main()
