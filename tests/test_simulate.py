"""The simulation run driver and ``calogen simulate``: determinism, parallelism, resumption, bad input."""

from __future__ import annotations

import json
import os
import re

import h5py
import numpy as np
import pytest

from calogen.cli import main
from calogen.energies import EnergySpec, EnergySpecError
from calogen.generator import derive_seed
from calogen.geometry import Geometry, GeometryError
from calogen.io import ShowerFile, file_sha256, read_showers
from calogen.sim.engines import (
    ENGINES,
    EngineError,
    canonical_particle,
    configure_numba_cache,
    engine_spec,
    make_engine,
    numba_source_hash,
    register_engine,
)
from calogen.sim.run import RunError, simulate_to_file, work_dir

TINY = Geometry.builtin("tiny")
FAIL_AT = "CALOGEN_TEST_FAIL_AT"


class FakeEngine:
    """A deterministic stand-in engine: shower i is random voxels from ``derive_seed(seed, i)``, summing to E.

    Raises when asked for a shower index >= ``$CALOGEN_TEST_FAIL_AT``, to simulate a crash mid-run.
    """

    def __init__(self, geometry: Geometry, particle: str = "e-", scale: float = 1.0) -> None:
        if scale <= 0:
            raise EngineError(f"scale must be > 0, got {scale}")
        self.geometry, self.particle, self.scale = geometry, particle, scale

    def simulate(self, energies: np.ndarray, *, seed: int, first_index: int = 0) -> np.ndarray:
        energies = np.asarray(energies, dtype=np.float64).reshape(-1)
        fail_at = int(os.environ.get(FAIL_AT, "-1"))
        n_voxels = self.geometry.n_voxels
        out = np.empty((energies.size, n_voxels), dtype=np.float32)
        for i, energy in enumerate(energies):
            if 0 <= fail_at <= first_index + i:
                raise RuntimeError(f"simulated crash at shower {first_index + i}")
            rng = np.random.default_rng(derive_seed(seed, first_index + i))
            weights = rng.exponential(size=n_voxels) * (rng.random(n_voxels) < 0.3)
            out[i] = self.scale * energy * weights / weights.sum()
        return out


@pytest.fixture(autouse=True)
def fake_engine(monkeypatch):
    """Register :class:`FakeEngine` as ``fake`` for the duration of a test."""
    monkeypatch.setitem(ENGINES, "fake", f"{__name__}:FakeEngine")
    monkeypatch.delenv(FAIL_AT, raising=False)


def _run(path, *, n=23, seed=5, chunk_size=5, workers=1, resume=False, energy="loguniform:1GeV:100GeV", **options):
    spec = engine_spec("fake", TINY, "electron", **options)
    return simulate_to_file(spec, energy, n, seed, path, chunk_size=chunk_size, workers=workers, resume=resume)


# --- engines --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "canonical"), [("e-", "e-"), ("Electron", "e-"), ("positron", "e+"), ("photon", "gamma")])
def test_particle_aliases(name, canonical):
    assert canonical_particle(name) == canonical


def test_make_engine_builds_with_canonical_particle_and_options():
    engine = make_engine("fake", "tiny", "photon", scale=2.0)
    assert (engine.geometry, engine.particle, engine.scale) == (TINY, "gamma", 2.0)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("geant5", "tiny", "e-"), EngineError, r"unknown engine 'geant5'; choose one of \['fake', 'full', 'gflash'\]"),
        (("fake", "tiny", "muon"), EngineError, "unknown particle 'muon'"),
        (("fake", "ds9", "e-"), GeometryError, "unknown geometry 'ds9'"),
    ],
)
def test_engine_spec_rejects_bad_requests(args, error, message):
    with pytest.raises(error, match=message):
        engine_spec(*args)


def test_register_engine_needs_module_and_attribute(monkeypatch):
    with pytest.raises(EngineError, match="must read 'module:attribute'"):
        register_engine("broken", "no_colon")
    monkeypatch.setitem(ENGINES, "missing", "calogen.no_such_module:Engine")
    with pytest.raises(EngineError, match="engine 'missing' is not available"):
        make_engine("missing", "tiny", "e-")


def test_numba_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "given"))
    assert configure_numba_cache() == tmp_path / "given"  # an explicit directory is used as is
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "calogen" / "numba" / numba_source_hash()
    assert configure_numba_cache() == expected
    assert os.environ["NUMBA_CACHE_DIR"] == str(expected)
    assert expected.is_dir() and len(expected.name) == 12


def test_numba_source_hash_follows_the_sources(monkeypatch, tmp_path):
    import calogen.sim.engines as engines

    package = tmp_path / "calogen"
    (package / "sim" / "physics").mkdir(parents=True)
    for name in engines.COMPILED_MODULES:
        (package / name).write_text("x = 1\n")
    module = package / "sim" / "physics" / "brems.py"
    module.write_text("a = 1\n")
    monkeypatch.setattr(engines, "__file__", str(package / "sim" / "engines.py"))
    before = numba_source_hash()
    module.write_text("a = 2\n")
    assert numba_source_hash() != before
    changed = numba_source_hash()
    (package / "voxel_spectrum.py").write_text("x = 2\n")  # compiled code outside sim/
    assert numba_source_hash() != changed


# --- the run driver -------------------------------------------------------------------------------
def test_run_content_metadata_and_reproducibility(tmp_path):
    path = _run(tmp_path / "a.h5", scale=2.0)
    data = read_showers(path, TINY)
    expected_energies = EnergySpec.parse("loguniform:1GeV:100GeV").sample(23, seed=5).astype(np.float32)
    np.testing.assert_array_equal(data.energies[:, 0], expected_energies)
    engine = FakeEngine(TINY, scale=2.0)
    for i in (0, 7, 22):  # each shower depends only on (seed, its index), not on its chunk
        np.testing.assert_array_equal(data.showers[i], engine.simulate(expected_energies[i : i + 1], seed=5, first_index=i)[0])
    with ShowerFile(path) as f:
        attrs = f.attrs
    assert {k: attrs[k] for k in ("engine", "geometry", "particle", "seed", "engine_options")} == {
        "engine": "fake", "geometry": "tiny", "particle": "e-", "seed": 5, "engine_options": '{"scale":2.0}',
    }  # fmt: skip
    assert EnergySpec.parse(attrs["energy"]) == EnergySpec.parse("loguniform:1GeV:100GeV")
    assert attrs["calogen_version"]
    with h5py.File(path) as raw:
        assert raw["showers"].compression == "gzip"
    assert not work_dir(path).exists()
    assert file_sha256(_run(tmp_path / "b.h5", scale=2.0)) == file_sha256(path)
    assert not np.array_equal(read_showers(_run(tmp_path / "c.h5", seed=6, scale=2.0)).showers, data.showers)


def test_explicit_energies(tmp_path):
    energies = np.array([1e3, 5e4, 2e3], dtype=np.float32)
    spec = engine_spec("fake", TINY, "e-")
    path = simulate_to_file(spec, energies, None, 1, tmp_path / "e.h5", chunk_size=2)
    np.testing.assert_array_equal(read_showers(path).energies[:, 0], energies)
    with pytest.raises(RunError, match="n=4 but 3 energies"):
        simulate_to_file(spec, energies, 4, 1, tmp_path / "f.h5", chunk_size=2)
    with pytest.raises(EnergySpecError, match="entry 1 is -5"):
        simulate_to_file(spec, np.array([1.0, -5.0]), None, 1, tmp_path / "f.h5", chunk_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.h5"]


def test_workers_give_identical_bytes(tmp_path):
    serial = _run(tmp_path / "serial.h5", n=20, chunk_size=4)
    parallel = _run(tmp_path / "parallel.h5", n=20, chunk_size=4, workers=2)
    assert file_sha256(parallel) == file_sha256(serial)


def test_engine_build_error_in_workers_reaches_the_caller(tmp_path):
    with pytest.raises(EngineError, match="scale must be > 0, got -1"):
        _run(tmp_path / "out.h5", workers=2, scale=-1.0)
    assert not list(tmp_path.iterdir())


def test_resume_after_crash_gives_identical_file(tmp_path, monkeypatch):
    reference = _run(tmp_path / "reference.h5")
    path = tmp_path / "out.h5"
    monkeypatch.setenv(FAIL_AT, "12")  # chunks 0 and 1 (showers 0-9) complete, chunk 2 crashes
    with pytest.raises(RuntimeError, match="simulated crash at shower 12"):
        _run(path)
    assert not path.exists()
    work = work_dir(path)
    assert json.loads((work / "manifest.json").read_text())["completed_chunks"] == 2
    monkeypatch.delenv(FAIL_AT)
    with pytest.raises(RunError, match="holds an unfinished run; pass --resume"):
        _run(path)
    with pytest.raises(RunError, match="belongs to a different run .*seed: 5 there, 6 now"):
        _run(path, seed=6, resume=True)
    _run(path, resume=True, workers=2)
    assert file_sha256(path) == file_sha256(reference)
    assert not work.exists()


def test_resume_without_work_dir_starts_afresh(tmp_path):
    path = _run(tmp_path / "a.h5", resume=True)
    assert file_sha256(path) == file_sha256(_run(tmp_path / "b.h5"))


def test_crash_before_first_chunk_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(FAIL_AT, "3")
    with pytest.raises(RuntimeError, match="simulated crash at shower 3"):
        _run(tmp_path / "out.h5")
    assert not list(tmp_path.iterdir())


def test_corrupt_chunk_is_reported(tmp_path, monkeypatch):
    path = tmp_path / "out.h5"
    monkeypatch.setenv(FAIL_AT, "7")
    with pytest.raises(RuntimeError):
        _run(path)
    monkeypatch.delenv(FAIL_AT)
    (work_dir(path) / "chunk-000000.npz").write_bytes(b"garbage")
    with pytest.raises(RunError, match=r"chunk-000000.npz cannot be read .*delete"):
        _run(path, resume=True)
    assert not path.exists()


# --- the command line -----------------------------------------------------------------------------
BASE = {"--engine": "fake", "--geometry": "tiny", "--energy": "list:1GeV,2GeV", "--n": "7", "--seed": "3"}


def _argv(**changes: str) -> list[str]:
    """``simulate`` arguments: :data:`BASE` updated with ``changes`` (``--chunk-size`` as ``chunk_size``)."""
    options = {**BASE, **{"--" + k.replace("_", "-"): v for k, v in changes.items()}}
    return ["simulate", *(f"{k}={v}" for k, v in options.items())]


def test_cli_simulates_and_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cli.h5"
    args = [*_argv(particle="gamma", output=str(out), chunk_size="3"), "--no-progress"]
    monkeypatch.setenv(FAIL_AT, "4")
    assert main(args) == 2  # an engine failure: one line naming the exception
    assert re.match(r"calogen simulate: error: unexpected RuntimeError: .* \(run with -v for the traceback\)\n$", capsys.readouterr().err)
    monkeypatch.delenv(FAIL_AT)
    assert main([*args, "--resume"]) == 0
    assert "wrote 7 gamma showers (fake, tiny)" in capsys.readouterr().out
    data = read_showers(out, TINY)
    assert set(data.energies[:, 0].tolist()) <= {1000.0, 2000.0}
    np.testing.assert_allclose(data.showers.sum(axis=1), data.energies[:, 0], rtol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.h5"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"particle": "muon"}, "unknown particle 'muon'"),
        ({"geometry": "ds9"}, "unknown geometry 'ds9'"),
        ({"geometry": "{tmp}/none.xml"}, "binning file .*none.xml does not exist"),
        ({"engine": "geant5"}, "unknown engine 'geant5'"),
        ({"energy": "0GeV"}, "energy must be > 0"),
        ({"energy": "-3GeV"}, "cannot read energy '-3GeV'"),
        ({"energy": "loguniform:1GeV"}, "write loguniform:LOW:HIGH"),
        ({"energy": "uniform:5GeV:1GeV"}, "LOW must be below HIGH"),
        ({"n": "0"}, "argument --n: must be >= 1, got 0"),
        ({"n": "-2"}, "argument --n: must be >= 1, got -2"),
        ({"seed": "-1"}, r"argument --seed: a seed must lie in 0..2\*\*63-1"),
        ({"seed": str(2**64)}, r"argument --seed: a seed must lie in 0..2\*\*63-1"),
        ({"workers": "0"}, "argument --workers: must be >= 1"),
        ({"chunk_size": "0"}, "argument --chunk-size: must be >= 1"),
        ({"energy": "1e12TeV"}, "exceeds the limit of 10 TeV"),
        ({"gflash_params": "p.json"}, "--gflash-params applies to --engine gflash"),
        ({"output": "{tmp}/missing/out.h5"}, "directory .*missing does not exist"),
        ({"output": "{tmp}"}, "is a directory"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, change, message):
    changes = {"output": "{tmp}/out.h5", **change}
    assert main(_argv(**{k: v.format(tmp=tmp_path) for k, v in changes.items()})) == 2
    err = capsys.readouterr().err
    assert err.startswith("calogen simulate: error: ") and err.count("\n") == 1
    assert re.search(message, err)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only directories")
def test_cli_read_only_directory(tmp_path, capsys):
    tmp_path.chmod(0o555)
    try:
        assert main(_argv(output=str(tmp_path / "out.h5"))) == 2
        assert "is not writable" in capsys.readouterr().err
        assert not list(tmp_path.iterdir())
    finally:
        tmp_path.chmod(0o755)


# --- end to end with the real engines -------------------------------------------------------------
def test_gflash_end_to_end(tmp_path):
    from calogen.sim.gflash import GflashSimulation
    from calogen.sim.gflash_params import GflashParameters

    params = GflashParameters.default().with_(spot_scale=0.5)
    params.save(tmp_path / "params.json")
    argv = _argv(engine="gflash", geometry="ds2", energy="uniform:1GeV:5GeV", n="6", chunk_size="2")
    argv += ["--gflash-params", str(tmp_path / "params.json")]
    assert main([*argv, f"--output={tmp_path / 'g.h5'}", "--workers=2"]) == 0
    data = read_showers(tmp_path / "g.h5", Geometry.builtin("ds2"))
    direct = GflashSimulation(Geometry.builtin("ds2"), params=params).simulate(data.energies, seed=3)
    np.testing.assert_array_equal(data.showers, direct)  # two processes give the serial result
    with ShowerFile(tmp_path / "g.h5") as f:
        assert GflashParameters.from_dict(json.loads(f.attrs["engine_options"])["params"]) == params


def test_full_end_to_end(tmp_path):
    from calogen.sim.full import FullSimulation

    argv = _argv(engine="full", geometry="ds2", energy="1GeV", n="3", chunk_size="2", output=str(tmp_path / "full.h5"))
    assert main(argv) == 0
    data = read_showers(tmp_path / "full.h5", Geometry.builtin("ds2"))
    direct = FullSimulation(Geometry.builtin("ds2")).simulate(np.full(3, 1000.0), seed=3).showers
    np.testing.assert_array_equal(data.showers, direct)
    assert 0.5 < data.showers.sum(axis=1).mean() / 1000.0 < 1.5  # CaloChallenge units: about E


def test_calibrate_gflash_command(tmp_path, capsys):
    from calogen.io import write_showers
    from calogen.sim.gflash import GflashSimulation
    from calogen.sim.gflash_params import GflashParameters

    ds2 = Geometry.builtin("ds2")
    energies = np.repeat([5_000.0, 20_000.0], 30).astype(np.float32)
    truth = GflashParameters.default().with_(depth_offset=0.7)
    write_showers(tmp_path / "ref.h5", energies[:, None], GflashSimulation(ds2, params=truth).sample(energies, seed=1))
    argv = ["calibrate-gflash", str(tmp_path / "ref.h5"), "--n-model=20", "--n-hits=10"]
    assert main([*argv, "-o", str(tmp_path / "missing" / "p.json")]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    assert main([*argv, "-o", str(tmp_path / "p.json")]) == 0
    fitted = GflashParameters.load(tmp_path / "p.json")
    assert fitted.depth_offset > 0.3 and "calibrate_gflash on 60 e- showers" in fitted.provenance
    assert main(["calibrate-gflash", str(tmp_path / "none.h5"), "-o", str(tmp_path / "q.json")]) == 2
    assert "none.h5: no such file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "ref.h5"]
