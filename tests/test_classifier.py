"""Tests of the classifier two-sample test on synthetic showers in the ``tiny`` geometry."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from calogen.errors import CalogenError
from calogen.eval.classifier import jsd_from_probabilities, run_classifier
from calogen.eval.classifier_inputs import low_level_inputs, stack_low_level
from calogen.eval.classifier_settings import ClassifierError, ClassifierSettings
from calogen.geometry import Geometry

TINY = Geometry.builtin("tiny")
FAST = ClassifierSettings(hidden=(64, 64), epochs=15, patience=3, n_runs=3, seed=7, num_threads=1)


def synthetic_showers(
    n: int, seed: int, *, scale: float = 1.0, move_layer: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Toy EM showers on ``tiny``: Gaussian depth profile whose maximum grows with log E, exponential
    radial profile of fluctuating width, gamma-distributed voxel fluctuations (about 22 % each) and a
    2 % spread of the total response. ``scale`` multiplies every voxel; ``move_layer=k`` moves all of
    layer k's energy into layer k + 1.

    Returns:
        energies ``(n,)`` MeV and showers ``(n, 120)`` MeV, float32.
    """
    rng = np.random.default_rng(seed)
    n_layers, n_alpha, _ = TINY.shape
    energies = 10 ** rng.uniform(3.0, 5.0, n)
    depth = (np.arange(n_layers) + 0.5) / n_layers
    t_max = 0.25 + 0.1 * (np.log10(energies) - 3.0) + 0.03 * rng.normal(size=n)
    longitudinal = np.exp(-(((depth[None, :] - t_max[:, None]) / 0.3) ** 2))
    longitudinal /= longitudinal.sum(axis=1, keepdims=True)
    width = 8.0 * (1.0 + 0.15 * rng.normal(size=n)).clip(0.5)
    radial = np.exp(-TINY.layers[0].r_centres()[None, :] / width[:, None])
    radial /= radial.sum(axis=1, keepdims=True)
    response = energies * (1.0 + 0.02 * rng.normal(size=n))
    mean = response[:, None, None, None] * longitudinal[:, :, None, None] * radial[:, None, None, :] / n_alpha
    grid = rng.gamma(20.0, np.broadcast_to(mean, (n, *TINY.shape)) / 20.0) * scale
    if move_layer is not None:
        grid[:, move_layer + 1] += grid[:, move_layer]
        grid[:, move_layer] = 0.0
    return energies.astype(np.float32), grid.reshape(n, -1).astype(np.float32)


def inputs(n: int, seed: int, **distortion: float | int) -> np.ndarray:
    return low_level_inputs(*synthetic_showers(n, seed, **distortion))


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return inputs(5000, seed=1)


def test_low_level_inputs_follow_official_normalisation():
    """Official prepare_low_data_for_classifier: voxels below the threshold zeroed, divided by E_inc, float32."""
    energies = np.array([[1000.0], [1e5]])
    showers = np.array([[10.0, 0.0, 5.0], [1e3, 2e3, 0.01]])
    expected = np.array([[3.0, 0.01, 0.0, 0.005], [5.0, 0.01, 0.02, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(low_level_inputs(energies, showers, threshold=0.0151), expected, rtol=1e-6)
    assert low_level_inputs(energies, showers)[1, 3] == np.float32(0.01) / np.float32(1e5)  # no threshold
    out = np.full((4, 4), -1.0, np.float32)
    low_level_inputs(energies.ravel(), showers, threshold=0.0151, out=out[1:3])
    np.testing.assert_array_equal(out[1:3], expected)
    assert (out[[0, 3]] == -1).all()
    with pytest.raises(ClassifierError, match="float32 array of shape"):
        low_level_inputs(energies, showers, out=np.empty((2, 4)))


def test_stack_low_level_fills_one_array_from_chunks():
    energies, showers = synthetic_showers(25, seed=3)
    chunks = [(energies[i : i + 7], showers[i : i + 7]) for i in range(0, 25, 7)]
    stacked = stack_low_level(iter(chunks), 20, TINY.n_voxels, threshold=0.5)
    np.testing.assert_array_equal(stacked, low_level_inputs(energies[:20], showers[:20], threshold=0.5))
    with pytest.raises(ClassifierError, match="only 25 showers"):
        stack_low_level(iter(chunks), 30, TINY.n_voxels)


def test_same_distribution_gives_auc_one_half(reference):
    result = run_classifier("cls-low", reference, inputs(5000, seed=2), FAST)
    assert abs(result.auc_mean - 0.5) < 0.03
    assert abs(result.jsd_mean) < 0.05
    assert result.n_train == 6000 and result.n_val == 2000 and result.n_test == 2000
    assert all(b <= t <= FAST.epochs for b, t in zip(result.best_epochs, result.epochs_trained, strict=True))
    assert result.ref_scores.shape == result.gen_scores.shape == (3 * 1000,)


@pytest.mark.parametrize("distortion", [{"scale": 1.05}, {"move_layer": 2}], ids=["energy-x1.05", "layer-moved"])
def test_distortions_are_detected(reference, distortion):
    result = run_classifier("cls-low", reference, inputs(5000, seed=3, **distortion), FAST)
    assert result.auc_mean > 0.6
    assert result.jsd_mean > 0.05
    assert result.gen_scores.mean() > result.ref_scores.mean()


def test_high_level_classifier_accepts_any_feature_array():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(2000, 4)).astype(np.float32)
    gen = ref.copy()
    gen[:, 2] = rng.normal(0.4, 1.0, size=2000)
    result = run_classifier("cls-high", ref, gen, FAST)
    assert result.auc_mean > 0.55
    assert result.kind == "cls-high"


def test_cnn_detects_a_moved_layer():
    ref, gen = inputs(1500, seed=4), inputs(1500, seed=5, move_layer=1)
    settings = ClassifierSettings(cnn_channels=(4, 8), cnn_hidden=32, epochs=10, n_runs=1, num_threads=1)
    result = run_classifier("cnn", ref, gen, settings, geometry=TINY)
    assert result.auc_mean > 0.8


def test_same_seed_reproduces_results():
    ref, gen = inputs(600, seed=6), inputs(600, seed=7, scale=1.05)
    settings = ClassifierSettings(hidden=(32,), dropout=0.2, epochs=4, n_runs=2, seed=11, num_threads=1)
    first, second = (run_classifier("cls-low", ref, gen, settings) for _ in range(2))
    assert first.aucs == second.aucs and first.jsds == second.jsds
    np.testing.assert_array_equal(first.gen_scores, second.gen_scores)
    other = run_classifier("cls-low", ref, gen, dataclasses.replace(settings, seed=12))
    assert other.aucs != first.aucs


def test_jsd_matches_the_analytic_value_for_a_calibrated_classifier():
    # Two-bin distributions P (reference) and Q (generated); the calibrated classifier outputs Q/(P+Q).
    p_ref, p_gen = np.array([0.75, 0.25]), np.array([0.25, 0.75])
    calibrated = p_gen / (p_ref + p_gen)
    bins_ref = np.repeat([0, 1], [750, 250])
    bins_gen = np.repeat([0, 1], [250, 750])
    probs = np.concatenate([calibrated[bins_ref], calibrated[bins_gen]])
    labels = np.repeat([0, 1], 1000)
    expected = jensenshannon(p_ref, p_gen, base=2) ** 2
    assert jsd_from_probabilities(probs, labels) == pytest.approx(expected, rel=1e-9)
    assert jsd_from_probabilities(np.full(10, 0.5), labels[::200]) == pytest.approx(0.0)
    assert jsd_from_probabilities(labels.astype(float), labels) == pytest.approx(1.0, abs=1e-5)


def test_result_serialises_to_json(reference):
    settings = ClassifierSettings(hidden=(8,), epochs=1, n_runs=2, max_showers_per_side=300)
    result = run_classifier("cls-low", reference, reference[::-1], settings)
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["kind"] == "cls-low" and len(summary["aucs"]) == 2 and "ref_scores" not in summary
    assert summary["n_test"] == 120
    assert len(result.to_dict(include_scores=True)["gen_scores"]) == 2 * 60


def test_settings_round_trip_and_official():
    official = ClassifierSettings.official(n_runs=5)
    assert official.hidden == (2048, 2048, 2048) and official.n_runs == 5 and official.patience is None
    # the official evaluate.py defaults: input layer + 2 hidden layers of 2048, no dropout, Adam 2e-4,
    # batch 1000, 50 epochs, best epoch by accuracy, raw inputs, all showers, one run, 60/20/20
    assert dataclasses.asdict(ClassifierSettings.official()) == dataclasses.asdict(ClassifierSettings()) | {
        "hidden": (2048, 2048, 2048), "dropout": 0.0, "lr": 2e-4, "batch_size": 1000, "epochs": 50,
        "patience": None, "select_on": "accuracy", "standardize": False, "n_runs": 1,
        "max_showers_per_side": None, "split": (0.6, 0.2, 0.2),
    }  # fmt: skip
    restored = ClassifierSettings.from_dict(json.loads(json.dumps(dataclasses.asdict(official))))
    assert restored == official


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda r: run_classifier("cls-low", r, r[:, :-1]), "features"),
        (lambda r: run_classifier("cls-low", r, r[:10]), "at least"),
        (lambda r: run_classifier("cls-low", r[:, :3] * np.nan, r[:, :3]), "NaN"),
        (lambda r: run_classifier("svm", r, r), "unknown classifier kind"),
        (lambda r: run_classifier("cnn", r, r), "geometry="),
        (lambda r: run_classifier("cnn", r, r, geometry=Geometry.builtin("ds1-photons")), "irregular"),
        (lambda r: run_classifier("cnn", r[:, :50], r[:, :50], geometry=TINY), "1 \\+ 120"),
        (lambda r: low_level_inputs(-np.ones(len(r)), r[:, 1:]), "positive"),
        (lambda r: low_level_inputs(np.ones(3), r[:, 1:]), "energies"),
        (lambda r: ClassifierSettings(dropout=1.0), "dropout"),
        (lambda r: ClassifierSettings(split=(0.5, 0.2, 0.2)), "split"),
        (lambda r: ClassifierSettings(epochs=0), "epochs"),
        (lambda r: ClassifierSettings.from_dict({"epoch": 3}), "unknown classifier setting"),
    ],
)
def test_bad_input_raises_a_calogen_error(reference, call, match):
    with pytest.raises(ClassifierError, match=match) as info:
        call(reference[:200])
    assert isinstance(info.value, CalogenError)


def test_a_column_of_denormal_values_counts_as_constant():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(1000, 3)).astype(np.float32)
    gen = rng.normal(size=(1000, 3)).astype(np.float32)
    for sample in (ref, gen):  # float32 denormals: a deviation float32 cannot divide by
        sample[:, 1] = (rng.random(1000) < 0.05) * np.float32(1.4e-45)
    result = run_classifier("cls-high", ref, gen, FAST)
    assert np.isfinite(result.auc_mean) and abs(result.auc_mean - 0.5) < 0.1
