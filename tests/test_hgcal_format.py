"""HGCal-challenge files: exact round trip with calogen files, disagreement with the geometry, safe geometry import."""

from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

from calogen.cell_geometry import CellGeometry
from calogen.cli import main
from calogen.hgcal_format import (
    HGCalFormatError,
    UnsafePickleError,
    calogen_to_hgcal,
    eta_to_theta,
    hgcal_to_calogen,
    load_hgcal_geometry,
    pad_showers,
    safe_unpickle,
    theta_to_eta,
    write_hgcal,
)
from calogen.io import ShowerFileError, read_showers, write_showers

TINY = CellGeometry.builtin("tiny-hex")


def challenge_file(path: Path, n: int = 40, width: int = 25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write a challenge file of float32 GeV deposits for tiny-hex; return its (showers, gen_info)."""
    rng = np.random.default_rng(seed)
    flat = (rng.exponential(1e-3, (n, TINY.n_voxels)) * (rng.random((n, TINY.n_voxels)) < 0.5)).astype(np.float32)
    gen_info = np.stack([10 ** rng.uniform(0, 3, n), rng.uniform(1.5, 3.0, n), rng.uniform(-np.pi, np.pi, n)], 1).astype(np.float32)
    showers = pad_showers(flat, TINY, width)
    write_hgcal(path, showers, gen_info)
    return showers, gen_info


def test_round_trip_gives_identical_arrays(tmp_path: Path) -> None:
    showers, gen_info = challenge_file(tmp_path / "in.h5")
    assert hgcal_to_calogen(tmp_path / "in.h5", tmp_path / "calogen.h5", TINY, chunk=16) == 40
    data = read_showers(tmp_path / "calogen.h5", TINY)  # type: ignore[arg-type]
    assert data.energies[:, 0] == pytest.approx(gen_info[:, 0] * 1000, rel=1e-6)
    assert data.showers[3, 19:38] == pytest.approx(showers[3, 1, :19] * 1000, rel=1e-6)
    assert data.directions is not None
    assert data.directions[:, 0] == pytest.approx(eta_to_theta(gen_info[:, 1]), rel=1e-6)
    calogen_to_hgcal(tmp_path / "calogen.h5", tmp_path / "back.h5", TINY, chunk=7)
    with h5py.File(tmp_path / "back.h5") as back:
        assert back["showers"].dtype == np.float32 and back["gen_info"].dtype == np.float32
        assert np.array_equal(back["showers"][:], showers) and np.array_equal(back["gen_info"][:], gen_info)


def test_cli_round_trip_and_fixed_direction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    showers, gen_info = challenge_file(tmp_path / "in.h5", width=19)
    assert main(["convert", str(tmp_path / "in.h5"), "-o", str(tmp_path / "c.h5"), "--to", "calogen", "--geometry", "tiny-hex"]) == 0
    assert main(["convert", str(tmp_path / "c.h5"), "-o", str(tmp_path / "b.h5"), "--to", "hgcal", "--geometry", "tiny-hex"]) == 0
    with h5py.File(tmp_path / "b.h5") as back:
        assert np.array_equal(back["showers"][:], showers) and np.array_equal(back["gen_info"][:], gen_info)
    write_showers(tmp_path / "plain.h5", np.full((2, 1), 5e4), np.ones((2, TINY.n_voxels)))
    args = ["convert", str(tmp_path / "plain.h5"), "-o", str(tmp_path / "p.h5"), "--to", "hgcal", "--geometry", "tiny-hex"]
    assert main(args) == 2
    assert "no incident_directions; give the primaries' --eta and --phi" in capsys.readouterr().err
    assert not (tmp_path / "p.h5").exists()
    assert main([*args, "--eta", "2.0", "--phi", "1.5708", "--cells-per-layer", "30"]) == 0
    with h5py.File(tmp_path / "p.h5") as out:
        assert out["showers"].shape == (2, 3, 30)
        assert out["gen_info"][0].tolist() == pytest.approx([50.0, 2.0, 1.5708], rel=1e-6)


def test_eta_theta_conversion() -> None:
    eta = np.array([0.0, 1.5, 2.0, 3.0])
    assert np.degrees(eta_to_theta([2.0]))[0] == pytest.approx(15.415, abs=1e-3)
    assert theta_to_eta(eta_to_theta(eta)) == pytest.approx(eta)
    assert theta_to_eta([0.0])[0] == np.inf


def test_file_and_geometry_disagree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_hgcal(tmp_path / "layers.h5", np.zeros((2, 4, 19), np.float32), np.ones((2, 3), np.float32))
    with pytest.raises(HGCalFormatError, match="4 layers but geometry 'tiny-hex' has 3"):
        hgcal_to_calogen(tmp_path / "layers.h5", tmp_path / "o.h5", TINY)
    write_hgcal(tmp_path / "narrow.h5", np.zeros((2, 3, 12), np.float32), np.ones((2, 3), np.float32))
    with pytest.raises(HGCalFormatError, match="12 cells per layer but layer 0 of geometry 'tiny-hex' has 19"):
        hgcal_to_calogen(tmp_path / "narrow.h5", tmp_path / "o.h5", TINY)
    padded = np.zeros((2, 3, 25), np.float32)
    padded[1, 2, 21] = 1e-3
    write_hgcal(tmp_path / "pad.h5", padded, np.ones((2, 3), np.float32))
    with pytest.raises(HGCalFormatError, match="shower 1 has energy in cell 21 of layer 2, but geometry 'tiny-hex' has 19"):
        hgcal_to_calogen(tmp_path / "pad.h5", tmp_path / "o.h5", TINY)
    assert main(["convert", str(tmp_path / "layers.h5"), "-o", str(tmp_path / "o.h5"), "--to", "calogen", "--geometry", "tiny-hex"]) == 2
    assert "4 layers but geometry" in capsys.readouterr().err
    assert not (tmp_path / "o.h5").exists()
    write_showers(tmp_path / "wrong.h5", np.full((2, 1), 5e4), np.ones((2, 50)))
    with pytest.raises(ShowerFileError, match="50 voxels but geometry 'tiny-hex' has 57"):
        calogen_to_hgcal(tmp_path / "wrong.h5", tmp_path / "o.h5", TINY, direction=(2.0, 0.0))
    assert main(["convert", str(tmp_path / "wrong.h5"), "-o", str(tmp_path / "o.h5"), "--to", "hgcal", "--geometry", "ds2"]) == 2
    assert "convert needs a cell geometry" in capsys.readouterr().err


def test_directions_are_optional_and_range_checked(tmp_path: Path) -> None:
    write_showers(tmp_path / "d.h5", np.full((2, 1), 1e3), np.ones((2, 57)), directions=np.array([[0.3, 1.5], [0.0, -1.0]]))
    assert read_showers(tmp_path / "d.h5").directions == pytest.approx(np.array([[0.3, 1.5], [0.0, -1.0]]))
    write_showers(tmp_path / "n.h5", np.full((2, 1), 1e3), np.ones((2, 57)))
    assert read_showers(tmp_path / "n.h5").directions is None
    with pytest.raises(ShowerFileError, match=r"row 1 holds \(theta, phi\) = \(1.6, 0\) rad"):
        write_showers(tmp_path / "x.h5", np.full((2, 1), 1e3), np.ones((2, 57)), directions=np.array([[0.3, 1.5], [1.6, 0.0]]))
    assert not (tmp_path / "x.h5").exists()


# --- geometry import ----------------------------------------------------------------------------
def _challenge_geometry_pickle(path: Path) -> None:
    """Pickle an object of a class ``HGCalGeo.HGCalGeo`` holding tiny-hex as the challenge stores it (cm)."""
    module = types.ModuleType("HGCalGeo")

    class HGCalGeo:
        pass

    HGCalGeo.__module__, HGCalGeo.__qualname__ = "HGCalGeo", "HGCalGeo"
    module.HGCalGeo = HGCalGeo  # type: ignore[attr-defined]
    geo = HGCalGeo()
    width = 30
    geo.nlayers, geo.max_cells = 3, width  # type: ignore[attr-defined]
    geo.ncells = np.full(3, 19.0)  # type: ignore[attr-defined]
    for name, values in (("xmap", TINY.cell_x), ("ymap", TINY.cell_y), ("ring_map", TINY.cell_ring)):
        arr = np.full((3, width), -1.0, np.float32)
        arr[:, :19] = values.reshape(3, 19) / (10.0 if name != "ring_map" else 1.0)
        setattr(geo, name, arr)
    geo.type_map = np.full((3, width), 1.0, np.float32)  # type: ignore[attr-defined]
    geo.id_map = {np.int64(7): (0, 1)}  # type: ignore[attr-defined]
    sys.modules["HGCalGeo"] = module
    try:
        path.write_bytes(pickle.dumps(geo, protocol=4))
    finally:
        del sys.modules["HGCalGeo"]


def test_import_challenge_geometry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _challenge_geometry_pickle(tmp_path / "geo.pkl")
    g = load_hgcal_geometry(tmp_path / "geo.pkl")
    assert (g.name, g.n_layers, g.n_voxels) == ("geo", 3, 57)
    assert np.allclose(g.cell_x, TINY.cell_x, atol=1e-5) and np.allclose(g.cell_y, TINY.cell_y, atol=1e-5)
    assert g.cell_ring.tolist() == TINY.cell_ring.tolist() and set(g.layers[0].cell_type) == {1}
    assert np.allclose(g.layers[0].cell_width, 12.0, atol=1e-5) and g.layers[2].z_range == pytest.approx((15.6, 23.4))
    assert main(["geometry", "import-hgcal", str(tmp_path / "geo.pkl"), "-o", str(tmp_path / "geo.json"), "--layer-depth", "10"]) == 0
    assert "3 layers, 57 cells" in capsys.readouterr().out
    assert CellGeometry.from_json(tmp_path / "geo.json").layers[1].z_range == (10.0, 20.0)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_before_it_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"ncells": np.ones(1), "xmap": _Exploit(marker)}))
    with pytest.raises(UnsafePickleError, match=r"refusing to load (posix|os)\.system"):
        load_hgcal_geometry(evil)
    assert not marker.exists()
    assert main(["geometry", "import-hgcal", str(evil), "-o", str(tmp_path / "g.json")]) == 2
    assert "refusing to load" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "g.json").exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (np.array([1, "a"], dtype=object), "holds Python objects"),
        (np.ma.masked_array([1.0, 2.0]), "refusing to load numpy.ma.core"),
        (print, "refusing to load builtins.print"),
        (b"\x80\x04K", "not a readable pickle"),
    ],
)
def test_only_plain_data_unpickles(payload: object, message: str) -> None:
    data = payload if isinstance(payload, bytes) else pickle.dumps(payload)
    with pytest.raises(UnsafePickleError, match=message):
        safe_unpickle(data)


def test_plain_data_unpickles() -> None:
    value = {"a": [1, 2.5, "x", (3,)], "b": np.arange(6, dtype=np.float32).reshape(2, 3), "c": np.float64(2.0)}
    back = safe_unpickle(pickle.dumps(value))
    assert back["a"] == value["a"] and np.array_equal(back["b"], value["b"]) and back["c"] == 2.0
