"""Fixtures of the workflow tests (defined in helpers.py)."""
from workflow.helpers import joblib_sweep  # noqa: F401
