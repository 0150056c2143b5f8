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

:meth:`ClassifierSettings.official` is the official ``evaluate.py`` (2025-01-02) setting: input layer
and 2 more hidden layers of 2048 LeakyReLU units, dropout 0, Adam lr 2e-4, batch 1000, 50 epochs, best
epoch by validation accuracy (stop at accuracy 1), no input standardisation, one run on all showers
split 60/20/20 (the official fixed counts 60k/20k/20k on DS2/DS3 100k files). Deliberate differences
that stay in official mode: training in float32 (the official one runs in float64 — twice the memory of
already large inputs, and its cls-low fails on float32 files with current torch), inputs stacked once
as float32 without further copies (see :func:`low_level_inputs`' ``out``), seeded shuffles and
initialisation. The default settings are a faster, standardised network (see the class) and are
recorded with every result.

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

import contextlib
import dataclasses
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from calogen.errors import CalogenError
from calogen.generator import derive_seed
from calogen.geometry import Geometry

__all__ = [
    "KINDS",
    "MIN_SHOWERS_PER_SIDE",
    "ClassifierError",
    "ClassifierResult",
    "ClassifierSettings",
    "FittedClassifier",
    "fit_classifier",
    "jsd_from_probabilities",
    "low_level_inputs",
    "predict_logits",
    "run_classifier",
    "stack_low_level",
]

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("cls-low", "cls-high", "cnn")
"""Classifier kinds accepted by :func:`run_classifier`."""

MIN_SHOWERS_PER_SIDE = 50
"""Fewest showers per side that leave every split with both classes."""

_CALIBRATION_CLIP = 1e-6  # isotonic output range [1e-6, 1 - 1e-6], as in the official evaluation


class ClassifierError(CalogenError):
    """Classifier inputs or settings are invalid."""


@dataclass(frozen=True)
class ClassifierSettings:
    """Network, training and repetition settings of the classifier test.

    The defaults are sized so cls-low, cls-high and cnn together take a few minutes on one CPU core
    for 10k vs 10k DS2 showers; :meth:`official` gives the CaloChallenge settings.

    Args:
        hidden: widths of the hidden layers of the fully connected network.
        dropout: dropout probability after every hidden layer (also in the CNN head).
        lr: Adam learning rate.
        batch_size: showers per optimiser step.
        epochs: maximum number of passes over the training set.
        patience: stop after this many epochs without validation improvement (None: never).
        select_on: keep the epoch with the lowest validation ``loss`` or highest ``accuracy``.
        standardize: shift and scale every input feature by the training split's mean and standard
            deviation (features constant in training are only shifted), as the network's first layer.
        n_runs: independent repetitions (new shuffle, split, subsample and initialisation each).
        seed: run ``r`` uses seed ``derive_seed(seed, r)``.
        max_showers_per_side: each run draws at most this many showers per side (None: all).
        split: train, validation, test fractions.
        cnn_channels: output channels of the two 3-D convolutions.
        cnn_hidden: width of the dense layer of the CNN head.
        num_threads: torch CPU threads during the test (None: leave torch's setting).
        device: torch device for training, e.g. ``"cpu"`` or ``"cuda"``.
    """

    hidden: tuple[int, ...] = (512, 512)
    dropout: float = 0.0
    lr: float = 1e-3
    batch_size: int = 1000
    epochs: int = 10
    patience: int | None = 3
    select_on: Literal["loss", "accuracy"] = "loss"
    standardize: bool = True
    n_runs: int = 3
    seed: int = 0
    max_showers_per_side: int | None = 10_000
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    cnn_channels: tuple[int, int] = (8, 16)
    cnn_hidden: int = 64
    num_threads: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        problems = []
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            problems.append(f"hidden={self.hidden} must be one or more positive widths")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout} must lie in [0, 1)")
        if not self.lr > 0:
            problems.append(f"lr={self.lr} must be positive")
        for name in ("batch_size", "epochs", "n_runs", "cnn_hidden"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.patience is not None and self.patience < 1:
            problems.append(f"patience={self.patience} must be >= 1 or None")
        if self.select_on not in ("loss", "accuracy"):
            problems.append(f"select_on={self.select_on!r} must be 'loss' or 'accuracy'")
        if self.max_showers_per_side is not None and self.max_showers_per_side < MIN_SHOWERS_PER_SIDE:
            problems.append(
                f"max_showers_per_side={self.max_showers_per_side} must be >= {MIN_SHOWERS_PER_SIDE} or None"
            )
        if len(self.split) != 3 or min(self.split) <= 0 or not math.isclose(sum(self.split), 1.0):
            problems.append(f"split={self.split} must be three positive fractions summing to 1")
        if len(self.cnn_channels) != 2 or min(self.cnn_channels) < 1:
            problems.append(f"cnn_channels={self.cnn_channels} must be two positive channel counts")
        if self.num_threads is not None and self.num_threads < 1:
            problems.append(f"num_threads={self.num_threads} must be >= 1 or None")
        if problems:
            raise ClassifierError("invalid classifier settings: " + "; ".join(problems))

    @classmethod
    def official(cls, **overrides: Any) -> ClassifierSettings:
        """CaloChallenge ``evaluate.py`` settings (2025-01-02): 3 x 2048 LeakyReLU network, dropout 0,
        Adam 2e-4, batch 1000, 50 epochs without early stopping, best epoch by validation accuracy,
        unstandardised inputs, one run on all showers, split 60/20/20."""
        base: dict[str, Any] = dict(
            hidden=(2048, 2048, 2048), dropout=0.0, lr=2e-4, batch_size=1000, epochs=50, n_runs=1,
            patience=None, select_on="accuracy", standardize=False, max_showers_per_side=None,
            split=(0.6, 0.2, 0.2),
        )  # fmt: skip
        return cls(**{**base, **overrides})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ClassifierSettings:
        """Settings from a parsed YAML/JSON mapping; unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ClassifierError(f"unknown classifier setting(s) {unknown}; known: {sorted(known)}")
        tuples = {"hidden", "split", "cnn_channels"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in values.items()})


@dataclass(frozen=True)
class ClassifierResult:
    """Outcome of :func:`run_classifier`.

    ``ref_scores`` and ``gen_scores`` are the calibrated test-set probabilities of being generated,
    for reference and generated showers, concatenated over all runs (for plotting).
    ``best_epochs`` are the kept epochs and ``epochs_trained`` the epochs run before stopping, per run;
    ``n_train``, ``n_val`` and ``n_test`` count showers of both sides in one run; ``weighted`` says
    whether the generated showers carried weights.
    """

    kind: str
    auc_mean: float
    auc_std: float
    jsd_mean: float
    jsd_std: float
    aucs: list[float]
    jsds: list[float]
    best_epochs: list[int]
    epochs_trained: list[int]
    settings: ClassifierSettings
    ref_scores: np.ndarray = field(repr=False)
    gen_scores: np.ndarray = field(repr=False)
    n_train: int
    n_val: int
    n_test: int
    weighted: bool = False

    def to_dict(self, *, include_scores: bool = False) -> dict[str, Any]:
        """JSON-ready summary; the score arrays only when ``include_scores``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["settings"] = dataclasses.asdict(self.settings)
        scores = {"ref_scores": self.ref_scores.tolist(), "gen_scores": self.gen_scores.tolist()}
        return {k: v for k, v in out.items() if k not in scores} | (scores if include_scores else {})


def low_level_inputs(
    energies: np.ndarray, showers: np.ndarray, *, threshold: float = 0.0, out: np.ndarray | None = None
) -> np.ndarray:
    """Official low-level classifier inputs ``[log10(E_inc / MeV), voxels / E_inc]``, in float32.

    As ``prepare_low_data_for_classifier`` of the official ``evaluate.py``: voxels below ``threshold``
    are zeroed, then divided by the incident energy, all in float32.

    Args:
        energies: incident energies ``(N,)`` or ``(N, 1)`` in MeV, positive.
        showers: voxel energies ``(N, voxels)`` in MeV.
        threshold: per-voxel threshold in MeV (the evaluation passes the geometry's).
        out: optional ``(N, 1 + voxels)`` float32 destination (e.g. rows of a larger array), written in
            place so that a large sample is stacked chunk by chunk without copies.

    Returns:
        ``(N, 1 + voxels)`` float32 (``out`` when given).
    """
    e = np.asarray(energies, dtype=np.float32).reshape(-1, 1)
    showers = np.asarray(showers)
    if showers.ndim != 2 or showers.shape[0] != e.shape[0]:
        raise ClassifierError(f"need showers (N, voxels) for {e.shape[0]} energies, got shape {showers.shape}")
    if not np.all(np.isfinite(e) & (e > 0)):
        raise ClassifierError("incident energies must be finite and positive (MeV)")
    shape = (e.shape[0], 1 + showers.shape[1])
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ClassifierError(f"out must be a float32 array of shape {shape}, got {out.dtype} {out.shape}")
    out[:, :1] = np.log10(e.astype(np.float64))  # float64: numpy's float32 log10 differs between versions by 1 ulp
    voxels = out[:, 1:]
    np.copyto(voxels, showers, casting="same_kind")
    voxels[voxels < np.float32(threshold)] = 0.0
    np.divide(voxels, e, out=voxels)
    return out


def stack_low_level(
    chunks: Iterable[tuple[np.ndarray, np.ndarray]], n: int, n_voxels: int, *, threshold: float = 0.0
) -> np.ndarray:
    """Low-level inputs of the first ``n`` showers of ``(energies, showers)`` chunks, ``(n, 1 + n_voxels)``
    float32, written chunk by chunk into one array: memory is that array plus one chunk (100k DS2
    showers: 2.6 GB; the official preparation keeps several float copies of every sample)."""
    out = np.empty((n, 1 + n_voxels), np.float32)
    row = 0
    for energies, showers in chunks:
        take = min(len(showers), n - row)
        low_level_inputs(np.asarray(energies)[:take], showers[:take], threshold=threshold, out=out[row : row + take])
        row += take
        if row == n:
            return out
    raise ClassifierError(f"the chunks hold only {row} showers, {n} were asked for")


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
    ref, gen = _check_inputs(kind, reference_inputs, generated_inputs, geometry)
    gen_w = None if generated_weights is None else _check_weights(generated_weights, len(gen))
    n_side = min(len(ref), len(gen), settings.max_showers_per_side or len(ref))
    n_train, n_val = (int(f * n_side) for f in settings.split[:2])
    runs = range(settings.n_runs)
    if progress:
        from tqdm.auto import tqdm

        runs = tqdm(runs, desc=kind, unit="run")
    outcomes = []
    with _torch_threads(settings.num_threads):
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


class FittedClassifier(NamedTuple):
    """A trained network of :func:`fit_classifier` (evaluation mode) with its kept and last epochs."""

    model: nn.Module
    best_epoch: int
    epochs_trained: int


def fit_classifier(
    kind: str,
    reference_inputs: np.ndarray,
    generated_inputs: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    settings: ClassifierSettings | None = None,
    *,
    seed: int = 0,
    geometry: Geometry | None = None,
) -> FittedClassifier:
    """Train one classifier (reference label 0, generated 1) as one run of :func:`run_classifier`:
    standardised on ``train`` (if the settings say so), epoch kept on ``val``; no calibration.

    Args:
        kind: ``"cls-low"``, ``"cls-high"`` or ``"cnn"``.
        reference_inputs: ``(N_ref, d)`` reference inputs.
        generated_inputs: ``(N_gen, d)`` generated inputs.
        train: rows of the stack ``[reference; generated]`` to train on (``N_ref + i`` is generated row ``i``).
        val: rows of the same stack for epoch selection.
        settings: network and training settings (``n_runs``, ``split`` and ``max_showers_per_side`` unused).
        seed: seed of initialisation, dropout and shuffles.
        geometry: required for ``"cnn"``.
    """
    settings = settings or ClassifierSettings()
    ref, gen = _check_inputs(kind, reference_inputs, generated_inputs, geometry)
    train, val = np.asarray(train, np.int64), np.asarray(val, np.int64)
    with _torch_threads(settings.num_threads):
        stats = _feature_stats(ref, gen, train, settings) if settings.standardize else None
        model = _build_model(kind, ref.shape[1], settings, geometry, seed, stats)
        best_epoch, epochs_trained = _train(model, ref, gen, train, val, settings, seed)
    model.eval()
    return FittedClassifier(model, best_epoch, epochs_trained)


def predict_logits(model: nn.Module, inputs: np.ndarray, settings: ClassifierSettings | None = None) -> np.ndarray:
    """``(N,)`` float32 logits (log-odds of "generated") of a trained network for ``(N, d)`` inputs."""
    settings = settings or ClassifierSettings()
    x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    with _torch_threads(settings.num_threads):
        logits, _ = _logits(model, x, x[:0], np.arange(len(x)), settings)
    return logits.numpy()


# --- inputs -------------------------------------------------------------------------------------
def _check_inputs(
    kind: str, reference: np.ndarray, generated: np.ndarray, geometry: Geometry | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if kind not in KINDS:
        raise ClassifierError(f"unknown classifier kind {kind!r}; choose one of {KINDS}")
    arrays = []
    for name, arr in (("reference", reference), ("generated", generated)):
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim != 2:
            raise ClassifierError(f"{name} inputs must be 2-D (showers, features), got shape {arr.shape}")
        if len(arr) < MIN_SHOWERS_PER_SIDE:
            raise ClassifierError(
                f"{name} inputs hold {len(arr)} showers; the test needs at least {MIN_SHOWERS_PER_SIDE} per side"
            )
        rows = max(1, (16 << 20) // max(1, arr.shape[1]))  # check in blocks: no full-size temporary
        if not all(np.isfinite(arr[i : i + rows]).all() for i in range(0, len(arr), rows)):
            raise ClassifierError(f"{name} inputs contain NaN or infinite values; check the showers and energies")
        arrays.append(torch.from_numpy(np.ascontiguousarray(arr)))
    ref, gen = arrays
    if ref.shape[1] != gen.shape[1]:
        raise ClassifierError(
            f"reference inputs have {ref.shape[1]} features but generated ones {gen.shape[1]}; "
            "build both with the same function and geometry"
        )
    if kind == "cnn":
        if geometry is None:
            raise ClassifierError("the cnn classifier needs geometry= to arrange voxels as (layer, alpha, r)")
        if not geometry.is_regular:
            raise ClassifierError(
                f"the cnn classifier needs a regular geometry (same r bins and alpha count in every layer); "
                f"{geometry.name!r} is irregular, use kind='cls-low' instead"
            )
        if ref.shape[1] != 1 + geometry.n_voxels:
            raise ClassifierError(
                f"cnn inputs need 1 + {geometry.n_voxels} columns for {geometry.name!r} "
                f"(build them with low_level_inputs), got {ref.shape[1]}"
            )
    return ref, gen


def _check_weights(weights: np.ndarray, n: int) -> np.ndarray:
    """``(n,)`` float64 non-negative finite weights with a positive sum, or a :class:`ClassifierError`."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ClassifierError(f"generated weights have shape {w.shape}; expected ({n},), one per generated shower")
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
        raise ClassifierError("generated weights must be finite, non-negative and not all zero")
    return w


def _split_weights(rows: np.ndarray, n_ref: int, gen_weights: np.ndarray | None) -> torch.Tensor | None:
    """Sample weights of ``rows`` of ``[ref; gen]``: 1 for reference rows, generated weights scaled to mean 1."""
    if gen_weights is None:
        return None
    is_gen = rows >= n_ref
    w = np.ones(len(rows), np.float64)
    w[is_gen] = gen_weights[rows[is_gen] - n_ref]
    w[is_gen] /= w[is_gen].mean()
    return torch.from_numpy(w.astype(np.float32))


def _gather(ref: torch.Tensor, gen: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels for ``rows`` of the virtual stack ``[ref; gen]`` (labels 0 and 1)."""
    is_gen = rows >= len(ref)
    x = torch.empty((len(rows), ref.shape[1]), dtype=torch.float32)
    x[torch.from_numpy(~is_gen)] = ref[torch.from_numpy(rows[~is_gen])]
    x[torch.from_numpy(is_gen)] = gen[torch.from_numpy(rows[is_gen] - len(ref))]
    return x, torch.from_numpy(is_gen.astype(np.float32))


# --- networks -----------------------------------------------------------------------------------
class _Dropout(nn.Module):
    """Dropout drawing its mask from an explicit generator (no global random state)."""

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        self.p, self.generator = p, generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep / (1.0 - self.p)


class _Standardize(nn.Module):
    """``(x - mean) / scale`` with fixed per-feature buffers."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("scale", scale.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


MIN_SCALE = 1e-30
"""Smallest per-feature deviation used for standardisation: a smaller one would overflow float32 inputs."""


def _feature_stats(
    ref: torch.Tensor, gen: torch.Tensor, rows: np.ndarray, s: ClassifierSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation of ``rows`` (two passes, float64); deviations too small to
    divide by in float32 (below :data:`MIN_SCALE`, e.g. columns of denormal cell energies) become 1."""
    chunks = range(0, len(rows), s.batch_size)
    total = sum(_gather(ref, gen, rows[i : i + s.batch_size])[0].double().sum(0) for i in chunks)
    mean = total / len(rows)
    squares = sum(((_gather(ref, gen, rows[i : i + s.batch_size])[0].double() - mean) ** 2).sum(0) for i in chunks)
    std = torch.sqrt(squares / len(rows))
    return mean, torch.where(std > MIN_SCALE, std, torch.ones_like(std))


def _mlp(n_in: int, hidden: tuple[int, ...], dropout: float, generator: torch.Generator) -> nn.Sequential:
    """``(Linear, LeakyReLU, Dropout)`` per hidden width, then a linear layer to one logit."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), nn.LeakyReLU(), _Dropout(dropout, generator)]
        n_in = width
    return nn.Sequential(*layers, nn.Linear(n_in, 1))


def _wrap_alpha(v: torch.Tensor) -> torch.Tensor:
    """Pad ``(N, C, layer, alpha, r)`` by one alpha bin on each side, circularly."""
    return torch.cat([v[:, :, :, -1:], v, v[:, :, :, :1]], dim=3).contiguous(memory_format=torch.channels_last_3d)


class _ShowerCNN(nn.Module):
    """Two stride-2 3x3x3 convolutions (circular in alpha, zero-padded in layer and r), then an MLP
    on the flattened maps and log10 E. Input: low-level rows ``(N, 1 + layers * alpha * r)``."""

    def __init__(
        self, shape: tuple[int, int, int], settings: ClassifierSettings, generator: torch.Generator
    ) -> None:
        super().__init__()
        c1, c2 = settings.cnn_channels
        self.shape = shape
        self.conv1 = nn.Conv3d(1, c1, 3, stride=2, padding=(1, 0, 1))
        self.conv2 = nn.Conv3d(c1, c2, 3, stride=2, padding=(1, 0, 1))
        out = shape
        for _ in range(2):
            out = tuple((n - 1) // 2 + 1 for n in out)  # type: ignore[assignment]
        self.head = _mlp(c2 * math.prod(out) + 1, (settings.cnn_hidden,), settings.dropout, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 1:].reshape(-1, 1, *self.shape)
        v = F.leaky_relu(self.conv1(_wrap_alpha(v)))
        v = F.leaky_relu(self.conv2(_wrap_alpha(v)))
        return self.head(torch.cat([v.flatten(1), x[:, :1]], dim=1))


def _build_model(
    kind: str,
    n_features: int,
    settings: ClassifierSettings,
    geometry: Geometry | None,
    seed: int,
    stats: tuple[torch.Tensor, torch.Tensor] | None,
) -> nn.Module:
    """The network for ``kind``, initialised (PyTorch's default scheme) from generators seeded by
    ``seed``, behind a standardisation layer when ``stats`` (mean, scale) are given."""
    dropout_gen = torch.Generator(device=settings.device).manual_seed(derive_seed(seed, 1))
    if kind == "cnn":
        assert geometry is not None  # checked in _check_inputs
        model: nn.Module = _ShowerCNN(geometry.shape, settings, dropout_gen)
    else:
        model = _mlp(n_features, settings.hidden, settings.dropout, dropout_gen)
    init_gen = torch.Generator().manual_seed(derive_seed(seed, 2))
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv3d):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=init_gen)
            bound = 1.0 / math.sqrt(module.weight[0].numel())
            nn.init.uniform_(module.bias, -bound, bound, generator=init_gen)
    if stats is not None:
        model = nn.Sequential(_Standardize(*stats), model)
    model = model.to(settings.device)
    if kind == "cnn":
        model = model.to(memory_format=torch.channels_last_3d)
    return model


# --- training and evaluation --------------------------------------------------------------------
def _logits(
    model: nn.Module, ref: torch.Tensor, gen: torch.Tensor, rows: np.ndarray, s: ClassifierSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels for ``rows`` (evaluation mode, batched)."""
    model.eval()
    outs, labels = [], []
    with torch.inference_mode():
        for start in range(0, len(rows), s.batch_size):
            x, y = _gather(ref, gen, rows[start : start + s.batch_size])
            outs.append(model(x.to(s.device)).squeeze(1).float().cpu())
            labels.append(y)
    return torch.cat(outs), torch.cat(labels)


def _train(
    model: nn.Module,
    ref: torch.Tensor,
    gen: torch.Tensor,
    train: np.ndarray,
    val: np.ndarray,
    s: ClassifierSettings,
    seed: int,
    train_weights: torch.Tensor | None = None,
    val_weights: torch.Tensor | None = None,
) -> tuple[int, int]:
    """Adam on BCE (weighted by the optional per-row weights); loads the best validation epoch into
    ``model``; returns it and the epochs run."""
    optimiser = torch.optim.Adam(model.parameters(), lr=s.lr)
    shuffle_gen = torch.Generator().manual_seed(derive_seed(seed, 3))
    best_score, best_epoch, best_state, stale = -math.inf, 0, None, 0
    for epoch in range(1, s.epochs + 1):
        model.train()
        for batch in torch.randperm(len(train), generator=shuffle_gen).split(s.batch_size):
            x, y = _gather(ref, gen, train[batch.numpy()])
            w = None if train_weights is None else train_weights[batch].to(s.device)
            loss = F.binary_cross_entropy_with_logits(model(x.to(s.device)).squeeze(1), y.to(s.device), weight=w)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        logits, labels = _logits(model, ref, gen, val, s)
        val_loss = F.binary_cross_entropy_with_logits(logits, labels, weight=val_weights).item()
        if not math.isfinite(val_loss):
            raise ClassifierError(f"the classifier's validation loss became {val_loss} at epoch {epoch}; the inputs hold non-finite or extreme values")
        correct = ((logits > 0).float() == labels).float()
        val_acc = (correct.mean() if val_weights is None else (correct * val_weights).sum() / val_weights.sum()).item()
        log.debug("epoch %d: validation loss %.5f, accuracy %.4f", epoch, val_loss, val_acc)
        score = -val_loss if s.select_on == "loss" else val_acc
        if score > best_score:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        if val_acc == 1.0 or (s.patience is not None and stale >= s.patience):
            break
    assert best_state is not None  # the first epoch always improves on -inf
    model.load_state_dict(best_state)
    return best_epoch, epoch


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
    stats = _feature_stats(ref, gen, train, s) if s.standardize else None
    model = _build_model(kind, ref.shape[1], s, geometry, seed, stats)
    train_w, val_w, test_w = (_split_weights(rows, len(ref), gen_weights) for rows in (train, val, test))
    best_epoch, epochs_trained = _train(model, ref, gen, train, val, s, seed, train_w, val_w)
    val_logits, val_labels = _logits(model, ref, gen, val, s)
    test_logits, test_labels = _logits(model, ref, gen, test, s)
    calibrator = IsotonicRegression(y_min=_CALIBRATION_CLIP, y_max=1 - _CALIBRATION_CLIP, out_of_bounds="clip")
    val_sw, test_sw = (None if w is None else w.double().numpy() for w in (val_w, test_w))
    calibrator.fit(torch.sigmoid(val_logits.double()).numpy(), val_labels.numpy(), sample_weight=val_sw)
    probs = calibrator.predict(torch.sigmoid(test_logits.double()).numpy())
    labels = test_labels.numpy()
    auc = float(roc_auc_score(labels, probs, sample_weight=test_sw))
    jsd = jsd_from_probabilities(probs, labels, test_sw)
    log.info("%s run seed %d: best epoch %d, AUC %.4f, JSD %.4f", kind, seed, best_epoch, auc, jsd)
    return _RunOutcome(auc, jsd, probs, labels, best_epoch, epochs_trained)


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op CPU threads."""
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
