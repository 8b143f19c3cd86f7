"""llmos_sim: pluggable scheduling and memory-pool policies for AI/LLM compute clusters.

Run ``python -m llmos_sim experiment=quickstart``; see README.md and docs/architecture.md.
"""
__version__ = "0.1.0"
