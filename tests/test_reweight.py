"""DCTR reweighting (`calogen reweight`) and weighted evaluation (`calogen evaluate --weights`) on tiny files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calogen.cli import main
from calogen.eval.classifier import run_classifier
from calogen.eval.classifier_settings import ClassifierSettings
from calogen.eval.histograms import compare_features, weighted_voxel_counts
from calogen.eval.reweight import ReweightSettings, dctr_inputs, fit_weights
from calogen.eval.weight_clipping import ClipRule
from calogen.eval.weights_file import ReweightError, effective_sample_size, read_weights, weights_for_sample, write_weights
from calogen.eval.separation import separation_from_counts, weighted_counts
from calogen.features import compute_features, features_from_file
from calogen.geometry import Geometry
from calogen.io import read_showers, write_showers

TINY = Geometry.builtin("tiny")
N = 1500


def _showers(n: int, rng: np.random.Generator, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Toy showers: exponential layer and radial profiles, Gamma voxel fluctuations, and a total response of
    ``scale`` times a 10 % Gaussian spread (so a 5 % energy-scale shift overlaps the reference)."""
    energies = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n))
    layer = np.exp(-np.arange(5) / 2.0)
    radial = np.exp(-np.arange(4) / 0.8)
    mean = (layer[:, None, None] * np.ones(6)[None, :, None] * radial[None, None, :]).ravel()
    shape = rng.gamma(4.0, 0.25, (n, TINY.n_voxels)) * mean
    response = scale * rng.normal(1.0, 0.1, (n, 1))
    showers = shape / shape.sum(axis=1, keepdims=True) * energies[:, None] * response
    return energies.astype(np.float32), showers.astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("reweight")
    rng = np.random.default_rng(3)
    write_showers(root / "ref.h5", *_showers(N, rng))
    write_showers(root / "same.h5", *_showers(N, rng))
    write_showers(root / "scaled.h5", *_showers(N, rng, scale=1.05))
    write_showers(root / "scaled2.h5", *_showers(N, rng, scale=1.05))
    write_showers(root / "short.h5", *_showers(200, rng))
    return root


def _reweight(files, candidate: str, out: str, *extra: str) -> int:
    argv = ["reweight", "--reference", str(files / "ref.h5"), "--candidate", str(files / candidate),
            "-o", str(files / out), "--geometry", "tiny", "--seed", "5", "--quiet", *extra]  # fmt: skip
    return main(argv)


def test_self_reweighting_gives_weights_near_one(files):
    ref, same = (dctr_inputs(features_from_file(files / f, TINY)) for f in ("ref.h5", "same.h5"))
    fit = fit_weights(ref, same, ReweightSettings(folds=3, seed=1))
    assert fit.weights.mean() == pytest.approx(1.0, abs=1e-12)
    assert fit.weights.std() < 0.15
    assert fit.ess > 0.97 * N
    assert all(0.4 < auc < 0.6 for auc in fit.fold_aucs)


def test_known_shift_is_recovered_in_weighted_means(files, capsys):
    assert _reweight(files, "scaled.h5", "scaled_w.h5") == 0
    printed = capsys.readouterr().out
    assert "AUC before calibration" in printed and "ESS" in printed and "clipped" in printed
    wf = read_weights(files / "scaled_w.h5")
    w = wf.weights
    assert w.shape == (N,) and w.dtype == np.float64 and w.mean() == pytest.approx(1.0)
    assert wf.attrs["n_showers"] == N and wf.attrs["clip"] == "ess0.5" and wf.attrs["folds"] == 5
    assert wf.attrs["n_clipped"] == 0 and w.max() < 20 and wf.attrs["ess"] == pytest.approx(effective_sample_size(w))
    e_inc = read_showers(files / "scaled.h5").energies.ravel()
    deciles = np.searchsorted(np.quantile(e_inc, np.linspace(0, 1, 11))[1:-1], e_inc, side="right")
    np.testing.assert_allclose([w[deciles == b].mean() for b in range(10)], 1.0)  # energy distribution kept
    assert len(wf.attrs["candidate_sha256"]) == 64 and wf.attrs["calibration"].startswith("platt")
    ref_ratio = features_from_file(files / "ref.h5", TINY).e_ratio.mean()
    cand_ratio = features_from_file(files / "scaled.h5", TINY).e_ratio
    shift, weighted_shift = cand_ratio.mean() - ref_ratio, np.average(cand_ratio, weights=w) - ref_ratio
    assert shift > 0.04
    assert abs(weighted_shift) < 0.2 * shift


def test_reweighting_is_reproducible_from_a_seed(files):
    assert _reweight(files, "scaled.h5", "r1.h5", "--folds", "2") == 0
    assert _reweight(files, "scaled.h5", "r2.h5", "--folds", "2") == 0
    assert (files / "r1.h5").read_bytes() == (files / "r2.h5").read_bytes()
    assert _reweight(files, "scaled.h5", "r3.h5", "--folds", "2", "--seed", "6") == 0
    assert not np.array_equal(read_weights(files / "r1.h5").weights, read_weights(files / "r3.h5").weights)


def test_apply_to_weights_a_file_not_seen_in_fitting(files, capsys):
    assert _reweight(files, "scaled.h5", "applied.h5", "--apply-to", str(files / "scaled2.h5"), "--clip", "p99.9") == 0
    wf = weights_for_sample(files / "applied.h5", files / "scaled2.h5", N)
    assert wf.attrs["fitted_candidate"].endswith("scaled.h5") and wf.attrs["weighting"].startswith("applied")
    assert wf.attrs["n_clipped"] == 10 and wf.weights.mean() == pytest.approx(1.0)  # one in each of 10 energy bins
    cand_ratio = features_from_file(files / "scaled2.h5", TINY).e_ratio
    ref_ratio = features_from_file(files / "ref.h5", TINY).e_ratio.mean()
    assert abs(np.average(cand_ratio, weights=wf.weights) - ref_ratio) < 0.3 * (cand_ratio.mean() - ref_ratio)


def test_weighted_evaluation_reports_ess_and_lower_separation(files, capsys):
    if not (files / "scaled_w.h5").exists():
        assert _reweight(files, "scaled.h5", "scaled_w.h5") == 0
    out = files / "eval"
    argv = ["evaluate", str(files / "ref.h5"), f"gflash={files / 'scaled.h5'}", f"dctr={files / 'scaled.h5'}",
            "--weights", f"dctr={files / 'scaled_w.h5'}", "--geometry", "tiny", "--out", str(out),
            "--metrics", "hist,cls-high,fpd,kpd,prdc", "--fast-classifier", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((out / "metrics.json").read_text())
    plain, weighted = record["samples"]
    ess = read_weights(files / "scaled_w.h5").attrs["ess"]
    assert plain["weights"] is None and weighted["weights"]["ess"] == pytest.approx(ess)
    assert "prdc" in plain["distances"] and "prdc" not in weighted["distances"]  # no weighted PRDC: skipped, not unweighted
    for key in ("fpd", "kpd"):
        assert weighted["distances"][key]["settings"]["generated_ess"] == pytest.approx(ess)
        assert not plain["distances"][key]["settings"]["generated_weighted"]
    assert weighted["weights"]["applied_to"] == ["hist", "cls-low", "cls-high", "cnn", "fpd", "kpd"]
    value = {s["name"]: {k: s["distances"][k]["value"] for k in ("fpd", "kpd")} for s in record["samples"]}
    assert value["dctr"]["fpd"] < value["gflash"]["fpd"] and value["dctr"]["kpd"] < value["gflash"]["kpd"]
    sep = {s["name"]: {h["name"]: h["separation_power"] for h in s["histograms"]} for s in record["samples"]}
    assert sep["dctr"]["e_ratio"] < 0.5 * sep["gflash"]["e_ratio"]
    assert {c["kind"]: c["weighted"] for c in weighted["classifiers"]} == {"cls-high": True}
    assert "effective sample size (weights)" in capsys.readouterr().out
    assert '"ESS"' in (out / "report.html").read_text()


def test_unit_weights_give_the_unweighted_fpd_and_kpd(files):
    write_weights(files / "ones.h5", np.ones(N), {"method": "unit"})
    out = files / "unit-eval"
    argv = ["evaluate", str(files / "ref.h5"), f"plain={files / 'scaled.h5'}", f"unit={files / 'scaled.h5'}",
            "--weights", f"unit={files / 'ones.h5'}", "--geometry", "tiny", "--out", str(out),
            "--metrics", "fpd,kpd", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    plain, unit = (s["distances"] for s in json.loads((out / "metrics.json").read_text())["samples"])
    for key in ("fpd", "kpd"):
        assert unit[key]["settings"]["generated_weighted"] and unit[key]["settings"]["generated_ess"] == pytest.approx(N)
        assert (unit[key]["value"], unit[key]["error"]) == pytest.approx((plain[key]["value"], plain[key]["error"]), rel=1e-6)


@pytest.mark.parametrize(
    ("weights", "sample", "message"),
    [
        ("short_w.h5", "scaled.h5", "holds 200 weights but"),
        ("scaled_w.h5", "same.h5", "was made for"),
        ("ref.h5", "scaled.h5", "not a calogen weights file"),
    ],
)
def test_bad_weights_exit_2_with_one_line(files, capsys, weights, sample, message):
    if not (files / "short_w.h5").exists():
        assert _reweight(files, "short.h5", "short_w.h5", "--folds", "2") == 0
    if not (files / "scaled_w.h5").exists():
        assert _reweight(files, "scaled.h5", "scaled_w.h5") == 0
    capsys.readouterr()
    argv = ["evaluate", str(files / "ref.h5"), str(files / sample), "--weights", str(files / weights),
            "--geometry", "tiny", "--out", str(files / "bad"), "--metrics", "hist", "--quiet"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (files / "bad").exists()


def test_bad_reweight_input_exits_2_before_work(files, capsys):
    for bad in ("p0", "ess1.5"):
        assert _reweight(files, "scaled.h5", "x.h5", "--clip", bad) == 2
        assert "bad clip" in capsys.readouterr().err
    assert _reweight(files, "missing.h5", "x.h5") == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["reweight", "--reference", str(files / "ref.h5"), "--candidate", str(files / "scaled.h5"),
                 "-o", str(files / "nodir" / "w.h5"), "--geometry", "tiny"]) == 2  # fmt: skip
    assert "does not exist" in capsys.readouterr().err
    assert not (files / "x.h5").exists()
    with pytest.raises(ReweightError, match="folds=1"):
        ReweightSettings(folds=1)


def test_clip_rules():
    w = np.r_[np.ones(998), 500.0, 1000.0]
    none, n_none, level_none = ClipRule.parse("none").apply(w)
    assert n_none == 0 and level_none == np.inf and none.mean() == pytest.approx(1.0)
    capped, n_capped, level = ClipRule.parse("5").apply(w)
    assert (n_capped, level) == (2, 5.0) and capped.max() == pytest.approx(5.0) and capped.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(capped[:998], (1000 - 10) / 998)  # the others share what the capped two give up
    half, n_half, level_half = ClipRule.parse("p99.9").apply(w)
    assert n_half == 1 and half.max() == pytest.approx(level_half) and half.mean() == pytest.approx(1.0)
    for bad in ("p101", "0.5", "abc", "ess0", "ess1", "essx"):
        with pytest.raises(ReweightError, match="bad clip"):
            ClipRule.parse(bad)


def test_ess_clip_caps_at_the_largest_maximum_that_keeps_the_ess():
    w = np.r_[np.ones(998), 500.0, 1000.0]  # ESS 6.7 of 1000
    capped, n_capped, level = ClipRule.parse("ess0.5").apply(w)
    assert n_capped == 2 and capped.max() == pytest.approx(level) and capped.mean() == pytest.approx(1.0)
    assert effective_sample_size(capped) == pytest.approx(500.0, rel=1e-6)
    looser, _, looser_level = ClipRule.parse("ess0.4").apply(w)
    assert looser_level > level and effective_sample_size(looser) == pytest.approx(400.0, rel=1e-6)
    mild = np.random.default_rng(0).lognormal(0.0, 0.3, 1000)  # ESS 0.92 N: left alone
    kept, n_kept, kept_level = ClipRule.parse("ess0.5").apply(mild)
    assert (n_kept, kept_level) == (0, np.inf)
    np.testing.assert_allclose(kept, mild / mild.mean())


def test_weighted_separation_of_identical_histograms(files):
    data = read_showers(files / "ref.h5")
    energies, showers = data.energies, data.showers
    f = compute_features(energies, showers, TINY)
    ones = np.ones(f.n_showers)
    voxels = lambda edges: weighted_voxel_counts([(showers, ones)], edges, f.threshold)  # noqa: E731
    plain, unit = compare_features(f, f), compare_features(f, f, weights=ones, voxel_counts=voxels)
    assert [h.name for h in plain] == [h.name for h in unit]
    assert all(h.separation == 0.0 for h in plain + unit)
    np.testing.assert_allclose([h.generated_counts.sum() for h in unit], [h.generated_counts.sum() for h in plain])
    tilted = np.where(f.e_ratio > np.median(f.e_ratio), 3.0, 1.0)  # favour high-response showers
    by_name = {h.name: h for h in compare_features(f, f, weights=tilted)}
    assert "voxel_spectrum" not in by_name  # left out without voxel counts
    assert by_name["e_ratio"].separation > 0.05 and by_name["e_ratio"].wasserstein > 0
    bins = np.linspace(0.0, 2.0, 5)
    values = np.array([0.5, 1.5, 1.5, np.nan])
    np.testing.assert_array_equal(weighted_counts(values, np.ones(4), bins), np.histogram(values[:3], bins)[0])
    assert separation_from_counts(np.array([1.0, 1.0]), np.array([0.5, 1.5]), np.array([0.0, 1.0, 2.0])) == pytest.approx(
        0.5 * (0.25**2 / 0.75 + 0.25**2 / 1.25)
    )


def test_unit_weights_leave_the_classifier_unchanged():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 3)), rng.normal(0.4, 1.0, size=(400, 3))
    s = ClassifierSettings(hidden=(16,), epochs=4, n_runs=1, seed=3)
    plain, unit = run_classifier("cls-high", a, b, s), run_classifier("cls-high", a, b, s, generated_weights=np.full(400, 2.0))
    assert unit.weighted and not plain.weighted
    assert unit.auc_mean == pytest.approx(plain.auc_mean, abs=1e-6)
    tilted = run_classifier("cls-high", a, b, s, generated_weights=np.exp(-0.4 * b.sum(axis=1)))  # ~ p_a / p_b
    assert tilted.auc_mean < plain.auc_mean


def test_unclipped_weights_evaluate_to_valid_json(files):
    assert _reweight(files, "short.h5", "short_none.h5", "--folds", "2", "--clip", "none") == 0
    assert read_weights(files / "short_none.h5").attrs["n_clipped"] == 0
    out = files / "none-eval"
    argv = ["evaluate", str(files / "ref.h5"), str(files / "short.h5"), "--weights", str(files / "short_none.h5"),
            "--geometry", "tiny", "--out", str(out), "--metrics", "hist", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    weights = json.loads((out / "metrics.json").read_text())["samples"][0]["weights"]
    assert weights["clip"] == "none" and weights["clip_value"] is None and weights["n"] == 200
