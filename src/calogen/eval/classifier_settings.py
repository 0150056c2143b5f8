"""Settings and result of the classifier two-sample test (:mod:`calogen.eval.classifier`).

:class:`ClassifierSettings` holds the network, training and repetition settings: calogen's fast
standardised network by default, the CaloChallenge protocol from :meth:`ClassifierSettings.official`.
:class:`ClassifierResult` is what a test returns. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from calogen.errors import CalogenError

__all__ = ["KINDS", "MIN_SHOWERS_PER_SIDE", "ClassifierError", "ClassifierResult", "ClassifierSettings"]

KINDS: tuple[str, ...] = ("cls-low", "cls-high", "cnn")
"""Classifier kinds accepted by :func:`~calogen.eval.classifier.run_classifier`."""

MIN_SHOWERS_PER_SIDE = 50
"""Fewest showers per side that leave every split with both classes."""


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
    """Outcome of :func:`~calogen.eval.classifier.run_classifier`.

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
