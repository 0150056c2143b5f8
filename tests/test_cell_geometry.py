"""Cell geometries: lattice, O(1) hexagon lookup, JSON round trip, validation, resolution by name."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from calogen.cell_geometry import CellGeometry, CellLayer, cell_voxel, hexagonal_layer
from calogen.cli import main
from calogen.geometry import Geometry, GeometryError, resolve_geometry

PITCH = 12.0


def lookup(geometry: CellGeometry, row: int, x: float, y: float) -> int:
    t = geometry.lookup_tables()
    return int(cell_voxel(t.pitch, t.table, t.half, row, x, y))


def test_builtins_have_the_contract_sizes() -> None:
    g = CellGeometry.builtin("hgcal-like")
    assert (g.kind, g.n_layers, g.max_cells, g.n_voxels) == ("cells", 26, 331, 8606)
    assert g.layers[3].z_range == pytest.approx((23.4, 31.2))
    assert g.layer_offsets[-1] == 8606 and g.layer_offsets.dtype == np.int64
    assert g.cell_area == pytest.approx(np.full(8606, math.sqrt(3) / 2 * PITCH**2))
    assert np.bincount(g.voxel_layer).tolist() == [331] * 26
    tiny = CellGeometry.builtin("tiny-hex")
    assert (tiny.n_layers, tiny.max_cells) == (3, 19)
    assert tiny.layers[0].ring.tolist() == [0] + [1] * 6 + [2] * 12


def test_rings_are_ordered_counterclockwise_from_x() -> None:
    layer = hexagonal_layer(2, PITCH, (0.0, 1.0))
    ring1 = np.degrees(np.arctan2(layer.y[1:7], layer.x[1:7]))
    assert ring1 == pytest.approx([30, 90, 150, -150, -90, -30])
    assert np.hypot(layer.x[1:7], layer.y[1:7]) == pytest.approx(np.full(6, PITCH))


def test_every_cell_centre_maps_to_itself() -> None:
    g = CellGeometry.builtin("hgcal-like")
    found = [lookup(g, layer, x, y) for layer in (0, 25) for x, y in zip(g.layers[layer].x, g.layers[layer].y, strict=True)]
    expected = np.concatenate([g.layer_offsets[0] + np.arange(331), g.layer_offsets[25] + np.arange(331)])
    assert found == expected.tolist()


@pytest.mark.parametrize("angle", [30.0, 90.0, 210.0, 330.0])
def test_points_either_side_of_a_hexagon_edge(angle: float) -> None:
    g = CellGeometry.builtin("tiny-hex")
    layer = g.layers[1]
    neighbour = int(np.argmin(np.hypot(layer.x - PITCH * np.cos(np.radians(angle)), layer.y - PITCH * np.sin(np.radians(angle)))))
    normal = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
    along = np.array([-normal[1], normal[0]])
    for t in (-0.4, 0.0, 0.4):  # along the edge, short of its ends (half length p / (2 sqrt 3) = 0.289 p)
        point = normal * PITCH / 2 + along * t * PITCH / math.sqrt(3) * 0.7
        assert lookup(g, 1, *(point - 1e-6 * normal)) == g.layer_offsets[1]
        assert lookup(g, 1, *(point + 1e-6 * normal)) == g.layer_offsets[1] + neighbour


def test_outside_the_last_ring_is_minus_one() -> None:
    g = CellGeometry.builtin("tiny-hex")
    ring3 = hexagonal_layer(3, PITCH, (0.0, 1.0))
    outer = ring3.ring == 3
    assert [lookup(g, 0, x, y) for x, y in zip(ring3.x[outer], ring3.y[outer], strict=True)] == [-1] * 18
    assert lookup(g, 2, 1e4, -3e3) == -1
    top = int(np.flatnonzero((g.layers[2].x == 0.0) & np.isclose(g.layers[2].y, 2 * PITCH))[0])
    assert lookup(g, 2, 0.0, 2.49 * PITCH) == g.layer_offsets[2] + top  # ring 2's top cell ends at its flat edge, 2.5 p
    assert lookup(g, 2, 0.0, 2.51 * PITCH) == -1


def test_random_points_map_to_the_nearest_centre() -> None:
    g = CellGeometry.builtin("hgcal-like")
    wide = hexagonal_layer(12, PITCH, (0.0, 1.0))
    rng = np.random.default_rng(3)
    points = rng.uniform(-12 * PITCH, 12 * PITCH, size=(3000, 2))
    nearest = np.argmin(np.hypot(points[:, :1] - wide.x, points[:, 1:] - wide.y), axis=1)
    expected = np.where(wide.ring[nearest] <= 10, 0, -1)
    inside = expected == 0
    expected[inside] = [
        int(np.flatnonzero((g.layers[7].x == wide.x[k]) & (g.layers[7].y == wide.y[k]))[0]) + int(g.layer_offsets[7])
        for k in nearest[inside]
    ]
    found = [lookup(g, 7, x, y) for x, y in points]
    assert found == expected.tolist()
    assert inside.sum() > 1000 and (~inside).sum() > 100


def test_json_round_trip(tmp_path) -> None:
    g = CellGeometry.builtin("tiny-hex")
    irregular = CellLayer([0.0, 9.5], [0.0, 1.0], [1, 2], [0, 1], 0.0, (30.0, 31.5), [8.0, 8.0])
    g = CellGeometry("mixed", (*g.layers, irregular), threshold=0.25)
    path = tmp_path / "g.json"
    g.to_json(path)
    back = CellGeometry.from_json(path)
    assert (back.name, back.n_voxels, back.threshold) == ("mixed", g.n_voxels, 0.25)
    for a, b in zip(g.layers, back.layers, strict=True):
        assert a.to_dict() == b.to_dict()
    assert np.array_equal(back.cell_area, g.cell_area)
    assert resolve_geometry(path).n_voxels == 59
    with pytest.raises(GeometryError, match="layer 3 is not a hexagonal lattice"):
        back.lookup_tables()


def _layer(**changes: object) -> dict[str, object]:
    data = hexagonal_layer(1, PITCH, (0.0, 7.8)).to_dict()
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"y": [0.0] * 6}, "every per-cell list needs 7"),
        ({"x": [0.0, 12.0, 6.0, -6.0, -12.0, -6.0, 6.0]}, "not on the hexagonal lattice"),
        ({"ring": [0, 1, 1, 1, 1, 1, 2]}, "lists ring 2"),
        ({"pitch": 0.0}, "needs per-cell widths"),
        ({"pitch": -1.0}, "pitch must be"),
        ({"z_range": [5.0, 5.0]}, "z_min < z_max"),
        ({"x": ["a"] * 7}, "must be numbers"),
        ({"colour": "red"}, "unknown \\['colour'\\]"),
    ],
)
def test_bad_layers_are_refused(changes: dict[str, object], message: str) -> None:
    data = {"format": "calogen-cell-geometry", "version": 1, "name": "bad", "layers": [_layer(**changes)]}
    with pytest.raises(GeometryError, match=message):
        CellGeometry.from_dict(data)


def test_duplicate_cells_and_overlapping_layers_are_refused(tmp_path) -> None:
    with pytest.raises(GeometryError, match="share one hexagon"):
        CellLayer([0.0, 0.0], [0.0, 0.0], [0, 0], [0, 0], PITCH, (0.0, 1.0))
    overlapping = CellGeometry("o", (hexagonal_layer(1, PITCH, (0.0, 8.0)), hexagonal_layer(1, PITCH, (7.0, 9.0))))
    with pytest.raises(GeometryError, match="layer 1 starts at z = 7 mm, inside layer 0"):
        overlapping.lookup_tables()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(GeometryError, match="not a calogen cell geometry"):
        CellGeometry.from_json(bad)
    bad.write_text(json.dumps({**CellGeometry.builtin("tiny-hex").to_dict(), "threshold": -1.0}))
    with pytest.raises(GeometryError, match="threshold must be a finite energy >= 0 MeV, got -1.0"):
        CellGeometry.from_json(bad)
    bad.write_text("{")
    with pytest.raises(GeometryError, match="not a readable JSON"):
        CellGeometry.from_json(bad)


def test_layer_energies_and_shapes() -> None:
    g = CellGeometry.builtin("tiny-hex")
    showers = np.arange(2 * 57, dtype=np.float32).reshape(2, 57)
    assert g.layer_energies(showers)[1].tolist() == [sum(range(57, 76)), sum(range(76, 95)), sum(range(95, 114))]
    with pytest.raises(GeometryError, match=r"expected \(N, 57\)"):
        g.layer_energies(showers[:, :50])


def test_resolution_by_name_and_kinds() -> None:
    assert resolve_geometry("hgcal-like").kind == "cells"
    assert resolve_geometry("ds2").kind == "cylindrical" == Geometry.builtin("tiny").kind
    with pytest.raises(GeometryError, match="cell geometry; this command supports cylindrical geometries only"):
        Geometry.resolve("tiny-hex")
    with pytest.raises(GeometryError, match="'hgcal-like', 'tiny-hex'"):
        resolve_geometry("nope")


def test_cli_show(capsys) -> None:
    assert main(["geometry", "show", "hgcal-like"]) == 0
    assert "kind cells, 26 layers, 8606 voxels" in capsys.readouterr().out
    assert main(["geometry", "show", "nope"]) == 2
    assert "unknown geometry 'nope'" in capsys.readouterr().err


# --- challenge features -------------------------------------------------------------------------
def _reference_features(energies: np.ndarray, showers: np.ndarray, g: CellGeometry, threshold: float) -> dict[str, np.ndarray]:
    """The challenge's definitions written out on the padded (N, L, cells) layout with masked arrays."""
    from calogen.hgcal_format import pad_showers

    cut = np.where(showers < threshold, 0.0, showers)
    padded = pad_showers(cut, g)
    x, y = pad_showers(g.cell_x[None], g)[0], pad_showers(g.cell_y[None], g)[0]
    e = padded.sum(axis=2)
    out = {"e_ratio": padded.sum(axis=(1, 2)) / energies, "occupancy": (padded > 0).sum(axis=2)}
    for name, c in (("x", x), ("y", y)):
        mean = np.ma.divide((padded * c).sum(axis=2), e).filled(0)
        mean2 = np.ma.divide((padded * c**2).sum(axis=2), e).filled(0)
        out[f"{name}_centre"], out[f"{name}_width"] = mean, np.ma.sqrt(mean2 - mean**2).filled(0)
    return out


def test_cell_features_follow_the_challenge_definitions(tmp_path) -> None:
    from calogen.cell_features import (
        cell_features_from_file,
        challenge_column_names,
        challenge_vector,
        compute_cell_features,
    )
    from calogen.io import write_showers

    g = CellGeometry.builtin("tiny-hex")
    rng = np.random.default_rng(5)
    showers = (rng.exponential(2.0, (50, g.n_voxels)) * (rng.random((50, g.n_voxels)) < 0.3)).astype(np.float32)
    showers[7, g.layer_slice(1)] = 0.0  # a layer without energy: centre and width 0
    energies = rng.uniform(50, 100, 50)
    f = compute_cell_features(energies, showers, g, threshold=0.5, chunk_size=7)
    ref = _reference_features(energies, showers.astype(np.float64), g, 0.5)
    for name, values in ref.items():
        assert getattr(f, name) == pytest.approx(values, rel=1e-9, abs=1e-9), name
    assert f.x_centre[7, 1] == 0.0 and f.y_width[7, 1] == 0.0 and f.occupancy[7, 1] == 0
    assert f.e_layer.sum(axis=1) == pytest.approx(f.e_total)
    vector = challenge_vector(f)
    names = challenge_column_names(g)
    assert vector.shape == (50, 2 + 5 * 3) == (50, len(names)) and names[2] == "x_centre_0" and names[-1] == "occupancy_2"
    assert vector[:, names.index("y_width_2")] == pytest.approx(f.y_width[:, 2])
    assert len(f.table()) == 3 + 6 * 3
    write_showers(tmp_path / "s.h5", energies, showers)
    streamed = cell_features_from_file(tmp_path / "s.h5", g, threshold=0.5, chunk_size=11)
    assert np.allclose(challenge_vector(streamed), vector, rtol=1e-6)
    assert streamed.mean_shower == pytest.approx(f.mean_shower)
    thresholded = CellGeometry("t", g.layers, threshold=0.5)
    assert np.array_equal(challenge_vector(compute_cell_features(energies, showers, thresholded)), vector)
