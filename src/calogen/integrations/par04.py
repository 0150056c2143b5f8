"""Geant4 Par04 conventions: the inference input vector and the cell order, and calogen's order beside them.

Par04 (``examples/extended/parameterisations/Par04`` in Geant4) asks its model for the cells of a
cylindrical mesh around the shower axis and flattens them with the radial index outermost and depth
innermost::

    par04 index = (i_r * n_phi + i_phi) * n_z + i_z          (r -> phi -> z)

CaloChallenge files, and every calogen Generator, use the reverse nesting::

    calochallenge index = (i_z * n_alpha + i_alpha) * n_r + i_r   (z -> alpha -> r)

The bins themselves coincide: Par04's phi bin ``j`` is centred at ``(j + 0.5) 2 pi / n_phi - pi``, as is
calogen's alpha bin ``j``, and its cell ``(i_r, i_z)`` spans ``[i_r dr, (i_r + 1) dr) x [i_z dz, (i_z + 1) dz)``
like a calogen voxel of a regular geometry. So the two orders differ by a fixed permutation
(:func:`to_par04_order`, :func:`from_par04_order`).

Par04's VAE-type input vector (the one whose latent part Geant4 draws) is ``latent`` standard-normal
numbers followed by the condition ``[E / 1024 GeV, theta / 90 deg, 0, 1]`` (energy, polar angle of the
direction, geometry one-hot), and the model's output, multiplied by E, gives the cell energies
(:func:`vae_input`). The CaloDiT-2 type (also used by DDML's CaloDiT models) sends
``[E / GeV, phi, theta, one-hot of 5 geometries]`` (:func:`calodit_input`).

Par04's angle is the polar angle ``theta_p`` of the particle's momentum to the beam (z) axis
(``G4ThreeVector::theta()``, in ``[0, pi]``): a particle from the beam line meets the barrel's layers at normal
incidence at ``theta_p = pi/2``. calogen's direction ``(theta, phi)`` is relative to the layer normal, ``phi``
measured from the shower mesh's ``alpha = 0`` axis, which Par04 turns onto the particle's ``d/d theta_p``
direction (its rotation ``R_z(phi_p) R_y(theta_p)``). In that frame the layer normal (radial, for a particle
from the beam line) leans by ``pi/2 - theta_p`` towards ``alpha = 0``, so (:func:`layer_direction`)::

    theta = |pi/2 - theta_p|,    phi = pi if theta_p < pi/2 else 0

(unit vector ``(-cos theta_p, 0, sin theta_p)``, continuous in ``theta_p``). A direction along the beam
(``theta_p`` 0 or pi) never enters a barrel and is outside calogen's range (:func:`par04_directions` refuses it).

Example:
    >>> import numpy as np
    >>> from calogen.geometry import Geometry
    >>> g = Geometry.builtin("tiny")
    >>> x = np.arange(g.n_voxels, dtype=np.float32)[None]
    >>> np.array_equal(from_par04_order(to_par04_order(x, g), g), x)
    True
    >>> int(to_par04_order(x, g)[0, 1]) == g.voxel_index(1, 0, 0)      # second Par04 cell: next depth
    True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from calogen.errors import CalogenError
from calogen.geometry import Geometry

__all__ = [
    "CALODIT_GEOMETRIES",
    "PAR04_MAX_ANGLE_DEG",
    "PAR04_MAX_ENERGY_MEV",
    "VAE_CONDITION_SIZE",
    "calodit_input",
    "from_par04_order",
    "layer_direction",
    "par04_directions",
    "par04_permutation",
    "to_par04_order",
    "vae_input",
]

PAR04_MAX_ENERGY_MEV = 1_024_000.0
"""Par04's energy normalisation of the VAE condition (``fMaxEnergy``, 1024 GeV)."""

PAR04_MAX_ANGLE_DEG = 90.0
"""Par04's angle normalisation of the VAE condition (``fMaxAngle``)."""

VAE_CONDITION_SIZE = 4
"""Condition entries of Par04's VAE input: energy, angle and a two-entry geometry one-hot."""

CALODIT_GEOMETRIES = ("Par04SiW", "Par04SciPb", "ODD", "FCCeeCLD", "new")
"""Order of the geometry one-hot in the CaloDiT-2 input vector (the fifth slot is for an adapted detector)."""


def _mesh(geometry: Geometry) -> tuple[int, int, int]:
    if not geometry.is_regular:
        raise CalogenError(
            f"geometry {geometry.name!r} is irregular; Par04's (r, phi, z) mesh needs the same radial bins and "
            "alpha count in every layer (ds2, ds3, tiny)"
        )
    return geometry.shape


def par04_permutation(geometry: Geometry) -> np.ndarray:
    """Indices ``p`` with ``par04_cells = calochallenge_showers[..., p]``, ``(n_voxels,)`` int64."""
    n_z, n_alpha, n_r = _mesh(geometry)
    return np.arange(geometry.n_voxels, dtype=np.int64).reshape(n_z, n_alpha, n_r).transpose(2, 1, 0).reshape(-1)


def to_par04_order(showers: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Showers ``(..., voxels)`` in CaloChallenge order (z -> alpha -> r) as Par04 cells (r -> phi -> z)."""
    return np.asarray(showers)[..., par04_permutation(geometry)]


def from_par04_order(cells: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Par04 cells ``(..., voxels)`` (r -> phi -> z) in CaloChallenge order (z -> alpha -> r)."""
    return np.asarray(cells)[..., np.argsort(par04_permutation(geometry))]


def _column(values: np.ndarray | float, n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(values, dtype=np.float64).reshape(-1, 1), (n, 1))


def vae_input(energies: np.ndarray, theta: np.ndarray | float, latent: np.ndarray) -> np.ndarray:
    """Par04's VAE-type input vectors ``(N, latent + 4)`` float32.

    Args:
        energies: ``(N,)`` kinetic energies in MeV.
        theta: polar angle of the direction in radians, ``(N,)`` or one value.
        latent: ``(N, latent)`` standard-normal numbers.
    """
    e = np.asarray(energies, dtype=np.float64).reshape(-1, 1)
    n = e.shape[0]
    cond = np.concatenate(
        [e / PAR04_MAX_ENERGY_MEV, np.degrees(_column(theta, n)) / PAR04_MAX_ANGLE_DEG, np.zeros((n, 1)), np.ones((n, 1))], axis=1
    )
    return np.concatenate([np.asarray(latent, dtype=np.float64).reshape(n, -1), cond], axis=1).astype(np.float32)


def calodit_input(energies: np.ndarray, phi: np.ndarray | float, theta: np.ndarray | float, *, geometry: str = "Par04SiW") -> np.ndarray:
    """CaloDiT-2-type input vectors ``(N, 8)`` float32: ``[E / GeV, phi, theta, one-hot]`` (angles in radians)."""
    if geometry not in CALODIT_GEOMETRIES:
        raise CalogenError(f"unknown CaloDiT-2 geometry {geometry!r}; choose one of {list(CALODIT_GEOMETRIES)}")
    e = np.asarray(energies, dtype=np.float64).reshape(-1, 1)
    n = e.shape[0]
    onehot = np.zeros((n, len(CALODIT_GEOMETRIES)))
    onehot[:, CALODIT_GEOMETRIES.index(geometry)] = 1.0
    return np.concatenate([e / 1000.0, _column(phi, n), _column(theta, n), onehot], axis=1).astype(np.float32)


def layer_direction(theta: Any) -> tuple[Any, Any]:
    """calogen's ``(theta, phi)`` rad relative to the layer normal for Par04 polar angles ``theta`` rad to the beam
    axis (a numpy array or a torch tensor, unchecked; see the module docstring): ``|pi/2 - theta|`` and ``pi`` or ``0``."""
    return abs(math.pi / 2 - theta), (theta < math.pi / 2) * math.pi


def par04_directions(theta: np.ndarray | float, n: int) -> np.ndarray:
    """calogen's incident directions ``(n, 2)`` float64 ``(theta, phi)`` rad of Par04 angles ``theta`` (rad to the
    beam axis, one or ``(n,)``), by :func:`layer_direction`.

    Raises:
        CalogenError: another number of angles, or an angle not in ``0 < theta < pi`` (along the beam, or not finite).
    """
    from calogen.models.preprocess import check_directions

    t = np.asarray(theta, dtype=np.float64).reshape(-1)
    if t.size not in (1, n):
        raise CalogenError(f"need one Par04 angle or one per shower ({n}); got {t.size}")
    t = np.broadcast_to(t, (n,))
    bad = ~((t > 0) & (t < math.pi))
    if bad.any():
        i = int(np.argmax(bad))
        raise CalogenError(
            f"Par04 angle {i} (theta {t[i]:.4g} rad to the beam axis) does not enter a barrel; need 0 < theta < pi "
            "(normal incidence at pi/2)"
        )
    return check_directions(np.stack(layer_direction(t), axis=1), n)
