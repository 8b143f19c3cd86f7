"""``python -m llmos_sim [overrides]``: compose the configs, run, write results. Nothing else.

``python -m llmos_sim --help`` lists the config groups; ``python -m llmos_sim.compare`` merges a
sweep. Re-running a sweep into the same ``hydra.sweep.dir`` resumes it: a run whose folder
holds a completion marker (``complete.json``) for the same resolved config, package version,
source and input files is skipped (its saved objective is returned); any other is run again,
saying why; ``output.resume=false`` forces it. The run holds the folder's lock throughout.

A user's mistake (a bad config value, a malformed trace, a missing optional package) ends the
command with exit status 1 and one line ``error: <what and where>`` on stderr, no traceback
(:func:`llmos_sim.validate.named_error` decides what counts as one).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from itertools import islice
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from llmos_sim.outputs import check_run_name, output_lock, resume_check
from llmos_sim.run import run_config, summary_frame, write_results
from llmos_sim.validate import check_config, install_hint, named_error

#: Hydra launcher options -> the plugin module they need
LAUNCHER_PLUGINS = {"joblib": "hydra_plugins.hydra_joblib_launcher",
                    "joblib_local": "hydra_plugins.hydra_joblib_launcher",
                    "ray": "hydra_plugins.hydra_ray_launcher", "ray_local": "hydra_plugins.hydra_ray_launcher",
                    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
                    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
                    "slurm": "hydra_plugins.hydra_submitit_launcher"}


class InputFailure(CompactHydraException):
    """A user's mistake: Hydra prints just this message and exits with 1."""


def _objective(cfg: DictConfig, summary: dict) -> float | None:
    metric = summary.get(str(cfg.output.get("objective", "jct_s_avg")))
    return float(metric) if isinstance(metric, (int, float)) else None


@hydra.main(version_base="1.3", config_path="pkg://llmos_sim.configs", config_name="config")
def _run(cfg: DictConfig) -> float | None:
    """Run one configuration into Hydra's output folder and print its summary."""
    _run_started()
    hc = HydraConfig.get()
    out = hc.runtime.output_dir
    try:
        check_run_name(cfg.name)
        check_config(cfg)
        if cfg.output.get("resume", True):
            done, why = resume_check(OmegaConf.to_yaml(cfg, resolve=True), out)
            if done is not None:
                print(f"# {cfg.name}: complete in {out}, skipped (output.resume=false re-runs it)")
                return _objective(cfg, done)
            if why:
                print(f"# {cfg.name}: re-running {out}: {why}")
        with output_lock(out):
            result = run_config(cfg, progress=bool(cfg.output.progress))
            # what Hydra writes to .hydra/ by default, written here with the results (one writer, one run)
            hydra_files = {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml({"hydra": hc}),
                           "overrides.yaml": OmegaConf.to_container(hc.overrides.task)}
            write_results(result, out, plots=bool(cfg.output.plots), trace=bool(cfg.output.get("trace", False)),
                          hydra=hydra_files, release=True)  # only the summary is read after
    except Exception as e:  # noqa: BLE001 - a user's mistake becomes one line, anything else re-raises
        msg = named_error(e)
        if msg is None:
            raise
        if hc.mode == RunMode.MULTIRUN:  # the other runs of the sweep still run
            raise InputFailure(f"error: {msg}") from None
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(1)
    print(f"# {cfg.name}: results in {out}")
    print(summary_frame(result.summary))
    return _objective(cfg, result.summary)


def missing_launcher(argv: list[str]) -> str | None:
    """The error line for a ``hydra/launcher=...`` override whose plugin is not installed."""
    for arg in argv:
        name, eq, value = arg.partition("=")
        if eq and name.lstrip("+~") == "hydra/launcher" and value in LAUNCHER_PLUGINS:
            module = LAUNCHER_PLUGINS[value]
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                return f"error: hydra/launcher={value} needs {module}, which is not installed: {install_hint(module)}"
    return None


#: a sweep is checked one value at a time; past this many compositions the rest is left to Hydra
MAX_SWEEP_CHECKS = 256
#: the flags that do not change what composes (everything else keeps Hydra's own report)
_PLAIN_FLAGS = ("-m", "--multirun")


def _one_line(e: Exception) -> str:
    """Hydra's several-line composition report as one ``error:`` line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if "Available options in" in str(e):  # a missing option: name the options in one line
        head = lines[0]
        opts = [ln for ln in lines[lines.index(next(x for x in lines if x.startswith("Available options"))) + 1:]
                if not ln.startswith(("Config search path", "provider=", "Set the environment"))]
        return f"error: {head} (options: {', '.join(opts)})"
    keep = [ln for ln in lines if not ln.startswith(("Set the environment", "object_type=", "full_key:"))]
    return "error: " + "; ".join(ln.rstrip(".") for ln in keep)


def _is_group(key: str) -> bool:
    """Whether an override key names a config group (``scheduler``, ``+experiment``) rather
    than a value (``seed``, ``workload.n_jobs``)."""
    import llmos_sim.configs as configs

    name = key.lstrip("+~")
    return "." not in name and any((Path(p) / name).is_dir() for p in configs.__path__)


def _sweep_points(overrides: list[str]):
    """Yield ``(config, swept)`` pairs that together try every value of every sweep once:
    each sweep's values in turn, the others at their first value. A config-group value is
    composed (it can fail to compose); a plain value is set on the base composition (one
    compose for a ``seed=range(0,1000)`` sweep). A sweep the parser cannot expand (``glob``,
    an interval) is left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from llmos_sim.run import compose

    fixed, sweeps = [], []
    for o in OverridesParser.create().parse_overrides(overrides):
        if not o.is_sweep_override():
            fixed.append(o.input_line)
            continue
        try:
            texts = [str(v) for v in islice(o.sweep_string_iterator(), MAX_SWEEP_CHECKS)]
            values = list(islice(o.sweep_iterator(), MAX_SWEEP_CHECKS))
        except Exception:  # noqa: BLE001 - glob/interval sweeps: Hydra expands them itself
            continue
        if texts:
            sweeps.append((o.get_key_element(), texts, values))
    firsts = [f"{k}={texts[0]}" for k, texts, _ in sweeps]
    base = compose(fixed + firsts)
    yield base, " ".join(firsts)
    n = 1
    for i, (key, texts, values) in enumerate(sweeps):
        for text, value in zip(texts[1:], values[1:]):
            n += 1
            if n > MAX_SWEEP_CHECKS:
                return
            point = firsts[:i] + [f"{key}={text}"] + firsts[i + 1:]
            if _is_group(key):
                yield compose(fixed + point), " ".join(point)
            else:
                cfg = base.copy()
                OmegaConf.update(cfg, key.lstrip("+~"), value, force_add=key.startswith("+"))
                yield cfg, " ".join(point)


def composition_error(argv: list[str]) -> str | None:
    """The error line for overrides that do not compose (an unknown key or option, a malformed
    override) or, for a sweep (``-m``), hold a bad value at any point, or ``None``. Hydra
    reports composition errors over several lines and a sweep would start its good points
    first; here a single run or a sweep gets one line and a sweep with a bad point starts none
    (each swept value is tried once, up to :data:`MAX_SWEEP_CHECKS`). Any other flag keeps
    Hydra's own report."""
    if any(a.startswith("-") and a not in _PLAIN_FLAGS for a in argv):
        return None
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from llmos_sim.run import compose

    overrides = [a for a in argv if a not in _PLAIN_FLAGS and not a.lstrip("+~").startswith("hydra")]
    try:
        if not any(a in _PLAIN_FLAGS for a in argv):
            compose(overrides)
            return None
        for cfg, swept in _sweep_points(overrides):
            try:
                check_config(cfg)
            except Exception as e:  # noqa: BLE001 - only a user's mistake is reported here
                msg = named_error(e)
                if msg is None:
                    raise
                return f"error: {msg}" + (f" (sweep point: {swept})" if swept else "")
    except (HydraException, OmegaConfBaseException) as e:
        return _one_line(e)
    return None


#: Hydra's own switch: an exception in Hydra's code propagates instead of being printed
FULL_ERROR = "HYDRA_FULL_ERROR"
#: a single run's state: whether :func:`_single_run` turned Hydra's switch on, whether the run started
_single = {"switched": False, "started": False}


def _switch_back() -> None:
    """Hydra's switch back as the user left it."""
    if _single["switched"]:
        os.environ.pop(FULL_ERROR, None)
        _single["switched"] = False


def _run_started() -> None:
    """Called as a run starts: Hydra reports an exception in the run as it always does."""
    _single["started"] = True
    _switch_back()


def _single_run(argv: list[str]) -> float | None:
    """One run (overrides only, no flag), composed by Hydra alone: Hydra composes the config
    twice (for its mode, then for the run), and a composition of ours first would be a third
    (≈0.1 CPU-s). Only when Hydra fails before the run starts are the overrides checked
    (:func:`composition_error`): its one line when they do not compose, else Hydra's own
    report of its failure (Hydra is run once more to print it)."""
    _single["started"] = False
    if not os.environ.get(FULL_ERROR):
        os.environ[FULL_ERROR] = "1"  # a failure before the run propagates to here, unprinted
        _single["switched"] = True
    try:
        return _run()
    except Exception:  # noqa: BLE001 - a failure before the run is checked; one in the run re-raises
        if _single["started"]:
            raise  # the user's HYDRA_FULL_ERROR: the run's exception, as Hydra leaves it
        users = not _single["switched"]
        _switch_back()
        msg = composition_error(argv)
        if msg is None:
            if users:
                raise
            return _run()
        print(msg, file=sys.stderr)
        sys.exit(1)
    finally:
        _switch_back()


def main() -> float | None:
    """The command line: check the launcher's plugin and that the overrides compose, then run
    under Hydra (a single run's overrides are checked only if Hydra cannot compose them:
    :func:`_single_run`)."""
    argv = sys.argv[1:]
    msg = missing_launcher(argv)
    if msg is None and not any(a.startswith("-") for a in argv):
        return _single_run(argv)
    msg = msg or composition_error(argv)
    if msg is not None:
        print(msg, file=sys.stderr)
        sys.exit(1)
    return _run()


if __name__ == "__main__":
    main()
