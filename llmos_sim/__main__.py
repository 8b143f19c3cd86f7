"""``python -m llmos_sim [overrides]``: compose the configs, run, write results. Nothing else."""
from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from llmos_sim.run import run_config, summary_frame, write_results


@hydra.main(version_base="1.3", config_path="pkg://llmos_sim.configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Run one configuration into Hydra's output folder and print its summary."""
    out = HydraConfig.get().runtime.output_dir
    result = run_config(cfg, progress=bool(cfg.output.progress))
    write_results(result, out, plots=bool(cfg.output.plots))
    print(f"# {cfg.name}: results in {out}")
    print(summary_frame(result.summary))
    metric = result.summary.get(str(cfg.output.get("objective", "jct_s_avg")))
    return float(metric) if isinstance(metric, (int, float)) else None


if __name__ == "__main__":
    main()
