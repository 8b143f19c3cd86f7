"""The import hook of the optional compiled build (see :mod:`llmos_sim.compiled`): a module of
the build is imported from its extension in ``llmos_sim/_compiled/`` only when its ``.py`` still
hashes as recorded at build time; otherwise from its source, with a one-line note on stderr.
Imported by ``llmos_sim/__init__.py``; kept apart from the build tool so that
``python -m llmos_sim.compiled`` runs a module not yet imported."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader, ModuleSpec
from pathlib import Path

ENV = "LLMOS_SIM_COMPILED"
PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_DIR = PACKAGE_DIR / "_compiled"
MANIFEST = "manifest.json"


def ext_suffix() -> str:
    """This interpreter's extension-module suffix (``.cpython-311-x86_64-linux-gnu.so``)."""
    return EXTENSION_SUFFIXES[0]


def source_path(module: str, package_dir: Path = PACKAGE_DIR) -> Path:
    """The ``.py`` source of ``module`` (a dotted name under ``llmos_sim``)."""
    parts = module.split(".")
    if parts[0] != "llmos_sim" or len(parts) < 2:
        raise ValueError(f"{module!r} is not a module of llmos_sim")
    return package_dir.joinpath(*parts[1:-1], parts[-1] + ".py")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(build_dir: Path = BUILD_DIR) -> dict | None:
    """The build's manifest, or ``None`` (no build, or unreadable)."""
    try:
        return json.loads((build_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def disabled() -> bool:
    """``LLMOS_SIM_COMPILED`` says to ignore a build (``0``, ``off``, ``false``, ``no``)."""
    return os.environ.get(ENV, "").strip().lower() in ("0", "off", "false", "no")


class CompiledFinder:
    """A ``sys.meta_path`` finder: a module of the build is imported from its extension when its
    source still hashes as recorded, else (stale, or not built for this interpreter) from its
    source as usual. :attr:`state` says, per module looked up, which and why."""

    def __init__(self, manifest: dict, build_dir: Path = BUILD_DIR, package_dir: Path = PACKAGE_DIR,
                 note=None):
        self.modules: dict = dict(manifest.get("modules", {}))
        self.build_dir, self.package_dir = build_dir, package_dir
        self.state: dict[str, str] = {}
        self._note = note if note is not None else (lambda line: print(line, file=sys.stderr))

    def check(self, module: str) -> tuple[Path | None, str]:
        """``(extension path, "compiled")`` when ``module``'s build may be used, else
        ``(None, why not)``."""
        entry = self.modules.get(module)
        if entry is None:
            return None, "not built"
        ext = self.build_dir / (module + ext_suffix())
        if not ext.is_file():
            return None, f"not built for this interpreter ({ext_suffix()})"
        try:
            current = sha256_bytes(source_path(module, self.package_dir).read_bytes())
        except OSError:
            return None, "source missing"
        if current != entry.get("source_sha256"):
            return None, "stale (its source changed since the build)"
        return ext, "compiled"

    def find_spec(self, fullname: str, path=None, target=None) -> ModuleSpec | None:
        if fullname not in self.modules:
            return None
        ext, why = self.check(fullname)
        self.state[fullname] = why
        if ext is None:
            if why.startswith("stale"):
                self._note(f"llmos_sim: compiled {fullname} is {why}; using the pure-Python module "
                           "(rebuild: python -m llmos_sim.compiled build)")
            return None
        spec = ModuleSpec(fullname, ExtensionFileLoader(fullname, str(ext)), origin=str(ext))
        spec.has_location = True
        return spec

    def invalidate_caches(self) -> None:  # importlib protocol
        pass


_FINDER: CompiledFinder | None = None


def install() -> CompiledFinder | None:
    """Put the build's finder first on ``sys.meta_path`` (once), unless there is no build or
    ``LLMOS_SIM_COMPILED`` is off. Costs one failed ``stat`` when there is no build."""
    global _FINDER
    if _FINDER is not None or disabled():
        return _FINDER
    manifest = read_manifest()
    if manifest is None:
        return None
    _FINDER = CompiledFinder(manifest)
    sys.meta_path.insert(0, _FINDER)
    return _FINDER


def in_use() -> list[str]:
    """The modules of the build that this process imported compiled (sorted)."""
    out = []
    for name, mod in list(sys.modules.items()):
        spec = getattr(mod, "__spec__", None)
        if name.startswith("llmos_sim.") and spec is not None and isinstance(spec.loader, ExtensionFileLoader) \
                and Path(spec.origin or "").parent == BUILD_DIR:
            out.append(name)
    return sorted(out)
