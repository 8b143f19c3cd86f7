"""A run folder's safety rules: valid run names, one writer at a time, a completion marker
that records what made the results (config, code, inputs), and the resume check built on it.

A complete run folder holds, besides its results, ``complete.json``::

    {"config_sha256": <sha256 of config.yaml>, "files": [<result files>],
     "provenance": {"package_version", "git_commit", "git_dirty", "source_sha256",
                    "compiled": [<modules run from the optional compiled build>],
                    "inputs": {<input file>: <sha256>}}}

It is written last, by one atomic rename, after every other file is in place; before any file
of a new run replaces an old one, the old marker (and ``summary.json``) are removed. So a kill
at any moment leaves a folder that is either complete for one config, or not complete at all.

A resumed sweep skips a folder only when its marker matches the new config, the same package
version and source hash, and inputs whose contents still hash the same; otherwise the run is
run again and the reason printed (never refused: the new results replace the old).

``inputs`` are the data files the run read (trace CSVs, node lists, snapshots), seen through a
Python audit hook on ``open`` while :func:`watch_inputs` is active; shipped traces are keyed
``data:<path below llmos_sim/workload/data>``, so editable and wheel installs agree.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from llmos_sim.validate import InputError

MARKER = "complete.json"
LOCK = ".lock"
PARTIAL_PREFIX = ".partial-"
#: a run name: letters, digits and ``._-+=,@`` (no path separators, not ``.``/``..``)
_NAME_RE = re.compile(r"^[A-Za-z0-9_.,=+@-]+$")


class OutputError(InputError):
    """A run folder cannot be used (locked by another run, invalid run name); the message
    names the folder or the config key."""


# ------------------------------------------------------------------------------ run names

def check_run_name(name: Any) -> str:
    """``name`` if it is a safe run name (it becomes part of a folder name), else
    :class:`OutputError` naming the config key: no path separators, no ``..``, not empty."""
    s = str(name)
    if not _NAME_RE.match(s) or s in (".", "..") or ".." in s:
        raise OutputError(f"config key 'name': {s!r} is not a valid run name (use letters, digits and "
                          "'._-+=,@'; no path separators or '..': it becomes part of the output folder)")
    return s


def register_resolvers() -> None:
    """Register ``${llmos_run_name:${name}}`` (the checked name, for ``hydra.run.dir``)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("llmos_run_name"):
        OmegaConf.register_new_resolver("llmos_run_name", check_run_name)


# ------------------------------------------------------------------------------ the lock

_HELD: dict[Path, int] = {}  # lock files this process holds -> nesting depth


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def output_lock(out_dir: str | Path) -> Iterator[Path]:
    """Hold ``<out_dir>/.lock`` (created atomically, by a hard link; it holds the pid and host) while
    writing a run folder. A lock left by a dead process on this host is stale and taken over;
    a live one raises :class:`OutputError`. Re-entrant within one process."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = (out / LOCK).resolve()
    if lock in _HELD:
        _HELD[lock] += 1
        try:
            yield lock
        finally:
            _HELD[lock] -= 1
        return
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    # the lock appears with its content or not at all: written under a private name, then
    # hard-linked to the lock's name (fails if it exists; atomic, also on NFS)
    mine = lock.with_name(f"{LOCK}.{me['host']}.{me['pid']}")
    mine.write_text(json.dumps(me))
    try:
        for _ in range(3):
            try:
                os.link(mine, lock)
                break
            except FileExistsError:
                try:
                    seen = lock.read_text()
                    holder = json.loads(seen or "{}")
                except (OSError, ValueError):
                    seen, holder = None, {}
                pid, host = holder.get("pid"), holder.get("host")
                if not holder or (isinstance(pid, int) and host == me["host"] and not _pid_alive(pid)):
                    with contextlib.suppress(OSError):
                        if lock.read_text() == seen:  # still the stale one (not a new holder's)
                            lock.unlink()  # stale: its process is gone (or the file is garbled)
                    continue
                raise OutputError(f"{out}: another run (pid {pid} on {host}) is writing this folder; "
                                  f"if no such run is alive, delete {lock}") from None
        else:
            raise OutputError(f"{out}: could not take the lock {lock}")
    finally:
        mine.unlink(missing_ok=True)
    _HELD[lock] = 1
    try:
        yield lock
    finally:
        del _HELD[lock]
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def clean_partials(out_dir: str | Path) -> list[Path]:
    """Remove ``.partial-*`` folders a killed run left in ``out_dir`` (call with the lock held:
    then no live writer owns one). Returns what was removed."""
    gone = []
    for p in Path(out_dir).glob(PARTIAL_PREFIX + "*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p)
    return gone


# ------------------------------------------------------------------------------ provenance

def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _package_roots() -> dict[str, Path]:
    import llmos_sim
    import llmos_sim.backends
    import llmos_sim.configs

    return {"llmos_sim": Path(llmos_sim.__file__).parent, "backends": Path(llmos_sim.backends.__file__).parent,
            "configs": Path(llmos_sim.configs.__file__).parent}


@lru_cache(maxsize=1)
def source_sha256() -> str:
    """sha256 over the package's code and configs (``*.py``, ``*.yaml`` of ``llmos_sim``, its
    backends and configs, by relative path): changes whenever a policy or a default does."""
    h = hashlib.sha256()
    for label, root in _package_roots().items():
        files = sorted(p for ext in ("*.py", "*.yaml") for p in root.rglob(ext) if "__pycache__" not in p.parts)
        for p in files:
            rel = p.relative_to(root).as_posix()
            if label == "llmos_sim" and rel.startswith(("backends/", "configs/")):
                continue  # counted under their own label (a wheel nests them here)
            h.update(f"{label}/{rel}\0".encode())
            h.update(p.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


@lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout the package is imported from, or ``(None, None)``
    when it is not one (an installed wheel)."""
    root = _package_roots()["llmos_sim"].parent
    if not (root / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "llmos_sim", "backends",
                                 "configs"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, (bool(status.stdout.strip()) if status.returncode == 0 else None)


def _data_dir() -> Path:
    return _package_roots()["llmos_sim"] / "workload" / "data"


def input_key(path: str | Path) -> str:
    """How an input file is named in the marker: ``data:<rel>`` for shipped traces, else its
    absolute path."""
    p = Path(path).resolve()
    data = _data_dir().resolve()
    return f"data:{p.relative_to(data).as_posix()}" if p.is_relative_to(data) else str(p)


def input_path(key: str) -> Path:
    return _data_dir() / key[5:] if key.startswith("data:") else Path(key)


_WATCH: list[set[str]] = []  # stack of active input collections
_HOOKED = False
_SKIP_SUFFIXES = (".py", ".pyc", ".so", ".pyd", ".pth")


def _audit(event: str, args: tuple) -> None:
    if not _WATCH or event != "open":
        return
    path, mode = args[0], args[1]
    if not isinstance(path, (str, bytes, os.PathLike)) or isinstance(path, int):
        return
    if mode is not None and any(c in str(mode) for c in "wax+"):
        return
    flags = args[2] if len(args) > 2 else 0
    if isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR):
        return
    _WATCH[-1].add(os.fsdecode(path))


@contextlib.contextmanager
def watch_inputs() -> Iterator[set[str]]:
    """Collect the data files opened for reading inside the block (the run's inputs): every
    regular file except Python sources and what lies in the interpreter's own folders; shipped
    traces always count. The set is filled in when the block ends."""
    global _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED = True
    seen: set[str] = set()
    _WATCH.append(seen)
    out: set[str] = set()
    try:
        yield out
    finally:
        _WATCH.pop()
        out.update(_inputs_of(seen))


def _inputs_of(paths: set[str]) -> set[str]:
    prefixes = {Path(p).resolve() for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}}
    data = _data_dir().resolve()
    roots = [r.resolve() for r in _package_roots().values()]
    keep = set()
    for s in paths:
        p = Path(s)
        if not p.is_absolute():
            p = Path.cwd() / p
        try:
            p = p.resolve()
            if not p.is_file():
                continue
        except OSError:
            continue
        if p.is_relative_to(data):
            keep.add(str(p))
            continue
        if (p.suffix in _SKIP_SUFFIXES or any(p.is_relative_to(r) for r in [*prefixes, *roots])
                or str(p).startswith(("/proc/", "/sys/", "/dev/", "/etc/"))):
            continue
        keep.add(str(p))
    return keep


def provenance(inputs: set[str] | None = None) -> dict[str, Any]:
    """What made a run's results: package version, git commit (``None`` outside a checkout)
    and whether the package's files differ from it, the source hash, and the inputs' hashes."""
    from llmos_sim import __version__
    from llmos_sim.compiled_finder import in_use

    commit, dirty = git_state()
    return {"package_version": __version__, "git_commit": commit, "git_dirty": dirty,
            "source_sha256": source_sha256(), "compiled": in_use(),
            "inputs": {input_key(p): sha256_file(p) for p in sorted(inputs or ())}}


# ------------------------------------------------------------------------------ marker + resume

def config_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_marker(out_dir: str | Path) -> dict | None:
    """The folder's ``complete.json``, or ``None`` (missing or unreadable)."""
    try:
        m = json.loads((Path(out_dir) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def resume_check(config_yaml: str, out_dir: str | Path) -> tuple[dict | None, str]:
    """Whether a complete run of exactly this config, code and inputs is in ``out_dir``:
    ``(summary, "")`` when it is, else ``(None, why not)`` (``why`` empty when the folder holds
    no complete run at all)."""
    out = Path(out_dir)
    marker = read_marker(out)
    if marker is None:
        return None, ""
    try:
        saved = (out / "config.yaml").read_text()
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return None, "its result files are incomplete"
    if marker.get("config_sha256") != config_sha256(saved):
        return None, "its config.yaml does not match its completion marker"
    if saved != config_yaml:
        return None, "the config changed"
    old, now = marker.get("provenance") or {}, provenance()
    if old.get("package_version") != now["package_version"]:
        return None, f"made by llmos_sim {old.get('package_version')}, this is {now['package_version']}"
    if old.get("source_sha256") != now["source_sha256"]:
        return None, (f"made by different code (source hash {str(old.get('source_sha256'))[:12]}, "
                      f"now {now['source_sha256'][:12]})")
    for key, digest in (old.get("inputs") or {}).items():
        p = input_path(key)
        if not p.is_file():
            return None, f"its input {key} is gone"
        if sha256_file(p) != digest:
            return None, f"its input {key} changed"
    return summary, ""


def replace_file(path: str | Path, write) -> Path:
    """Write a file by ``write(tmp)`` on a temporary name in the same folder (same suffix),
    then rename it over ``path``: a reader never sees half a file, and a symlink named
    ``path`` is replaced, not followed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


register_resolvers()
