"""The fuzz suite: malformed trace files for every loader, invalid values for every config key.

``FUZZ_EXAMPLES`` (default 20) sets the hypothesis examples per test; a big run is
``FUZZ_EXAMPLES=2000 pytest tests/fuzz`` or ``python benchmarks/fuzz_inputs.py``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cases.py, shared with benchmarks/fuzz_inputs.py
