"""The registry of simulation engines: a name, a geometry and a particle in, a shower simulator out.

An engine is any object with ``simulate(energies, *, seed, first_index=0)`` returning showers
``(N, geometry.n_voxels)`` MeV (or an object with a ``showers`` attribute), where shower ``i`` is
seeded from ``derive_seed(seed, first_index + i)`` so that any split of a run gives the same bits.

Engines are described by a picklable :class:`EngineSpec` (registry target, geometry, particle,
options) and built with :meth:`EngineSpec.build`, so a worker process can build its own copy without
sharing the parent's registry. Engine modules are imported lazily: importing this module is cheap and
does not import numba, which lets :func:`configure_numba_cache` run first.

Example:
    >>> spec = engine_spec("gflash", "tiny", "electron")
    >>> spec.name, spec.geometry.name, spec.particle
    ('gflash', 'tiny', 'e-')
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calogen.errors import CalogenError
from calogen.geometry import Geometry, resolve_geometry

if TYPE_CHECKING:
    from calogen.cell_geometry import CellGeometry

__all__ = [
    "COMPILED_MODULES",
    "ENGINES",
    "PARTICLES",
    "EngineError",
    "EngineSpec",
    "canonical_particle",
    "configure_numba_cache",
    "engine_spec",
    "make_engine",
    "numba_source_hash",
    "register_engine",
]

PARTICLES: dict[str, str] = {
    "e-": "e-", "electron": "e-",
    "e+": "e+", "positron": "e+",
    "gamma": "gamma", "photon": "gamma",
}  # fmt: skip
"""Accepted particle names (lower case) and the canonical name the engines receive."""

ENGINES: dict[str, str] = {
    "full": "calogen.sim.full:FullSimulation",
    "gflash": "calogen.sim.gflash:GflashSimulation",
}
"""Engine name -> ``module:attribute`` of its factory ``(geometry, particle=..., **options) -> engine``."""


class EngineError(CalogenError):
    """An unknown engine or particle, or an engine that cannot be built."""


def canonical_particle(name: str) -> str:
    """The canonical particle name (``e-``, ``e+`` or ``gamma``) for ``name`` or one of its aliases."""
    try:
        return PARTICLES[name.strip().lower()]
    except KeyError:
        raise EngineError(
            f"unknown particle {name!r}; choose one of e-, e+, gamma (or electron, positron, photon)"
        ) from None


def register_engine(name: str, target: str) -> None:
    """Make ``target`` (``"module:attribute"``, a factory importable in any process) available as ``name``."""
    module, _, attribute = target.partition(":")
    if not module or not attribute:
        raise EngineError(f"engine target {target!r} must read 'module:attribute'")
    ENGINES[name] = target


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: dataclasses become dicts, arrays lists, paths strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise EngineError(f"engine option of type {type(value).__name__} cannot be recorded; pass plain values or a dataclass")


@dataclass(frozen=True)
class EngineSpec:
    """A picklable recipe for an engine.

    Args:
        name: registry name (``full``, ``gflash``, ...).
        target: ``module:attribute`` of the factory.
        geometry: readout geometry (cylindrical or cells).
        particle: canonical particle name (``e-``, ``e+``, ``gamma``).
        options: keyword arguments for the factory (e.g. ``config=``, ``params=`` or ``incidence=``).
    """

    name: str
    target: str
    geometry: Geometry | CellGeometry
    particle: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        """Import the factory and build the engine."""
        module_name, _, attribute = self.target.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise EngineError(f"engine {self.name!r} is not available ({self.target}: {exc})") from None
        return factory(self.geometry, particle=self.particle, **self.options)

    def describe(self) -> dict[str, Any]:
        """The recipe as plain JSON values; equal descriptions give identical showers for the same seed."""
        return {
            "engine": self.name,
            "target": self.target,
            "options": _jsonable(self.options),
            "geometry": self.geometry.name,
            "geometry_sha256": hashlib.sha256(repr(self.geometry).encode()).hexdigest(),
            "particle": self.particle,
        }

    def options_json(self) -> str:
        """The options as a compact, key-sorted JSON string."""
        return json.dumps(_jsonable(self.options), sort_keys=True, separators=(",", ":"))


def engine_spec(
    name: str, geometry: str | os.PathLike[str] | Geometry | CellGeometry, particle: str, **options: Any
) -> EngineSpec:
    """Validate an engine request and return its :class:`EngineSpec`.

    Args:
        name: a key of :data:`ENGINES`.
        geometry: a built-in geometry name, a binning XML path, a cell-geometry JSON or a geometry.
        particle: a key of :data:`PARTICLES`.
        options: passed to the engine factory.
    """
    if name not in ENGINES:
        raise EngineError(f"unknown engine {name!r}; choose one of {sorted(ENGINES)}")
    geometry, particle = resolve_geometry(geometry), canonical_particle(particle)
    options = dict(options)
    if name == "gflash" and "params" not in options:  # the default set is part of the recipe: resume and merge compare it
        from calogen.sim.gflash_params import default_parameters

        options["params"] = default_parameters(geometry.kind, particle)
    spec = EngineSpec(name, ENGINES[name], geometry, particle, options)
    _jsonable(spec.options)
    return spec


def make_engine(name: str, geometry: str | os.PathLike[str] | Geometry | CellGeometry, particle: str, **options: Any) -> Any:
    """Build engine ``name`` for ``geometry`` and ``particle`` (see :func:`engine_spec`)."""
    return engine_spec(name, geometry, particle, **options).build()


COMPILED_MODULES = ("_pairwise.py", "cell_geometry.py", "voxel_spectrum.py")
"""Modules outside ``calogen/sim`` that hold numba-compiled functions (relative to the package)."""


def numba_source_hash() -> str:
    """Short hash (12 hex digits) of the calogen version and the sources of its compiled code.

    Covers ``calogen/sim/**/*.py`` and the other modules with compiled code (:data:`COMPILED_MODULES`), names and
    bytes, so editing any module that compiled code calls gives a new value (numba itself only notices edits to
    the file of the function it caches, not to the functions that function calls).
    """
    try:
        version = importlib.metadata.version("calogen")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(version.encode())
    for path in sorted((package / "sim").rglob("*.py")) + [package / name for name in COMPILED_MODULES]:
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def configure_numba_cache() -> Path:
    """Point numba's on-disk cache at a writable directory before numba is imported; returns it.

    An explicitly set ``NUMBA_CACHE_DIR`` is used as is: whoever sets it clears it when the code changes.
    Otherwise the cache lives in ``$XDG_CACHE_HOME/calogen/numba/<hash>`` (default
    ``~/.cache/calogen/numba/<hash>``), or in a per-user directory under the system temp dir when that
    cannot be created, where ``<hash>`` is :func:`numba_source_hash`: a changed calogen gets a fresh cache,
    so a stale compiled function can never be loaded. Child processes inherit the setting through the
    environment.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    tag = numba_source_hash()
    candidates = [base / "calogen" / "numba" / tag, Path(tempfile.gettempdir()) / f"calogen-numba-{os.getuid()}" / tag]
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            os.environ["NUMBA_CACHE_DIR"] = str(path)
            return path
    raise EngineError(f"no writable numba cache directory among {[str(p) for p in candidates]}; set NUMBA_CACHE_DIR")
