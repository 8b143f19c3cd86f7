"""llmos_sim: pluggable scheduling and memory-pool policies for AI/LLM compute clusters.

Run ``python -m llmos_sim experiment=quickstart``; see README.md and docs/architecture.md.
"""
__version__ = "0.1.0"

# the optional compiled build of the hot modules (llmos_sim/compiled.py, llmos_sim/compiled_finder.py): used only when built
# and its sources are unchanged; without a build this is one failed stat
from llmos_sim import compiled_finder as _compiled  # noqa: E402

_compiled.install()
