"""Run every command the documentation shows and report its time and exit status.

    python tools/check_docs.py                 # README.md and docs/*.md
    python tools/check_docs.py --list          # only list what would run
    python tools/check_docs.py --only compare  # commands matching a regular expression

Commands are taken from the fenced ``bash`` and ``python`` blocks of the files, and from inline
code in tables that starts with ``python `` (the benchmark commands). Runs happen in the
repository root, but every output goes to a temporary folder (``--out``, default: a new one in
/tmp): a ``python -m llmos_sim`` command without an output folder gets ``hydra.run.dir`` /
``hydra.sweep.dir`` there, and a relative ``outputs/...`` path becomes ``<out>/outputs/...``.
``<...>`` placeholders are filled where the docs make them unambiguous (``outputs/multirun/
<date>/<time>``: the sweep folder of the last sweep run here); other placeholders are skipped.

Not run unless asked: the set-up line (``--install``: creates a virtual environment), the test
suite (``--tests``), and benchmarks (``--benchmarks``: minutes of CPU each). Each run gets
``--timeout`` seconds (default 600). Exit status: 1 when any command that ran failed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\s*$")
INLINE = re.compile(r"`(python [^`]+)`")


@dataclass
class Command:
    """One documented command: where it is, what kind, its text."""

    file: str
    line: int
    kind: str  # bash | python | inline
    text: str
    status: str = "pending"  # ok | FAIL (rc) | TIMEOUT | skipped: why
    wall_s: float = 0.0
    cpu_s: float = 0.0
    tail: str = ""


def _bash_commands(lines: list[str], first_line: int) -> list[tuple[int, str]]:
    """Commands of a bash block: continuation lines joined, comments dropped."""
    out, buf, start = [], "", 0
    for i, raw in enumerate(lines):
        line = raw.rstrip()
        if not buf:
            start = first_line + i
        if line.endswith("\\"):
            buf += line[:-1].strip() + " "
            continue
        buf += line.strip()
        text = re.sub(r"\s{2,}#.*$", "", buf).strip()
        buf = ""
        if text and not text.startswith("#"):
            out.append((start, text))
    return out


def extract(path: Path) -> list[Command]:
    """Every command of one markdown file."""
    rel = str(path.relative_to(REPO))
    lines = path.read_text().splitlines()
    cmds: list[Command] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            lang, j = m.group(1), i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            body = lines[i + 1:j]
            if lang in ("bash", "sh", "shell"):
                cmds += [Command(rel, n, "bash", t) for n, t in _bash_commands(body, i + 2)]
            elif lang == "python":
                cmds.append(Command(rel, i + 2, "python", "\n".join(body)))
            i = j + 1
            continue
        if lines[i].lstrip().startswith("|"):
            cmds += [Command(rel, i + 1, "inline", t) for t in INLINE.findall(lines[i]) if "<" not in t]
        i += 1
    return cmds


def _skip_reason(c: Command, a: argparse.Namespace) -> str | None:
    t = c.text
    if c.kind != "python" and ("pip install" in t or "venv" in t) and not a.install:
        return "set-up (run with --install)"
    if re.search(r"-m pytest\b", t) and not a.tests:
        return "the test suite (run with --tests)"
    if "benchmarks/" in t and not a.benchmarks:
        return "benchmark (run with --benchmarks)"
    return None


def _rewrite(c: Command, out: Path, n: int, last_sweep: list[str]) -> str | None:
    """The command with its outputs moved under ``out``; ``None`` for an unfillable placeholder."""
    t = c.text
    if c.kind == "python":
        return t.replace("/tmp/sweep", str(out / f"py{n}"))
    if "outputs/multirun/<date>/<time>" in t:
        if not last_sweep:
            return None
        t = t.replace("outputs/multirun/<date>/<time>", last_sweep[-1])
    if re.search(r"<[^>]+>", t):
        return None
    t = re.sub(r"(?<![\w/.])outputs/", f"{out}/outputs/", t)
    if re.match(r"python -m llmos_sim(\s|$)", t) and "--help" not in t and "--cfg" not in t:
        if " -m " in f" {t.split('llmos_sim', 1)[1]} ":
            if "hydra.sweep.dir=" not in t:
                t += f" hydra.sweep.dir={out}/sweep{n}"
            last_sweep.append(re.search(r"hydra\.sweep\.dir=(\S+)", t).group(1))
        elif "hydra.run.dir=" not in t:
            t += f" hydra.run.dir={out}/run{n}"
    return t


def run(c: Command, text: str, timeout: float) -> None:
    # `python` in a command is this interpreter (its environment's bin folder first on PATH)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        if c.kind == "python":
            p = subprocess.run([sys.executable, "-"], input=text, cwd=REPO, capture_output=True, text=True,
                               timeout=timeout, env=env)
        else:
            p = subprocess.run(["bash", "-c", text], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                               env=env)
        c.status = "ok" if p.returncode == 0 else f"FAIL ({p.returncode})"
        if p.returncode:
            c.tail = (p.stdout[-800:] + "\n" + p.stderr[-1500:]).strip()
    except subprocess.TimeoutExpired:
        c.status = f"TIMEOUT (> {timeout:.0f} s)"
    c.wall_s = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    c.cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python tools/check_docs.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", help="markdown files (default: README.md and docs/*.md)")
    ap.add_argument("--out", type=Path, help="folder for every output (default: a new one in /tmp)")
    ap.add_argument("--only", help="run only commands matching this regular expression")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per command")
    ap.add_argument("--list", action="store_true", help="list the commands, run nothing")
    ap.add_argument("--install", action="store_true", help="also run the set-up line")
    ap.add_argument("--tests", action="store_true", help="also run the test suite")
    ap.add_argument("--benchmarks", action="store_true", help="also run the benchmarks")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    a = ap.parse_args(argv)
    files = [Path(f).resolve() for f in a.files] or [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    cmds = [c for f in files for c in extract(f)]
    out = a.out or Path(tempfile.mkdtemp(prefix="llmos_docs_"))
    out.mkdir(parents=True, exist_ok=True)
    last_sweep: list[str] = []
    for n, c in enumerate(cmds):
        if a.only and not re.search(a.only, c.text):
            c.status = "skipped: --only"
            continue
        why = _skip_reason(c, a)
        text = _rewrite(c, out, n, last_sweep)
        if why is None and text is None:
            why = "placeholder"
        if why or a.list:
            c.status = f"skipped: {why}" if why else "listed"
        else:
            run(c, text, a.timeout)
        first = c.text.splitlines()[0] if c.kind == "python" else c.text
        print(f"{c.status:<28} {c.wall_s:7.1f} s wall {c.cpu_s:7.1f} s CPU  {c.file}:{c.line}  "
              f"{first[:110]}{' …' if len(first) > 110 or c.kind == 'python' else ''}", flush=True)
        if c.tail:
            print("    " + c.tail.replace("\n", "\n    "))
    ran = [c for c in cmds if not c.status.startswith(("skipped", "listed"))]
    bad = [c for c in ran if c.status != "ok"]
    print(f"\n{len(cmds)} commands: {len(ran)} run, {len(ran) - len(bad)} ok, {len(bad)} failed, "
          f"{len(cmds) - len(ran)} not run; outputs in {out}")
    if a.json:
        a.json.write_text(json.dumps([asdict(c) for c in cmds], indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
