"""``python -m llmos_sim [overrides]``: compose the configs, run, write results. Nothing else.

``python -m llmos_sim --help`` lists the config groups; ``python -m llmos_sim.compare`` merges a
sweep. Re-running a sweep into the same ``hydra.sweep.dir`` resumes it: a run whose folder
already holds ``summary.json`` (the complete marker) and a ``config.yaml`` equal to the new
resolved config is skipped (its saved objective is returned); ``output.resume=false`` forces it.
"""
from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from llmos_sim.run import completed_summary, run_config, summary_frame, write_results


def _objective(cfg: DictConfig, summary: dict) -> float | None:
    metric = summary.get(str(cfg.output.get("objective", "jct_s_avg")))
    return float(metric) if isinstance(metric, (int, float)) else None


@hydra.main(version_base="1.3", config_path="pkg://llmos_sim.configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one configuration into Hydra's output folder and print its summary."""
    out = HydraConfig.get().runtime.output_dir
    if cfg.output.get("resume", True):
        done = completed_summary(cfg, out)
        if done is not None:
            print(f"# {cfg.name}: complete in {out}, skipped (output.resume=false re-runs it)")
            return _objective(cfg, done)
    result = run_config(cfg, progress=bool(cfg.output.progress))
    write_results(result, out, plots=bool(cfg.output.plots), trace=bool(cfg.output.get("trace", False)))
    print(f"# {cfg.name}: results in {out}")
    print(summary_frame(result.summary))
    return _objective(cfg, result.summary)


if __name__ == "__main__":
    main()
