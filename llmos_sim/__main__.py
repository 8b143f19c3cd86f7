"""``python -m llmos_sim [overrides]``: compose the configs, run, write results. Nothing else.

``python -m llmos_sim --help`` lists the config groups; ``python -m llmos_sim.compare`` merges a
sweep. Re-running a sweep into the same ``hydra.sweep.dir`` resumes it: a run whose folder
already holds ``summary.json`` (the complete marker) and a ``config.yaml`` equal to the new
resolved config is skipped (its saved objective is returned); ``output.resume=false`` forces it.

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
from omegaconf import DictConfig

from llmos_sim.run import completed_summary, run_config, summary_frame, write_results
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
    try:
        check_config(cfg)
        out = HydraConfig.get().runtime.output_dir
        if cfg.output.get("resume", True):
            done = completed_summary(cfg, out)
            if done is not None:
                print(f"# {cfg.name}: complete in {out}, skipped (output.resume=false re-runs it)")
                return _objective(cfg, done)
        result = run_config(cfg, progress=bool(cfg.output.progress))
    except Exception as e:  # noqa: BLE001 - a user's mistake becomes one line, anything else re-raises
        msg = named_error(e)
        if msg is None:
            raise
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # the other runs of the sweep still run
            raise InputFailure(f"error: {msg}") from None
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(1)
    write_results(result, out, plots=bool(cfg.output.plots), trace=bool(cfg.output.get("trace", False)))
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


def main() -> float | None:
    """The command line: check the launcher's plugin, then run under Hydra."""
    msg = missing_launcher(sys.argv[1:])
    if msg is not None:
        print(msg, file=sys.stderr)
        sys.exit(1)
    return _run()


if __name__ == "__main__":
    main()
