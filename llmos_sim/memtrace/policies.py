"""Build pools from ``configs/memory/NAME.yaml`` exactly as the engine does (Hydra partial)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf

from llmos_sim.policies.memory.base import MemoryPool

#: the config group folder (repo layout: configs/ next to llmos_sim/)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "memory"


def _config_dir() -> Path:
    if CONFIG_DIR.is_dir():
        return CONFIG_DIR
    from importlib.resources import files  # installed layout: llmos_sim.configs

    return Path(str(files("llmos_sim.configs") / "memory"))


def policy_names() -> list[str]:
    """Names of the simulated pool policies in the config group: YAMLs whose ``_target_`` is
    a class in :mod:`llmos_sim.policies.memory` (backend-specific entries such as a real
    torch allocator are left out: they need their backend and cannot replay offline)."""
    names = []
    for p in sorted(_config_dir().glob("*.yaml")):
        target = str(OmegaConf.load(p).get("_target_", ""))
        if target.startswith("llmos_sim.policies.memory."):
            names.append(p.stem)
    return names


POLICY_NAMES: tuple[str, ...] = tuple(policy_names())


def make_pool(name: str, capacity_bytes: int, **overrides: Any) -> MemoryPool:
    """Instantiate ``configs/memory/<name>.yaml`` (with ``overrides``) for one device."""
    cfg = OmegaConf.load(_config_dir() / f"{name}.yaml")
    for k, v in overrides.items():
        cfg[k] = v
    return instantiate(cfg)(capacity_bytes=capacity_bytes)
