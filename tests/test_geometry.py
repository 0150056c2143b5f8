"""Geometry: built-ins against the official binning files, XML round trips, indexing and coordinates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calogen.geometry import BUILTIN_GEOMETRIES, Geometry, GeometryError, Layer

EXPECTED_VOXELS = {"ds1-photons": 368, "ds1-pions": 533, "ds2": 6480, "ds3": 40500}


@pytest.mark.parametrize("name", sorted(EXPECTED_VOXELS))
def test_builtin_matches_official_binning(name, official_binning):
    path, particle = official_binning(name)
    official = Geometry.from_xml(path, particle=particle)
    ours = Geometry.builtin(name)
    assert ours.n_voxels == official.n_voxels == EXPECTED_VOXELS[name]
    assert ours.particle == official.particle and ours.pid == official.pid
    assert [(lay.r_edges, lay.n_alpha) for lay in ours.layers] == [(lay.r_edges, lay.n_alpha) for lay in official.layers]
    np.testing.assert_array_equal(ours.layer_offsets, official.layer_offsets)


@pytest.mark.parametrize("name", BUILTIN_GEOMETRIES)
def test_xml_round_trip(name, tmp_path):
    geometry = Geometry.builtin(name)
    path = tmp_path / f"{name}.xml"
    geometry.to_xml(path)
    z_ranges = [layer.z_range for layer in geometry.layers]
    again = Geometry.from_xml(path, name=name, z_ranges=z_ranges, threshold=geometry.threshold)
    assert again == geometry
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.xml"]


@pytest.mark.parametrize("name", sorted(EXPECTED_VOXELS))
def test_official_file_round_trip(name, official_binning, tmp_path):
    path, particle = official_binning(name)
    official = Geometry.from_xml(path, particle=particle)
    official.to_xml(tmp_path / "b.xml")
    assert Geometry.from_xml(tmp_path / "b.xml", name=official.name) == official


def test_voxel_index_order_and_coordinates():
    g = Geometry.builtin("ds2")
    assert g.shape == (45, 16, 9)
    # index = layer offset + alpha * n_r + r
    assert g.voxel_index(2, 3, 4) == 2 * 144 + 3 * 9 + 4
    v = g.voxel_index(2, 3, 4)
    assert g.voxel_layer[v] == 2
    assert g.voxel_r[v] == pytest.approx(4.5 * 4.65)
    alpha = -math.pi + (3 + 0.5) * 2 * math.pi / 16
    assert g.voxel_alpha[v] == pytest.approx(alpha)
    assert g.voxel_eta[v] == pytest.approx(4.5 * 4.65 * math.cos(alpha))
    assert g.voxel_phi[v] == pytest.approx(4.5 * 4.65 * math.sin(alpha))
    assert g.voxel_alpha[g.voxel_index(0, 0, 0)] == pytest.approx(-math.pi + math.pi / 16)


def test_irregular_geometry_layers_and_offsets():
    g = Geometry.builtin("ds1-photons")
    assert not g.is_regular
    assert g.nonempty_layers == (0, 1, 2, 3, 12)
    assert g.alpha_binned_layers == (1, 2)
    assert list(np.diff(g.layer_offsets)[list(g.nonempty_layers)]) == [8, 160, 190, 5, 5]
    single_alpha = g.layer_slice(0)
    np.testing.assert_allclose(g.voxel_alpha[single_alpha], 0.0)
    np.testing.assert_allclose(g.voxel_phi[single_alpha], 0.0, atol=1e-12)
    with pytest.raises(GeometryError, match="irregular"):
        g.reshape(np.zeros((1, g.n_voxels)))


def test_reshape_and_layer_energies():
    g = Geometry.builtin("tiny")
    showers = np.arange(2 * g.n_voxels, dtype=np.float32).reshape(2, -1)
    grid = g.reshape(showers)
    assert grid.shape == (2, 5, 6, 4)
    assert grid[1, 2, 3, 1] == showers[1, g.voxel_index(2, 3, 1)]
    np.testing.assert_allclose(g.layer_energies(showers), grid.sum(axis=(2, 3)))
    assert g.voxel_area.sum() == pytest.approx(5 * math.pi * 32.0**2)


def test_bad_definitions_are_clear_errors(tmp_path):
    with pytest.raises(GeometryError, match="unknown geometry 'ds9'"):
        Geometry.builtin("ds9")
    with pytest.raises(GeometryError, match="increasing"):
        Layer((0.0, 2.0, 1.0), 1, (0.0, 1.0))
    with pytest.raises(GeometryError, match="does not exist"):
        Geometry.from_xml(tmp_path / "missing.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<Bins><Bin name='x'><Layer id='0' r_edges='0,a' n_bin_alpha='1'/></Bin></Bins>")
    with pytest.raises(GeometryError, match="malformed"):
        Geometry.from_xml(bad)
    bad.write_text("<Bins")
    with pytest.raises(GeometryError, match="not valid XML"):
        Geometry.from_xml(bad)


def test_resolve_accepts_names_paths_and_geometries(official_binning):
    g = Geometry.builtin("ds2")
    assert Geometry.resolve(g) is g
    assert Geometry.resolve("ds2") == g
    path, _ = official_binning("ds2")
    assert Geometry.resolve(path).n_voxels == 6480
