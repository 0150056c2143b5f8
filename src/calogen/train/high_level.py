"""The official high-level vector as a differentiable torch function of the voxels.

:func:`calogen.features.high_level_vector` is the classifier and FPD input of the evaluation (362 columns on
DS2), computed in numpy. :class:`HighLevelVector` computes the same columns, in the same order and units, from
a batch of showers with torch operations, so that a loss on them reaches the generator: voxels below the
threshold are zeroed, per-layer energies and the energy-weighted first and second moments of the voxel
centres (``eta = r cos alpha``, ``phi = r sin alpha``, ``r``) give centres and widths. Sparsity (the fraction of
zero voxels) is a count and carries no gradient. In float32 the columns match the numpy vector to about
1e-4 (its moments are float64); widths get ``1e-12 mm^2`` under the square root so that an empty or
one-voxel layer has a finite gradient.

Example:
    >>> import numpy as np
    >>> from calogen.geometry import Geometry
    >>> vector = HighLevelVector(Geometry.builtin("tiny"))
    >>> vector(torch.full((2, 1), 1e3), torch.ones(2, 120)).shape
    torch.Size([2, 42])
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from calogen.errors import CalogenError
from calogen.features import high_level_blocks
from calogen.geometry import Geometry

__all__ = ["HighLevelVector"]

_WIDTH_FLOOR = 1e-12
"""mm^2 added to a variance before its square root (a width of 1e-6 mm at worst)."""


class HighLevelVector(nn.Module):
    """``forward(energies (B, 1) or (B,) MeV, showers (B, voxels) MeV) -> (B, d)``: the official vector.

    Args:
        geometry: a cylindrical readout (cell geometries have their own features).
        columns: ``"official"`` or ``"pre-2023"``, as :func:`calogen.features.high_level_vector`.
    """

    def __init__(self, geometry: Geometry, columns: str = "official") -> None:
        super().__init__()
        if geometry.kind != "cylindrical":
            raise CalogenError(f"the high-level vector is defined for cylindrical readouts, not a {geometry.kind} geometry")
        self.blocks = high_level_blocks(geometry, columns)
        self.n_layers, self.threshold = geometry.n_layers, float(geometry.threshold)
        sizes = np.diff(geometry.layer_offsets)
        layer_of = np.repeat(np.arange(geometry.n_layers), sizes)
        self.register_buffer("layer_of", torch.from_numpy(layer_of.astype(np.int64)), persistent=False)
        self.register_buffer("layer_size", torch.from_numpy(sizes.astype(np.float32)), persistent=False)
        coords = np.stack([geometry.voxel_eta, geometry.voxel_phi, geometry.voxel_r]).astype(np.float32)
        self.register_buffer("coords", torch.from_numpy(coords), persistent=False)

    def _layer_sums(self, values: torch.Tensor) -> torch.Tensor:
        """``(B, voxels) -> (B, layers)`` sums."""
        return values.new_zeros(values.shape[0], self.n_layers).index_add_(1, self.layer_of, values)

    def forward(self, energies: torch.Tensor, showers: torch.Tensor) -> torch.Tensor:
        x = torch.where(showers < self.threshold, torch.zeros_like(showers), showers)
        e_layer = self._layer_sums(x)
        denominator = e_layer + 1e-16
        moments = {}
        for axis, coord in zip(("eta", "phi", "r"), self.coords, strict=True):
            centre = self._layer_sums(x * coord) / denominator
            second = self._layer_sums(x * coord * coord) / denominator
            moments[f"{axis}_centre"] = centre / 1e2
            moments[f"{axis}_width"] = torch.sqrt((second - centre**2).clamp(min=0) + _WIDTH_FLOOR) / 1e2
        columns = {
            "log10_e_inc": torch.log10(energies.reshape(-1, 1)),
            "log10_e_layer": torch.log10(e_layer + 1e-8),
            "log10_e_total": torch.log10(e_layer.sum(1, keepdim=True) + 1e-8),
            "sparsity": 1 - self._layer_sums((x > 0).to(x.dtype)).detach() / self.layer_size,
            **moments,
        }
        return torch.cat([columns[name] if layers is None else columns[name][:, list(layers)] for name, layers in self.blocks], dim=1)
