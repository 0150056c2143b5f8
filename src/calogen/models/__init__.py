"""Generative models: preprocessing, networks, objectives, samplers and the loaded-model Generator.

``calogen.models.load(path)`` opens a model directory; heavy modules (torch) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calogen.models.generator import FlowModel

__all__ = ["load"]


def load(path: Any, *, weights: str = "ema", **limits: int | None) -> FlowModel:
    """Load a trained model directory as a Generator; see :func:`calogen.models.generator.load` (``limits``:
    ``max_parameters``, ``max_voxels``)."""
    from calogen.models.generator import load as _load

    return _load(path, weights=weights, **limits)
