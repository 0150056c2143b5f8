"""`calogen evaluate` end to end on small files: metrics.json, report.html, summary and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calogen.cli import main
from calogen.eval.evaluate import evaluate
from calogen.eval.settings import EvaluationSettings, conventions
from calogen.geometry import Geometry
from calogen.io import write_showers

TINY = Geometry.builtin("tiny")


def _showers(n: int, rng: np.random.Generator, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Toy showers: exponential longitudinal and radial profiles with Gamma fluctuations."""
    energies = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n))
    layer = np.exp(-np.arange(5) / 2.0)
    radial = np.exp(-np.arange(4) / 0.8)
    mean = (layer[:, None, None] * np.ones(6)[None, :, None] * radial[None, None, :]).ravel()
    shape = rng.gamma(4.0, 0.25, (n, TINY.n_voxels)) * mean
    showers = shape / shape.sum(axis=1, keepdims=True) * energies[:, None] * scale
    return energies.astype(np.float32), showers.astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(11)
    write_showers(root / "ref.h5", *_showers(600, rng))
    write_showers(root / "same.h5", *_showers(600, rng))
    write_showers(root / "scaled.h5", *_showers(600, rng, scale=1.05))
    return root


def test_evaluate_writes_metrics_report_and_summary(files, capsys):
    out = files / "out"
    code = main(["evaluate", str(files / "ref.h5"), f"same={files / 'same.h5'}", f"scaled={files / 'scaled.h5'}",
                 "--geometry", "tiny", "--out", str(out), "--metrics", "hist", "--seed", "42", "--quiet"])
    assert code == 0
    record = json.loads((out / "metrics.json").read_text())
    same, scaled = record["samples"]
    assert (same["name"], scaled["name"]) == ("same", "scaled")
    assert record["inputs"]["reference"]["n_showers"] == 600 and len(record["inputs"]["reference"]["sha256"]) == 64
    assert {"numpy", "torch", "calogen"} <= set(record["environment"]["packages"])
    followed = record["conventions"]  # the official code followed, and every difference in effect
    assert followed["official_code"]["date"] == "2025-01-02" and followed["official_code"]["commit"].startswith("ad3a816")
    assert not any("classifier settings" in d for d in followed["differences"])  # official classifier by default
    assert EvaluationSettings().official_classifier
    assert any("fast standardised network" in d for d in conventions(EvaluationSettings(official_classifier=False))["differences"])
    assert not any("resampling seed" in d for d in followed["differences"])  # the official FPD/KPD seed 42
    assert EvaluationSettings().seed == 42 and not EvaluationSettings().adapt_distances
    ratio = {s["name"]: next(h for h in s["histograms"] if h["name"] == "e_ratio")["separation_power"] for s in record["samples"]}
    assert ratio["same"] < 0.05 < ratio["scaled"]
    # FPD/KPD on the official 42-column vector of tiny; batch sizes adapted to 600 showers to keep the test fast
    fast = EvaluationSettings(metrics=("fpd", "kpd"), adapt_distances=True)
    distances = evaluate(files / "ref.h5", {"scaled": files / "scaled.h5"}, TINY, files / "fpd-out", settings=fast)
    scaled_distances = distances["samples"][0]["distances"]
    assert np.isfinite(scaled_distances["fpd"]["value"]) and np.isfinite(scaled_distances["kpd"]["error"])
    assert scaled_distances["fpd"]["settings"]["adapted_to_sample_size"] and scaled_distances["fpd"]["settings"]["seed"] == 42
    assert any("adapted to the sample size" in d for d in distances["conventions"]["differences"])
    page = (out / "report.html").read_text()
    assert "<script" in page and "src=" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    data = json.loads(page.split('type="application/json">', 1)[1].split("</script>", 1)[0])
    assert {h["name"] for h in data["histograms"]} >= {"e_ratio", "e_layer_0", "sparsity_4"}
    assert len(data["mean_shower"]["reference"]) == TINY.n_layers
    printed = capsys.readouterr().out
    assert "separation power, mean" in printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.h5", "ref.h5", "--geometry", "tiny"], "no such file"),
        (["ref.h5", "ref.h5", "--geometry", "ds2"], "120 voxels but geometry 'ds2' has 6480"),
        (["ref.h5", "ref.h5", "--geometry", "ds7"], "unknown geometry"),
        (["ref.h5", "ref.h5", "--geometry", "tiny", "--metrics", "hist,auc"], "unknown metric"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(files, capsys, args, message):
    out = files / "bad-out"
    argv = ["evaluate", *[str(files / a) if a.endswith(".h5") else a for a in args], "--out", str(out), "--quiet"]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_classifiers_run_through_evaluate(files):
    out = files / "cls-out"
    argv = ["evaluate", str(files / "ref.h5"), str(files / "scaled.h5"), "--geometry", "tiny", "--out", str(out),
            "--metrics", "cls-low,cls-high,cnn", "--fast-classifier", "--quiet"]  # official settings: 50 epochs of 3x2048
    assert main(argv) == 0
    record = json.loads((out / "metrics.json").read_text())
    classifiers = {c["kind"]: c for c in record["samples"][0]["classifiers"]}
    assert set(classifiers) == {"cls-low", "cls-high", "cnn"}
    assert all(0.0 <= c["auc_mean"] <= 1.0 for c in classifiers.values())
    assert record["settings"]["classifier"]["max_showers_per_side"] == 10_000
    assert any("fast standardised network" in d for d in record["conventions"]["differences"])
    official = EvaluationSettings().classifier_settings()  # the default is the CaloChallenge network and schedule
    assert (official.hidden, official.epochs, official.lr, official.standardize) == ((2048,) * 3, 50, 2e-4, False)
    page = (out / "report.html").read_text()
    assert '"kind":"cnn"' in page
