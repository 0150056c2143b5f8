"""Shower files: round trip, streaming, atomic writes and every validation case."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from calogen.geometry import Geometry
from calogen.io import OutputPathError, ShowerFile, ShowerFileError, ShowerWriter, file_sha256, read_showers, write_showers

TINY = Geometry.builtin("tiny")


def _sample(n: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    energies = rng.uniform(1e3, 1e5, (n, 1)).astype(np.float32)
    showers = (rng.exponential(1.0, (n, TINY.n_voxels)) * (rng.random((n, TINY.n_voxels)) < 0.3)).astype(np.float32)
    return energies, showers


def _raw(path, **datasets) -> None:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)


def test_round_trip_and_chunks(tmp_path):
    energies, showers = _sample(25)
    path = tmp_path / "s.h5"
    write_showers(path, energies, showers, attrs={"geometry": "tiny"})
    data = read_showers(path, TINY)
    np.testing.assert_array_equal(data.energies, energies)
    np.testing.assert_array_equal(data.showers, showers)
    with ShowerFile(path, TINY) as f:
        assert (f.n_showers, f.n_voxels) == (25, 120)
        assert f.attrs["geometry"] == "tiny"
        chunks = list(f.iter_chunks(10))
        assert [len(c) for c in chunks] == [10, 10, 5]
        np.testing.assert_array_equal(np.concatenate([c.showers for c in chunks]), showers)
        with h5py.File(path) as raw:
            assert raw["showers"].compression == "gzip"
    assert len(file_sha256(path)) == 64


def test_one_dimensional_energies_are_accepted(tmp_path):
    energies, showers = _sample()
    _raw(tmp_path / "a.h5", incident_energies=energies[:, 0], showers=showers)
    assert read_showers(tmp_path / "a.h5").energies.shape == (7, 1)


@pytest.mark.parametrize(
    ("datasets", "message"),
    [
        ({"showers": np.ones((2, 120))}, r"missing dataset\(s\) \['incident_energies'\]"),
        ({"incident_energies": np.ones((2, 1))}, r"missing dataset\(s\) \['showers'\]"),
        ({"incident_energies": np.array([b"a", b"b"]), "showers": np.ones((2, 120))}, "dtype"),
        ({"incident_energies": np.ones((2, 2)), "showers": np.ones((2, 120))}, r"expected \(N, 1\)"),
        ({"incident_energies": np.ones((3, 1)), "showers": np.ones((2, 120))}, "3 incident energies but 2 showers"),
        ({"incident_energies": np.ones((2, 1)), "showers": np.ones((2, 100))}, "100 voxels but geometry 'tiny' has 120"),
        ({"incident_energies": np.ones((2, 1)), "showers": np.ones(2)}, r"expected \(N, voxels\)"),
        ({"incident_energies": np.ones((2, 1)), "showers": np.array([[np.nan] * 120, [0.0] * 120])}, "NaN or inf .*row 0"),
        ({"incident_energies": np.array([[1.0], [np.inf]]), "showers": np.ones((2, 120))}, "NaN or inf .*row 1"),
        ({"incident_energies": np.array([[1.0], [-5.0]]), "showers": np.ones((2, 120))}, "must be > 0 MeV .*row 1"),
        ({"incident_energies": np.ones((2, 1)), "showers": -np.eye(2, 120)}, "negative energy .*row 0, voxel 0"),
    ],
)
def test_validation_names_the_problem(tmp_path, datasets, message):
    path = tmp_path / "bad.h5"
    _raw(path, **datasets)
    with pytest.raises(ShowerFileError, match=message):
        read_showers(path, TINY)


def test_missing_truncated_and_corrupt_files(tmp_path):
    with pytest.raises(ShowerFileError, match="no such file"):
        read_showers(tmp_path / "nope.h5")
    (tmp_path / "text.h5").write_text("not hdf5 at all")
    with pytest.raises(ShowerFileError, match="not a readable HDF5 file"):
        read_showers(tmp_path / "text.h5")
    energies, showers = _sample(200)
    good = tmp_path / "good.h5"
    write_showers(good, energies, showers)
    blob = good.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ShowerFileError, match="truncated or corrupt"):
        read_showers(truncated)


def test_interrupted_write_leaves_nothing(tmp_path):
    energies, showers = _sample()
    path = tmp_path / "out.h5"
    with pytest.raises(KeyboardInterrupt):
        with ShowerWriter(path, TINY) as writer:
            writer.append(energies, showers)
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_wrong_shapes_and_bad_directories(tmp_path):
    with pytest.raises(OutputPathError, match="does not exist"):
        ShowerWriter(tmp_path / "no" / "dir.h5", TINY)
    with pytest.raises(ShowerFileError, match="cannot append"):
        with ShowerWriter(tmp_path / "x.h5", TINY) as writer:
            writer.append(np.ones(2), np.ones((2, 5)))
    assert list(tmp_path.iterdir()) == []


def test_appending_in_pieces_equals_one_write(tmp_path):
    energies, showers = _sample(30)
    with ShowerWriter(tmp_path / "pieces.h5", TINY) as writer:
        for start in range(0, 30, 8):
            writer.append(energies[start : start + 8], showers[start : start + 8])
    write_showers(tmp_path / "whole.h5", energies, showers)
    a, b = read_showers(tmp_path / "pieces.h5"), read_showers(tmp_path / "whole.h5")
    np.testing.assert_array_equal(a.showers, b.showers)
    np.testing.assert_array_equal(a.energies, b.energies)
