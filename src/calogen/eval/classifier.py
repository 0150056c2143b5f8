"""Classifier two-sample test: how well can a network tell generated showers from reference ones?

A binary classifier is trained to separate reference showers (label 0) from generated ones (label 1).
Each side is shuffled and split 60/20/20 into train/validation/test; the epoch with the best validation
loss (or accuracy, as in the official evaluation) is kept, its output probabilities are calibrated by
isotonic regression fitted on the validation set, and on the test set we report

* the ROC AUC of the calibrated probabilities (0.5: indistinguishable, 1: fully separable), and
* the Jensen-Shannon divergence in bits estimated from the calibrated probabilities ``p``,
  ``JSD = 1 + mean_i [y_i log2 p_i + (1 - y_i) log2(1 - p_i)] = 1 - BCE / ln 2``
  (0: same distribution, 1: disjoint), which for balanced classes is
  ``1/2 <log2 2p>_generated + 1/2 <log2 2(1-p)>_reference``.

Runs repeat with seeds ``derive_seed(settings.seed, run)`` and are summarised as mean and sample
standard deviation. The official evaluation labels the other way round (reference 1); AUC and JSD do
not depend on that choice.

Weighted generated samples (e.g. DCTR weights, :mod:`calogen.eval.reweight`): with
``generated_weights`` every generated shower counts with its weight everywhere: in the training and
validation losses, the validation accuracy, the isotonic calibration, the test ROC AUC and the JSD.
In each split the generated weights are rescaled to mean 1, so both classes keep equal total weight.

Three input kinds share one training loop:

* ``cls-low``: ``low_level_inputs(energies, showers, threshold=t)`` = ``[log10(E_inc / MeV), voxels / E_inc]``
  with voxels below ``t`` zeroed, the official ``prepare_low_data_for_classifier``, into a fully
  connected network;
* ``cls-high``: any ``(N, d)`` array of high-level features, officially
  ``calogen.features.high_level_vector`` (362 columns on DS2), which is scaled to order one;
* ``cnn``: the low-level array seen as a ``(1, layers, alpha, r)`` grid (regular geometries only) by two
  strided 3-D convolutions with circular padding in alpha, then a dense head that also sees log10 E.

:meth:`~calogen.eval.classifier_settings.ClassifierSettings.official` is the official ``evaluate.py``
(2025-01-02) setting: input layer and 2 more hidden layers of 2048 LeakyReLU units, dropout 0, Adam lr
2e-4, batch 1000, 50 epochs, best epoch by validation accuracy (stop at accuracy 1), no input
standardisation, one run on all showers split 60/20/20 (the official fixed counts 60k/20k/20k on DS2/DS3
100k files). Deliberate differences that stay in official mode: training in float32 (the official one
runs in float64 — twice the memory of already large inputs, and its cls-low fails on float32 files with
current torch), inputs stacked once as float32 without further copies (see
:func:`~calogen.eval.classifier_inputs.low_level_inputs`' ``out``), seeded shuffles and initialisation.
The default settings are a faster, standardised network (see the class) and are recorded with every
result.

Parts: settings and result in :mod:`~calogen.eval.classifier_settings`, inputs in
:mod:`~calogen.eval.classifier_inputs`, networks in :mod:`~calogen.eval.classifier_nets`, training in
:mod:`~calogen.eval.classifier_training`; this module runs the test.

Reference: C. Krause et al., "CaloChallenge 2022: a community challenge for fast calorimeter
simulation", arXiv:2410.21611; official code CaloChallenge/homepage ``code/evaluate.py``.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(400, 3)), rng.normal(0.5, 1.0, size=(400, 3))
    >>> res = run_classifier("cls-high", a, b, ClassifierSettings(hidden=(16,), epochs=5, n_runs=1))
    >>> res.auc_mean > 0.6
    True
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import torch

from calogen.eval.classifier_inputs import check_inputs, check_weights, split_weights
from calogen.eval.classifier_nets import build_model, feature_stats
from calogen.eval.classifier_settings import ClassifierResult, ClassifierSettings
from calogen.eval.classifier_training import (
    batched_logits,
    torch_threads,
    train_network,
)
from calogen.generator import derive_seed
from calogen.geometry import Geometry

__all__ = ["jsd_from_probabilities", "run_classifier"]

log = logging.getLogger(__name__)

_CALIBRATION_CLIP = 1e-6  # isotonic output range [1e-6, 1 - 1e-6], as in the official evaluation


def jsd_from_probabilities(
    probabilities: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """Jensen-Shannon divergence in bits from calibrated probabilities of label 1.

    ``JSD = 1 + mean[y log2 p + (1 - y) log2(1 - p)]``, exact for a balanced sample and a perfectly
    calibrated classifier; ``p`` is clipped to ``[1e-6, 1 - 1e-6]``.

    Args:
        probabilities: ``(N,)`` calibrated probabilities that the label is 1.
        labels: ``(N,)`` true labels 0 or 1.
        weights: ``(N,)`` sample weights of a weighted mean (None: all 1).
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _CALIBRATION_CLIP, 1 - _CALIBRATION_CLIP)
    y = np.asarray(labels, dtype=np.float64)
    return float(1.0 + np.average(y * np.log2(p) + (1 - y) * np.log2(1 - p), weights=weights))


def run_classifier(
    kind: str,
    reference_inputs: np.ndarray,
    generated_inputs: np.ndarray,
    settings: ClassifierSettings | None = None,
    *,
    geometry: Geometry | None = None,
    progress: bool = False,
    generated_weights: np.ndarray | None = None,
) -> ClassifierResult:
    """Train classifiers to separate reference from generated inputs; report test AUC and JSD.

    Args:
        kind: ``"cls-low"``, ``"cls-high"`` or ``"cnn"`` (see the module docstring).
        reference_inputs: ``(N_ref, d)`` reference (Geant4) inputs.
        generated_inputs: ``(N_gen, d)`` generated inputs; each run draws
            ``min(N_ref, N_gen, max_showers_per_side)`` showers per side.
        settings: network and training settings (default :class:`ClassifierSettings`).
        geometry: required for ``"cnn"``: a regular geometry with ``d == 1 + n_voxels``.
        progress: show a progress bar over runs.
        generated_weights: ``(N_gen,)`` non-negative weights of the generated showers (see the module
            docstring); None: unweighted.
    """
    settings = settings or ClassifierSettings()
    ref, gen = check_inputs(kind, reference_inputs, generated_inputs, geometry)
    gen_w = None if generated_weights is None else check_weights(generated_weights, len(gen))
    n_side = min(len(ref), len(gen), settings.max_showers_per_side or len(ref))
    n_train, n_val = (int(f * n_side) for f in settings.split[:2])
    runs = range(settings.n_runs)
    if progress:
        from tqdm.auto import tqdm

        runs = tqdm(runs, desc=kind, unit="run")
    outcomes = []
    with torch_threads(settings.num_threads):
        for run in runs:
            seed = derive_seed(settings.seed, run)
            outcomes.append(_one_run(kind, ref, gen, n_side, settings, geometry, seed, gen_w))
    aucs = [o.auc for o in outcomes]
    jsds = [o.jsd for o in outcomes]
    probs = np.concatenate([o.probabilities for o in outcomes]).astype(np.float32)
    labels = np.concatenate([o.labels for o in outcomes])
    ddof = 1 if settings.n_runs > 1 else 0
    return ClassifierResult(
        kind=kind, auc_mean=float(np.mean(aucs)), auc_std=float(np.std(aucs, ddof=ddof)),
        jsd_mean=float(np.mean(jsds)), jsd_std=float(np.std(jsds, ddof=ddof)), aucs=aucs, jsds=jsds,
        best_epochs=[o.best_epoch for o in outcomes],
        epochs_trained=[o.epochs_trained for o in outcomes], settings=settings,
        ref_scores=probs[labels == 0], gen_scores=probs[labels == 1],
        n_train=2 * n_train, n_val=2 * n_val, n_test=2 * (n_side - n_train - n_val), weighted=gen_w is not None,
    )  # fmt: skip


class _RunOutcome(NamedTuple):
    auc: float
    jsd: float
    probabilities: np.ndarray  # calibrated test-set probabilities of being generated
    labels: np.ndarray  # test-set labels, 1 = generated
    best_epoch: int
    epochs_trained: int


def _one_run(
    kind: str,
    ref: torch.Tensor,
    gen: torch.Tensor,
    n_side: int,
    s: ClassifierSettings,
    geometry: Geometry | None,
    seed: int,
    gen_weights: np.ndarray | None = None,
) -> _RunOutcome:
    """One shuffle / split / standardise / train / calibrate / test cycle (weighted when ``gen_weights``)."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    ref_rows = rng.permutation(len(ref))[:n_side]
    gen_rows = rng.permutation(len(gen))[:n_side] + len(ref)
    cuts = np.cumsum([int(f * n_side) for f in s.split[:2]])
    parts = zip(np.split(ref_rows, cuts), np.split(gen_rows, cuts), strict=True)
    train, val, test = (np.concatenate(pair) for pair in parts)
    stats = feature_stats(ref, gen, train, s) if s.standardize else None
    model = build_model(kind, ref.shape[1], s, geometry, seed, stats)
    train_w, val_w, test_w = (split_weights(rows, len(ref), gen_weights) for rows in (train, val, test))
    best_epoch, epochs_trained = train_network(model, ref, gen, train, val, s, seed, train_w, val_w)
    val_logits, val_labels = batched_logits(model, ref, gen, val, s)
    test_logits, test_labels = batched_logits(model, ref, gen, test, s)
    calibrator = IsotonicRegression(y_min=_CALIBRATION_CLIP, y_max=1 - _CALIBRATION_CLIP, out_of_bounds="clip")
    val_sw, test_sw = (None if w is None else w.double().numpy() for w in (val_w, test_w))
    calibrator.fit(torch.sigmoid(val_logits.double()).numpy(), val_labels.numpy(), sample_weight=val_sw)
    probs = calibrator.predict(torch.sigmoid(test_logits.double()).numpy())
    labels = test_labels.numpy()
    auc = float(roc_auc_score(labels, probs, sample_weight=test_sw))
    jsd = jsd_from_probabilities(probs, labels, test_sw)
    log.info("%s run seed %d: best epoch %d, AUC %.4f, JSD %.4f", kind, seed, best_epoch, auc, jsd)
    return _RunOutcome(auc, jsd, probs, labels, best_epoch, epochs_trained)
