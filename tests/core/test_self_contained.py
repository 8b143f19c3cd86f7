"""The repository stands on its own: no code, config or document points at papers outside it
(a design document kept elsewhere, a tracker's issue numbers)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("llmos_sim", "backends", "configs", "docs", "benchmarks", "tests", "tools", "experiments", "notebooks")
SUFFIXES = {".py", ".yaml", ".md", ".sh", ".toml", ".txt", ".ipynb"}
# spelled in pieces so this file does not match itself
OUTSIDE = re.compile(r"\.\./" + "shared|/work/" + "shared|" + "DES" + r"IGN(\.md| §)|\b[Ii]ssue ?#?[0-9]+")


def test_no_reference_to_documents_outside_the_repository():
    files = [ROOT / "README.md", ROOT / "setup.py", ROOT / "pyproject.toml"]
    for folder in FOLDERS:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in SUFFIXES and ".venv" not in p.parts]
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()[:80]}" for p in files if p.is_file()
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert hits == []
