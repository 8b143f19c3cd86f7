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
import sys

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
                          hydra=hydra_files)
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


def composition_error(argv: list[str]) -> str | None:
    """The error line for overrides that do not compose (an unknown key or option, a malformed
    override), or ``None``. Hydra reports these over several lines; a plain single run (no
    ``-m``, no other flag: those keep Hydra's own report) gets one line instead."""
    if any(a.startswith("-") for a in argv):
        return None
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from llmos_sim.run import compose

    overrides = [a for a in argv if not a.lstrip("+~").startswith("hydra")]
    try:
        compose(overrides)
    except (HydraException, OmegaConfBaseException) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        if "Available options in" in str(e):  # a missing option: name the options in one line
            head = lines[0]
            opts = [ln for ln in lines[lines.index(next(x for x in lines if x.startswith("Available options"))) + 1:]
                    if not ln.startswith(("Config search path", "provider=", "Set the environment"))]
            return f"error: {head} (options: {', '.join(opts)})"
        keep = [ln for ln in lines if not ln.startswith(("Set the environment", "object_type=", "full_key:"))]
        return "error: " + "; ".join(ln.rstrip(".") for ln in keep)
    return None


def main() -> float | None:
    """The command line: check the launcher's plugin and that the overrides compose, then run
    under Hydra."""
    msg = missing_launcher(sys.argv[1:]) or composition_error(sys.argv[1:])
    if msg is not None:
        print(msg, file=sys.stderr)
        sys.exit(1)
    return _run()


if __name__ == "__main__":
    main()
