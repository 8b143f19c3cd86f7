"""Feed the simulator hundreds of bad inputs and count how each one ended.

    python benchmarks/fuzz_inputs.py                  # ~1,800 inputs, a few minutes
    python benchmarks/fuzz_inputs.py --per-pair 1 --config-limit 100 --cli 4   # a quick look

Three families (the cases are those of ``tests/fuzz/cases.py``):

1. malformed files for every loader (Philly, Pollux, Tiresias jobs and cluster spec, Alibaba
   pods and nodes, Azure, arXiv, vLLM requests, memory-trace CSV, memory snapshot JSON):
   empty, header only, truncated, a column dropped, a bad cell (empty, words, NaN, ±inf,
   negative, fractional, huge integers, ...), invalid UTF-8, a field too many or too few,
   random bytes, the header repeated, columns reordered, JSON fields and keys broken;
2. an invalid value for every numeric, boolean and enumerated config key of a set of base
   configs (every mode and the group options with their own keys), each run in-process under
   a time limit;
3. a sample of both through the command line (``python -m llmos_sim``) in subprocesses: a
   named error must be exit status 1 and exactly one line ``error: ...`` on stderr.

Outcomes: ``named`` (an error naming the file or the key), ``ok`` (a valid reading, and the
result is sane), ``unnamed``, ``raw`` (a traceback), ``silent`` (a result for an invalid input,
or an insane result), ``hang``. Exit status 1 if any input ends in one of the last four.
"""
from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fuzz"))

import cases  # noqa: E402

#: loaders the command line can be pointed at (override prefix)
CLI_LOADERS = {"tiresias": ["workload=tiresias", "workload.path={path}"],
               "philly": ["workload=philly", "workload.path={path}", "workload.max_jobs=50"],
               "pollux": ["workload=pollux", "workload.path={path}"],
               "azure": ["experiment=serving_quick", "+workload.path={path}"]}


def run_cli(args: list[str], expect_error: bool, cwd: Path, timeout_s: float = 180.0) -> tuple[str, str]:
    """One ``python -m llmos_sim`` run; (outcome, detail)."""
    cmd = [sys.executable, "-m", "llmos_sim", "output.plots=false", f"hydra.run.dir={cwd / 'run'}", *args]  # (the case's last)
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return "hang", " ".join(args)
    what = " ".join(args)
    if p.returncode == 0:
        return ("silent", f"{what}: exit 0") if expect_error else ("ok", what)
    if "Traceback" in p.stderr:
        return "raw", f"{what}: {p.stderr.strip().splitlines()[-1]}"
    lines = p.stderr.strip().splitlines()
    if p.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "):
        return "named", lines[0]
    return "unnamed", f"{what}: exit {p.returncode}: {p.stderr.strip()!r}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-pair", type=int, default=4, help="cases per (loader, mutation) pair")
    ap.add_argument("--config-limit", type=int, default=None, help="at most this many config cases")
    ap.add_argument("--cli", type=int, default=16, help="cases run through the command line")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--examples", type=int, default=3, help="bad outcomes printed per kind")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    r = random.Random(args.seed)
    families: dict[str, cases.Tally] = {}
    t0, c0 = time.time(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tally = families.setdefault("loader files", cases.Tally())
        loader_cases = cases.loader_cases(args.per_pair, seed=args.seed)
        for case in loader_cases:
            tally.add(*cases.judge_loader(case, folder))
        tally = families.setdefault("config keys", cases.Tally())
        config_cases = cases.config_cases()
        if args.config_limit is not None:
            config_cases = r.sample(config_cases, min(args.config_limit, len(config_cases)))
        for base, key, value, must in config_cases:
            tally.add(*cases.judge_config(base, key, value, must))
        tally = families.setdefault("command line", cases.Tally())
        cli_files = [c for c in loader_cases if c.loader in CLI_LOADERS]
        for i in range(args.cli):
            if i % 2 == 0:
                case = r.choice(cli_files)
                path = folder / f"cli{i}{cases.LOADERS[case.loader].suffix}"
                path.write_bytes(case.data)
                cli_args = [a.format(path=path) for a in CLI_LOADERS[case.loader]]
                tally.add(*run_cli(cli_args, case.expect == "error", folder))
            else:
                base, key, value, must = r.choice([c for c in cases.config_cases() if c[3]])
                tally.add(*run_cli([*base, f"{key}={value}"], True, folder))
    total = cases.Tally()
    print(f"{'family':<14}" + "".join(f"{o:>9}" for o in cases.OUTCOMES) + f"{'total':>9}")
    for name, t in families.items():
        print(f"{name:<14}" + "".join(f"{t.counts[o]:>9}" for o in cases.OUTCOMES) + f"{sum(t.counts.values()):>9}")
        for o in cases.OUTCOMES:
            total.counts[o] += t.counts[o]
        for o, ex in t.examples.items():
            total.examples.setdefault(o, []).extend(ex)
    print(f"{'all':<14}" + "".join(f"{total.counts[o]:>9}" for o in cases.OUTCOMES)
          + f"{sum(total.counts.values()):>9}")
    print(f"(wall {time.time() - t0:.0f} s, CPU {time.process_time() - c0:.0f} s in this process)")
    for o, ex in total.examples.items():
        print(f"-- {o}: {len(ex)}")
        for e in ex[:args.examples]:
            print(f"   {e[:300]}")
    return 1 if total.bad else 0


if __name__ == "__main__":
    sys.exit(main())
