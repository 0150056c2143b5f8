"""Tests of the readout: voxel lookup against a brute-force reference, table layout and scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calogen.geometry import Geometry, GeometryError, Layer
from calogen.sim.readout import ReadoutTables, layer_row, row_voxel, score_deposits, voxel_index


def _reference_voxel(geometry: Geometry, x: float, y: float, z: float) -> int:
    """Voxel of (x, y, z) by a linear scan over the layers and a sorted search of the radial edges."""
    for i, layer in enumerate(geometry.layers):
        if not layer.z_range[0] <= z < layer.z_range[1] or layer.n_r == 0:
            continue
        r = math.sqrt(x * x + y * y)
        k = int(np.searchsorted(layer.r_edges, r, side="right")) - 1
        if not 0 <= k < layer.n_r:
            return -1
        a = min(int((math.atan2(y, x) + math.pi) / (2.0 * math.pi) * layer.n_alpha), layer.n_alpha - 1)
        return geometry.voxel_index(i, a, k)
    return -1


def _points(geometry: Geometry, n: int, seed: int) -> np.ndarray:
    """``(n, 3)`` points spread over and around the readout, a third of them exactly on layer and radial edges."""
    rng = np.random.default_rng(seed)
    z_edges = np.unique([z for layer in geometry.layers for z in layer.z_range])
    r_edges = np.unique([r for layer in geometry.layers for r in layer.r_edges])
    z = rng.uniform(z_edges[0] - 5.0, z_edges[-1] + 5.0, n)
    r = np.abs(rng.normal(0.0, 0.4 * r_edges[-1], n))
    on_edge = rng.random(n) < 1 / 3
    z[on_edge] = rng.choice(z_edges, on_edge.sum())
    r[on_edge] = rng.choice(r_edges, on_edge.sum())
    phi = rng.uniform(-math.pi, math.pi, n)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


@pytest.mark.parametrize("name", ["ds2", "ds1-pions", "ds1-photons", "tiny"])
def test_voxel_index_matches_brute_force(name):
    geometry = Geometry.builtin(name)
    t = ReadoutTables.from_geometry(geometry)
    points = _points(geometry, 3000, seed=len(name))
    points[:4] = [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (1e9, 0.0, 1.0), (np.nan, 0.0, 1.0)]
    found = [voxel_index(t.z_lo, t.z_hi, t.r_edges, t.n_r, t.n_alpha, t.offsets, *p) for p in points]
    expected = [_reference_voxel(geometry, *p) for p in points]
    assert found == expected
    assert 0.3 < np.mean(np.array(found) >= 0) < 0.95  # both inside and outside points were tried


def test_tables_hold_nonempty_layers_in_depth_order():
    edges = (0.0, 1.0, 3.0)
    layers = (Layer(edges, 2, (10.0, 20.0)), Layer((0.0,), 1, (20.0, 30.0)), Layer(edges, 1, (0.0, 10.0)), Layer(edges, 4, (5.0, 5.0)))
    geometry = Geometry("shuffled", "electron", 11, layers)
    t = ReadoutTables.from_geometry(geometry)
    np.testing.assert_array_equal(t.z_lo, [0.0, 10.0])
    np.testing.assert_array_equal(t.offsets, [4, 0])
    assert t.n_voxels == geometry.n_voxels == 4 + 2 + 8
    for point in _points(geometry, 500, seed=2):
        assert voxel_index(t.z_lo, t.z_hi, t.r_edges, t.n_r, t.n_alpha, t.offsets, *point) == _reference_voxel(geometry, *point)


def test_overlapping_layers_are_rejected():
    layers = (Layer((0.0, 1.0), 1, (0.0, 10.0)), Layer((0.0, 1.0), 1, (9.0, 20.0)))
    with pytest.raises(GeometryError, match=r"layers 0 \(0.0, 10.0\) and 1 \(9.0, 20.0\) .* overlap in depth"):
        ReadoutTables.from_geometry(Geometry("overlap", "electron", 11, layers))


def test_layer_row_hint_never_changes_the_answer():
    t = ReadoutTables.from_geometry(Geometry.builtin("ds1-pions"))
    rng = np.random.default_rng(4)
    for z in rng.uniform(-10.0, 170.0, 300):
        row = layer_row(t.z_lo, t.z_hi, z)
        assert all(layer_row(t.z_lo, t.z_hi, z, hint) == row for hint in range(-1, t.z_lo.size))


def test_row_voxel_from_polar_coordinates():
    """A point at angle phi from the x axis has turn (phi / 2 pi + 1/2) mod 1; r at or beyond the last edge is outside."""
    t = ReadoutTables.from_geometry(Geometry.builtin("ds2"))
    row = layer_row(t.z_lo, t.z_hi, 5.0)
    assert row == 1
    args = (t.r_edges[row], t.n_r[row], t.n_alpha[row], t.offsets[row])
    for r, phi in [(2.0, 0.3), (20.0, 2.0), (40.0, -1.0), (0.0, -math.pi)]:
        turn = (phi / (2 * math.pi) + 0.5) % 1.0
        expected = voxel_index(t.z_lo, t.z_hi, t.r_edges, t.n_r, t.n_alpha, t.offsets, r * math.cos(phi), r * math.sin(phi), 5.0)
        assert row_voxel(*args, r, turn) == expected >= 144
    assert row_voxel(*args, t.r_edges[row, 9], 0.5) == -1


def test_score_deposits_accounts_for_every_deposit():
    geometry = Geometry.builtin("tiny")
    t = ReadoutTables.from_geometry(geometry)
    x, y, z = _points(geometry, 400, seed=5).T
    e = np.random.default_rng(6).uniform(0.5, 2.0, x.size)
    out, outside = score_deposits(t, x, y, z, e, scale=2.0)
    voxels = np.array([_reference_voxel(geometry, *p) for p in zip(x, y, z, strict=True)])
    expected = np.zeros(geometry.n_voxels)
    np.add.at(expected, voxels[voxels >= 0], 2.0 * e[voxels >= 0])
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    assert outside == pytest.approx(e[voxels < 0].sum(), rel=1e-12)


def test_score_points_matches_score_deposits_and_follows_the_trajectory():
    from calogen.sim.readout import Incidence, readout_arrays, score_points

    geometry = Geometry.builtin("ds2")
    rng = np.random.default_rng(0)
    x, y, z = rng.normal(0, 15, 3000), rng.normal(0, 15, 3000), rng.uniform(-5, 160, 3000)
    e = rng.exponential(size=3000)
    expected, outside = score_deposits(ReadoutTables.from_geometry(geometry), x, y, z, e)
    out = np.zeros(geometry.n_voxels)
    assert score_points(readout_arrays(geometry), x, y, z, e, out) == pytest.approx(outside)
    np.testing.assert_array_equal(out, expected)
    incidence = Incidence(theta=0.4, phi=1.0, entry=(5.0, -3.0))
    ro = readout_arrays(geometry, incidence)
    mid = 0.5 * (ro.z_lo + ro.z_hi)
    row = np.clip(np.searchsorted(ro.z_hi, z, side="right"), 0, mid.size - 1)
    cx, cy = incidence.crossing(mid[row])  # every point moved with its layer's centre
    moved = np.zeros(geometry.n_voxels)
    score_points(ro, x + cx, y + cy, z, e, moved)
    np.testing.assert_allclose(moved, expected, rtol=1e-9, atol=1e-9)
