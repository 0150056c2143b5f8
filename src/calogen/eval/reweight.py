"""DCTR reweighting: per-shower weights that make a candidate sample (a fast simulation) look like a
reference sample (the full simulation).

A classifier that separates reference showers A from candidate showers B estimates the log-odds
``f(x) = log P(B | x) / P(A | x) = log (n_B p_B(x)) / (n_A p_A(x))`` for class sizes ``n_A``, ``n_B``
of its data, so every candidate shower gets the weight::

    w(x) = exp(-f(x)) * n_B / n_A  ~  p_A(x) / p_B(x)

and weighted candidate histograms estimate reference ones (A. Andreassen and B. Nachman, "Neural
networks for full phase-space reweighting and parameter tuning", arXiv:1907.08209). The procedure of
:func:`fit_weights`:

1. **Inputs** (:func:`dctr_inputs`): the official high-level vector of every shower
   (:func:`calogen.features.high_level_vector`, 362 columns on DS2, the cls-high input of the
   evaluation) with its energy columns taken relative to the incident energy (``log10 E_l - log10 E_inc``,
   ``log10 E_tot - log10 E_inc``): the same information (an invertible linear map), but a response shift
   becomes a shift of a few columns instead of a small difference of two columns that each span two
   decades, which a network trained by Adam does not find on a few thousand showers. The network and
   training loop are the evaluation's (:func:`calogen.eval.classifier_training.fit_classifier`, standardised
   inputs, epoch kept on the validation loss), with smaller batches (256) and more epochs (up to 50,
   patience 5) than its defaults.
2. **Cross-fitting**: both samples are shuffled (seeded) into ``folds`` parts. For part ``j`` a
   classifier trains on the other parts less a held-out calibration share (``calibration_fraction`` of
   them), which selects the epoch and fits the calibration; the candidate showers of part ``j`` are
   weighted by that classifier only, so no shower is weighted by a classifier that saw it.
3. **Calibration**: Platt scaling on the held-out share: ``f = a s + b`` for the network's logit ``s``,
   ``(a, b)`` by unpenalised logistic regression of the labels. It is monotone and smooth (isotonic
   regression would give step-shaped weights with extremes at its clip). **Prior**: ``n_B / n_A`` of the
   calibration share corrects unequal class sizes; the normalisation below removes what remains.
4. **Clipping and normalisation** (:class:`~calogen.eval.weight_clipping.ClipRule`), within each of ``energy_bins`` bins of incident
   energy (equal-count bins of the weighted file's energies): with a fixed maximum ``c`` the weights
   are scaled and capped together so that the result has mean 1 and maximum ``c`` exactly (``min(s w,
   c)`` with ``s`` solving ``mean = 1``), which guarantees an effective sample size of at least ``N / c``;
   with ``essF`` (default ``ess0.5``) ``c`` is the largest maximum that keeps the effective sample size
   at or above ``F N`` (no clip when the weights already do): weights of samples that overlap well are
   left alone, and for a nearly separable pair (GFLASH vs the MC on DS2, AUC 0.994) the cap falls to
   2.4 or less, where the weighted histograms are closest to the reference (a larger cap lets a few
   showers overshoot, a smaller one corrects less; see docs/reweighting.md); with ``pQ`` (e.g.
   ``p99.9``) the weights above their Q-th percentile are set to it and all are scaled to mean 1, so
   ``n (1 - Q/100)`` showers of a bin share its largest weight. The recorded clip value is the largest
   level the clipped weights end at. Mean 1 per bin keeps the incident-energy distribution of the
   weighted sample that of the candidate: the weights correct showers at given energy, ``p_A(x | E) / p_B(x | E)``. Normalised globally instead
   (``energy_bins=1``), GFLASH weights on DS2 moved weight from 25-100 GeV (weighted fraction 0.1-0.5 of
   the showers' share) to 1-1.6 GeV (4x): where the fast simulation is most separable the few showers
   that look real get clipped, so the weighted sample loses high energies and every energy histogram
   is distorted.

:func:`apply_weights` weights another candidate file, never seen in fitting (the statistically clean
choice for an evaluation): its log-weight is the mean of the ``folds`` calibrated log-ratios, then the
same clipping and normalisation. :func:`effective_sample_size` is ``(sum w)^2 / sum w^2``: the number
of unweighted showers with the same statistical power.

Weights are written to and read from weights files by :mod:`calogen.eval.weights_file`.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ref, cand = rng.normal(0.0, 1.0, (600, 2)), rng.normal(0.5, 1.0, (600, 2))
    >>> fast = ClassifierSettings(hidden=(16,), epochs=5, n_runs=1, max_showers_per_side=None)
    >>> fit = fit_weights(ref, cand, ReweightSettings(folds=2, classifier=fast))
    >>> bool(abs(np.average(cand[:, 0], weights=fit.weights)) < abs(cand[:, 0].mean()))
    True
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calogen.eval.classifier_settings import ClassifierSettings
from calogen.eval.classifier_training import fit_classifier, predict_logits
from calogen.eval.weight_clipping import ClipRule, clip_and_normalise
from calogen.eval.weights_file import ReweightError, effective_sample_size, write_weights
from calogen.generator import derive_seed

__all__ = ["ReweightSettings", "Reweighter", "WeightFit", "apply_weights", "dctr_inputs", "fit_weights", "reweight_files"]

log = logging.getLogger(__name__)


def _dctr_classifier() -> ClassifierSettings:
    return ClassifierSettings(batch_size=256, epochs=50, patience=5, n_runs=1, max_showers_per_side=None)


@dataclass(frozen=True)
class ReweightSettings:
    """How weights are fitted.

    Args:
        folds: cross-fitting parts (>= 2).
        calibration_fraction: share of the training parts held out for epoch selection and Platt scaling.
        clip: clip rule text (see :class:`~calogen.eval.weight_clipping.ClipRule`); the default ``ess0.5`` keeps the effective sample size
            >= N / 2 in every energy bin.
        seed: seed of the fold shuffle and of every classifier (fold ``j`` uses ``derive_seed(seed, j + 1)``).
        energy_bins: bins of incident energy in which weights are clipped and normalised (1: globally).
        classifier: network and training settings (``n_runs``, ``split`` and ``max_showers_per_side`` unused).
    """

    folds: int = 5
    calibration_fraction: float = 0.2
    clip: str = "ess0.5"
    seed: int = 0
    energy_bins: int = 10
    classifier: ClassifierSettings = field(default_factory=_dctr_classifier)

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ReweightError(f"folds={self.folds} must be >= 2 (cross-fitting needs a part to weight and one to train on)")
        if self.energy_bins < 1:
            raise ReweightError(f"energy_bins={self.energy_bins} must be >= 1")
        if not 0.0 < self.calibration_fraction < 1.0:
            raise ReweightError(f"calibration_fraction={self.calibration_fraction} must lie in (0, 1)")
        ClipRule.parse(self.clip)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return {**dataclasses.asdict(self), "classifier": dataclasses.asdict(self.classifier)}


@dataclass(frozen=True)
class Reweighter:
    """The fold classifiers of a fit with their Platt parameters ``(a, b)`` and log priors ``log n_B / n_A``."""

    models: list[Any]
    platt: list[tuple[float, float]]
    log_priors: list[float]
    settings: ReweightSettings

    def log_ratios(self, inputs: np.ndarray) -> np.ndarray:
        """``(folds, N)`` calibrated log-weights ``-(a s + b) + log n_B / n_A`` of every fold classifier."""
        out = []
        for model, (a, b), prior in zip(self.models, self.platt, self.log_priors, strict=True):
            s = predict_logits(model, inputs, self.settings.classifier).astype(np.float64)
            out.append(prior - (a * s + b))
        return np.stack(out)


@dataclass(frozen=True)
class WeightFit:
    """Outcome of :func:`fit_weights` or :func:`apply_weights`.

    Args:
        weights: ``(N,)`` float64 candidate weights, mean 1.
        n_clipped: weights set to the clip value.
        clip_value: the level of the clipped weights on the final mean-1 scale (inf: no clipping).
        ess: effective sample size ``(sum w)^2 / sum w^2``.
        fold_aucs: held-out AUC (reference vs candidate) of each fold classifier before calibration;
            empty for :func:`apply_weights`.
        best_epochs: kept epoch of each fold classifier.
        platt: ``(a, b)`` of each fold.
        reweighter: the fold classifiers, to weight further files.
    """

    weights: np.ndarray = field(repr=False)
    n_clipped: int
    clip_value: float
    ess: float
    fold_aucs: list[float]
    best_epochs: list[int]
    platt: list[tuple[float, float]]
    reweighter: Reweighter = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (no arrays, no networks)."""
        aucs = np.asarray(self.fold_aucs, np.float64)
        return {
            "n": int(self.weights.size), "n_clipped": self.n_clipped, "clip_value": self.clip_value,
            "max_weight": float(self.weights.max()), "ess": self.ess,
            "auc_uncalibrated_mean": float(aucs.mean()) if aucs.size else None,
            "auc_uncalibrated_std": float(aucs.std(ddof=1)) if aucs.size > 1 else None,
            "fold_aucs": self.fold_aucs, "best_epochs": self.best_epochs, "platt": [list(p) for p in self.platt],
        }  # fmt: skip


def _platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` minimising the binary cross entropy of ``sigmoid(a s + b)`` (Platt scaling, unpenalised)."""
    from scipy.optimize import minimize
    from scipy.special import expit

    s, y = np.asarray(logits, np.float64), np.asarray(labels, np.float64)

    def loss(p: np.ndarray) -> tuple[float, np.ndarray]:
        z = p[0] * s + p[1]
        residual = expit(z) - y
        value = np.mean(np.logaddexp(0.0, z) - y * z)
        return float(value), np.array([np.mean(residual * s), np.mean(residual)])

    result = minimize(loss, np.array([1.0, 0.0]), jac=True, method="BFGS")
    return float(result.x[0]), float(result.x[1])



def _check_pair(reference: np.ndarray, candidate: np.ndarray, folds: int) -> None:
    for name, arr in (("reference", reference), ("candidate", candidate)):
        if arr.ndim != 2 or len(arr) < 10 * folds:
            raise ReweightError(
                f"{name} inputs have shape {arr.shape}; need (N, features) with N >= {10 * folds} for {folds} folds"
            )
    if reference.shape[1] != candidate.shape[1]:
        raise ReweightError(f"reference has {reference.shape[1]} features, candidate {candidate.shape[1]}; use one geometry")


def _stacked_rows(reference: np.ndarray, candidate: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``rows`` of the stack ``[reference; candidate]``."""
    is_cand = rows >= len(reference)
    out = np.empty((len(rows), reference.shape[1]), np.float32)
    out[~is_cand] = reference[rows[~is_cand]]
    out[is_cand] = candidate[rows[is_cand] - len(reference)]
    return out


def fit_weights(
    reference: np.ndarray,
    candidate: np.ndarray,
    settings: ReweightSettings | None = None,
    *,
    candidate_energies: np.ndarray | None = None,
) -> WeightFit:
    """Cross-fitted, Platt-calibrated, clipped DCTR weights of every candidate row (module docstring).

    Args:
        reference: ``(N_A, d)`` classifier inputs of the reference sample.
        candidate: ``(N_B, d)`` classifier inputs of the candidate sample.
        settings: folds, calibration share, clip rule, seed, energy bins, classifier.
        candidate_energies: ``(N_B,)`` incident energies of the candidate showers, for clipping and
            normalising per energy bin (None: globally).

    Returns:
        The weights (mean 1), their diagnostics and the fold classifiers.
    """
    from sklearn.metrics import roc_auc_score

    s = settings or ReweightSettings()
    reference, candidate = np.asarray(reference, np.float32), np.asarray(candidate, np.float32)
    _check_pair(reference, candidate, s.folds)
    rng = np.random.default_rng(derive_seed(s.seed, 0))
    ref_parts = np.array_split(rng.permutation(len(reference)), s.folds)
    cand_parts = np.array_split(rng.permutation(len(candidate)) + len(reference), s.folds)
    log_w = np.empty(len(candidate), np.float64)
    models, platt, priors, aucs, epochs = [], [], [], [], []
    for j in range(s.folds):
        ref_rest = np.concatenate([p for i, p in enumerate(ref_parts) if i != j])
        cand_rest = np.concatenate([p for i, p in enumerate(cand_parts) if i != j])
        n_ref_cal, n_cand_cal = (max(1, int(round(s.calibration_fraction * len(r)))) for r in (ref_rest, cand_rest))
        cal = np.concatenate([ref_rest[:n_ref_cal], cand_rest[:n_cand_cal]])
        train = np.concatenate([ref_rest[n_ref_cal:], cand_rest[n_cand_cal:]])
        fit = fit_classifier("cls-high", reference, candidate, train, cal, s.classifier, seed=derive_seed(s.seed, j + 1))
        cal_logits = predict_logits(fit.model, _stacked_rows(reference, candidate, cal), s.classifier)
        a, b = _platt(cal_logits, (cal >= len(reference)).astype(np.float64))
        prior = math.log(n_cand_cal / n_ref_cal)
        held_ref, held_cand = reference[ref_parts[j]], candidate[cand_parts[j] - len(reference)]
        ref_logits, cand_logits = (predict_logits(fit.model, x, s.classifier).astype(np.float64) for x in (held_ref, held_cand))
        aucs.append(float(roc_auc_score(np.r_[np.zeros(len(ref_logits)), np.ones(len(cand_logits))], np.r_[ref_logits, cand_logits])))
        log_w[cand_parts[j] - len(reference)] = prior - (a * cand_logits + b)
        models.append(fit.model)
        platt.append((a, b))
        priors.append(prior)
        epochs.append(fit.best_epoch)
        log.info("fold %d/%d: best epoch %d, held-out AUC %.4f, Platt a=%.3f b=%.3f", j + 1, s.folds, fit.best_epoch, aucs[-1], a, b)
    weights, n_clipped, clip = clip_and_normalise(log_w, ClipRule.parse(s.clip), candidate_energies, s.energy_bins)
    reweighter = Reweighter(models, platt, priors, s)
    return WeightFit(weights, n_clipped, clip, effective_sample_size(weights), aucs, epochs, platt, reweighter)


def apply_weights(reweighter: Reweighter, candidate: np.ndarray, *, candidate_energies: np.ndarray | None = None) -> WeightFit:
    """Weights of new candidate rows ``(N, d)`` (never seen in fitting): the mean over folds of the calibrated
    log-weights, clipped and normalised as in :func:`fit_weights` (per bin of ``candidate_energies``)."""
    candidate = np.asarray(candidate, np.float32)
    if candidate.ndim != 2 or len(candidate) == 0:
        raise ReweightError(f"candidate inputs have shape {candidate.shape}; need (N, features) with N >= 1")
    log_w = reweighter.log_ratios(candidate).mean(axis=0)
    s = reweighter.settings
    weights, n_clipped, clip = clip_and_normalise(log_w, ClipRule.parse(s.clip), candidate_energies, s.energy_bins)
    return WeightFit(weights, n_clipped, clip, effective_sample_size(weights), [], [], reweighter.platt, reweighter)


# --- files in, weights file out -----------------------------------------------------------------------
def dctr_inputs(features: Any) -> np.ndarray:
    """The official high-level vector of :class:`~calogen.features.ShowerFeatures` with ``log10 E_inc``
    subtracted from its layer and total energy columns, ``(N, d)`` float64."""
    from calogen.features import high_level_column_names, high_level_vector

    x = high_level_vector(features)
    names = high_level_column_names(features.geometry)
    energy = [i for i, n in enumerate(names) if n.startswith(("log10_e_layer", "log10_e_total"))]
    x[:, energy] -= x[:, names.index("log10_e_inc"), None]
    return x


def _inputs(path: Path, geometry: Any, chunk_size: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Classifier inputs and incident energies of a file."""
    from calogen.features import features_from_file

    log.info("features of %s", path)
    features = features_from_file(path, geometry, chunk_size=chunk_size, progress=progress)
    return dctr_inputs(features), features.e_inc


def reweight_files(
    reference: str | os.PathLike[str],
    candidate: str | os.PathLike[str],
    output: str | os.PathLike[str],
    geometry: Any,
    *,
    apply_to: str | os.PathLike[str] | None = None,
    settings: ReweightSettings | None = None,
    chunk_size: int = 5_000,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit DCTR weights of ``candidate`` against ``reference`` (CaloChallenge files of ``geometry``) and write
    the weights of ``candidate``, or of ``apply_to`` when given, to ``output``.

    Returns:
        ``{"fit": ..., "weights": ..., "attrs": ...}``: the cross-fit figures, those of the written
        weights, and the attributes stored with them.
    """
    from importlib.metadata import version

    from calogen.io import ShowerFile, file_sha256
    from calogen.outputs import check_destination

    s = settings or ReweightSettings()
    check_destination(output)
    paths = {"reference": Path(reference), "candidate": Path(candidate)}
    if apply_to is not None:
        paths["apply_to"] = Path(apply_to)
    for p in paths.values():
        ShowerFile(p, geometry).close()  # structure and voxel count before any long work
    inputs = {k: _inputs(p, geometry, chunk_size, progress) for k, p in paths.items()}
    fit = fit_weights(inputs["reference"][0], inputs["candidate"][0], s, candidate_energies=inputs["candidate"][1])
    if apply_to is not None:
        result = apply_weights(fit.reweighter, inputs["apply_to"][0], candidate_energies=inputs["apply_to"][1])
    else:
        result = fit
    target = paths.get("apply_to", paths["candidate"])
    attrs = {
        "method": "dctr", "reference": str(paths["reference"]), "reference_sha256": file_sha256(paths["reference"]),
        "candidate": str(target), "candidate_sha256": file_sha256(target),
        "fitted_candidate": str(paths["candidate"]), "fitted_candidate_sha256": file_sha256(paths["candidate"]),
        "n_showers": int(result.weights.size), "geometry": geometry.name,
        "features": f"official high-level vector ({inputs['reference'][0].shape[1]} columns), energies relative to E_inc",
        "calibration": f"platt on a held-out {s.calibration_fraction:g} of the training folds; prior n_candidate/n_reference of that share",
        "normalisation": f"clipped and scaled to mean 1 within {s.energy_bins} equal-count bins of incident energy",
        "weighting": f"cross-fitted, {s.folds} folds" if apply_to is None
        else f"applied: mean calibrated log-weight of the {s.folds} fold classifiers fitted on fitted_candidate",
        "folds": s.folds, "energy_bins": s.energy_bins, "clip": s.clip, "clip_value": result.clip_value, "n_clipped": result.n_clipped,
        "max_weight": float(result.weights.max()),
        "seed": s.seed, "ess": result.ess, "auc_uncalibrated": fit.summary()["auc_uncalibrated_mean"],
        "settings": s.to_dict(), "calogen_version": version("calogen"),
    }  # fmt: skip
    write_weights(output, result.weights, attrs)
    return {"fit": fit.summary(), "weights": result.summary(), "attrs": attrs}
