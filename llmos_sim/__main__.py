"""``python -m llmos_sim [overrides]``: compose the configs, run, write results. Nothing else.

``python -m llmos_sim --help`` lists the config groups; ``python -m llmos_sim.compare`` merges a
sweep. Re-running a sweep into the same ``hydra.sweep.dir`` resumes it: a run whose folder
holds a completion marker (``complete.json``) for the same resolved config, package version,
source and input files is skipped (its saved objective is returned); any other is run again,
saying why; ``output.resume=false`` forces it. The run holds the folder's lock throughout.
"""
from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from llmos_sim.outputs import check_run_name, output_lock, resume_check
from llmos_sim.run import run_config, summary_frame, write_results


def _objective(cfg: DictConfig, summary: dict) -> float | None:
    metric = summary.get(str(cfg.output.get("objective", "jct_s_avg")))
    return float(metric) if isinstance(metric, (int, float)) else None


@hydra.main(version_base="1.3", config_path="pkg://llmos_sim.configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one configuration into Hydra's output folder and print its summary."""
    hc = HydraConfig.get()
    out = hc.runtime.output_dir
    check_run_name(cfg.name)
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
    print(f"# {cfg.name}: results in {out}")
    print(summary_frame(result.summary))
    return _objective(cfg, result.summary)


if __name__ == "__main__":
    main()
