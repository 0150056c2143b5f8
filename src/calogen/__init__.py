"""calogen: fast, faithful calorimeter-shower simulation with generative machine learning.

``calogen.load(model_dir)`` loads a trained model as a Generator; everything else lives in submodules
(``calogen.geometry``, ``calogen.io``, ``calogen.sim``, ``calogen.eval`` ...), imported on demand so that
``import calogen`` stays fast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load"]


def __getattr__(name: str) -> Any:
    if name == "load":
        from calogen.models import load

        return load
    raise AttributeError(f"module 'calogen' has no attribute {name!r}")
