"""A hybrid refiner outside ``calogen refine``: ONNX and Triton export (FastSim shower as an input), served and
benchmarked with its FastSim running in the process, and its occupancy spectra fitted on its own outputs."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from calogen.cli import main
from calogen.eval.bench.generators import ModelOnDevice, build_generator, parse_generator
from calogen.geometry import Geometry
from calogen.hybrid import HybridGenerator
from calogen.models import load
from calogen.serve.protocol import InputTensor
from calogen.serve.service import InferenceService
from calogen.serve.triton_repo import check_repository

from _model_data import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = Geometry.builtin("tiny")
FASTSIM = {"engine": "gflash", "options": {}, "particle": "e-", "geometry": "tiny"}


def make_refiner_dir(directory: Path, fastsim: dict | None = None) -> Path:
    """An untrained refiner for ``tiny`` (Euler, NFE 2, trained range 1-100 GeV) recording the FastSim ``fastsim``."""
    import torch

    from calogen.models.config import ModelConfig
    from calogen.models.generator import save_model
    from calogen.models.pair import ModelPair
    from calogen.models.preprocess import Preprocessor

    rng = np.random.default_rng(0)
    energies = np.geomspace(1e3, 1e5, 64).astype(np.float32)
    showers = (rng.random((64, TINY.n_voxels)) * energies[:, None] / TINY.n_voxels).astype(np.float32)
    preprocessor = Preprocessor.fit(TINY, energies, showers, radial=True)
    config = ModelConfig(channels=(8, 16), emb_dim=16, energy_width=32, energy_depth=1, radial_width=8, radial_depth=1,
                         sampler="euler", nfe=2, objective="refiner", bridge_sigma=0.1)  # fmt: skip
    torch.manual_seed(0)
    pair = ModelPair(TINY, config, preprocessor.layer_dim)
    save_model(directory, geometry=TINY, config=config, preprocessor=preprocessor, raw=pair, ema=copy.deepcopy(pair),
               extra={"refiner": {"fastsim": FASTSIM if fastsim is None else fastsim}})  # fmt: skip
    return directory


@pytest.fixture(scope="module")
def refiner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_refiner_dir(tmp_path_factory.mktemp("hybrid") / "tiny-hybrid")


def _gflash(energies: np.ndarray, seed: int) -> np.ndarray:
    from calogen.sim.engines import make_engine

    return make_engine("gflash", TINY, "e-").sample(energies, seed=seed)


def test_onnx_graph_takes_the_fastsim_shower_and_matches_refine(refiner_dir: Path, tmp_path: Path) -> None:
    assert main(["export", str(refiner_dir), "--format", "onnx", "-o", str(tmp_path / "r.onnx"), "--nfe", "2"]) == 0
    graph = onnx.load(str(tmp_path / "r.onnx")).graph
    assert [i.name for i in graph.input] == ["INCIDENT_ENERGY", "FASTSIM_SHOWER", "NOISE_ENERGY", "NOISE_SHAPE"]
    gen = load(refiner_dir)
    e = np.geomspace(1.5e3, 8e4, 7).astype(np.float32)
    fast = _gflash(e, seed=4)
    noise_energy, noise_shape = gen.refiner.model.draw_noise(e.size, seed=9)
    feed = {"INCIDENT_ENERGY": e.reshape(-1, 1), "FASTSIM_SHOWER": fast, "NOISE_ENERGY": noise_energy, "NOISE_SHAPE": noise_shape}
    got = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"]).run(["SHOWERS"], feed)[0]
    want = gen.refiner.refine(e, fast, seed=9, nfe=2)  # the same noise: refine draws it from the same seed
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert not np.allclose(got, ort.InferenceSession(str(tmp_path / "r.onnx")).run(["SHOWERS"], {**feed, "FASTSIM_SHOWER": _gflash(e, 5)})[0])


def test_triton_repository_declares_the_fastsim_input(refiner_dir: Path, tmp_path: Path) -> None:
    assert main(["export", str(refiner_dir), "--format", "triton", "-o", str(tmp_path / "repo"), "--name", "hyb"]) == 0
    config = check_repository(tmp_path / "repo" / "hyb")
    assert {i.name: list(i.dims) for i in config.input}["FASTSIM_SHOWER"] == [TINY.n_voxels]
    assert config.parameters["fastsim"].string_value == "gflash"


def test_bad_exports_of_a_refiner_are_one_line_errors(refiner_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(refiner_dir), "--format", "par04", "-o", str(tmp_path / "p.onnx")]) == 2
    assert "hybrid refiner" in capsys.readouterr().err and not (tmp_path / "p.onnx").exists()
    unnamed = make_refiner_dir(tmp_path / "unnamed", {**FASTSIM, "engine": None})
    assert main(["export", str(unnamed), "-o", str(tmp_path / "u.onnx")]) == 2
    err = capsys.readouterr().err
    assert "does not record its engine" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "u.onnx").exists()
    assert main(["export", str(unnamed), "-o", str(tmp_path / "u.onnx"), "--no-check"]) == 0  # tracing needs no FastSim


def test_served_hybrid_runs_the_fastsim_and_equals_sample(refiner_dir: Path) -> None:
    gen = load(refiner_dir)
    e = np.array([[2e3], [3e4]], np.float32)
    with InferenceService.from_source(refiner_dir, nfe=1) as service:
        future, seed = service.submit("tiny-hybrid", "", [InputTensor("INCIDENT_ENERGY", "FP32", (2, 1), e)], {"seed": 7})
        got = future.result(timeout=60)
        params = service.spec.parameters
    assert seed == 7 and (params["engine"], params["fastsim"], params["nfe"], params["exact"]) == ("hybrid", "gflash", "1", "true")
    np.testing.assert_array_equal(got, gen.sample(e, seed=7, nfe=1))


def test_bench_times_the_fastsim_with_the_refiner(refiner_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from calogen.eval.timing import count_parameters, time_generator

    timed, description = build_generator(parse_generator(f"hyb=model:{refiner_dir}@nfe=1"), TINY, particle="e-")
    assert description["hybrid"] and description["fastsim"] == "gflash" and count_parameters(timed) == count_parameters(load(refiner_dir).pair)
    e = np.geomspace(2e3, 5e4, 5)
    np.testing.assert_allclose(ModelOnDevice(timed.model, "cpu").sample(e, seed=3), timed.sample(e, seed=3), rtol=1e-5, atol=1e-4)
    engine = timed.model.engine()
    fast_sample = engine.sample

    def slow(*args: object, **kwargs: object) -> np.ndarray:
        time.sleep(0.02)  # a FastSim costing 20 ms per call
        return fast_sample(*args, **kwargs)

    monkeypatch.setattr(engine, "sample", slow)
    result = time_generator(timed, energies="loguniform:2GeV:50GeV", batch_sizes=(1,), warmup=0, min_repeats=3, min_showers=3,
                            min_seconds=0.0, max_seconds=5.0)  # fmt: skip
    assert result.batches[0].ms_per_shower_median >= 20.0


def test_fit_occupancy_fits_a_refiners_spectra_on_its_own_outputs(refiner_dir: Path, tmp_path: Path) -> None:
    from calogen.io import ShowerWriter

    rng = np.random.default_rng(1)
    e = np.geomspace(1e3, 1e5, 40).astype(np.float32)
    with ShowerWriter(tmp_path / "full.h5", TINY) as w:
        w.append(e, (rng.random((40, TINY.n_voxels)) ** 4 * e[:, None] / TINY.n_voxels * 4).astype(np.float32))
    args = ["fit-occupancy", str(refiner_dir), "--data", str(tmp_path / "full.h5"), "--out", str(tmp_path / "occ"),
            "--steps", "20", "--spectrum-showers", "40", "--nfe", "1"]  # fmt: skip
    assert main(args) == 0
    gen = load(tmp_path / "occ")
    assert isinstance(gen, HybridGenerator) and gen.refiner.model.occupancy is not None
    record = json.loads((tmp_path / "occ" / "occupancy.json").read_text())["provenance"]
    assert set(record["spectra"]) == {"euler:1", "euler:2"}
    showers = gen.sample(e[:6], seed=2)
    np.testing.assert_array_equal(showers, gen.sample(e[:6], seed=2))
    assert np.isfinite(showers).all() and (showers.sum(1) > 0).all()
