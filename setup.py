"""Package layout: ``backends/`` and ``configs/`` are top-level folders that import as
``llmos_sim.backends`` and ``llmos_sim.configs``. Metadata is in pyproject.toml."""
from setuptools import find_packages, setup


def _under(folder: str, prefix: str) -> list[str]:
    found = find_packages(where=folder)
    return [prefix] + [f"{prefix}.{p}" for p in found]


setup(
    packages=find_packages(include=["llmos_sim", "llmos_sim.*"])
    + _under("backends", "llmos_sim.backends")
    + _under("configs", "llmos_sim.configs"),
    package_dir={
        "llmos_sim": "llmos_sim",
        "llmos_sim.backends": "backends",
        "llmos_sim.configs": "configs",
    },
    # recursive globs: every config and every shipped trace (with its license text), however
    # deep (pollux/workloads/*.csv is three levels down); CI installs a built wheel to prove it
    package_data={
        "llmos_sim.configs": ["*.yaml", "**/*.yaml"],
        "llmos_sim.workload": ["data/**/*"],
        "llmos_sim.serving": ["profiles/**/*"],
    },
    include_package_data=False,
)
