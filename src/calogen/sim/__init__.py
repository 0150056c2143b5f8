"""Reference simulators: the detailed electromagnetic cascade (:class:`FullSimulation`) and its settings.

Attributes are imported lazily so that ``import calogen.sim`` does not compile or import numba.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["CascadeConfig", "FullSimulation", "SimulationResult"]

_LAZY = {
    "CascadeConfig": "calogen.sim.cascade",
    "FullSimulation": "calogen.sim.full",
    "SimulationResult": "calogen.sim.full",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'calogen.sim' has no attribute {name!r}")
