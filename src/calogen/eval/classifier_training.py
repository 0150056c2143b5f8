"""Train one classifier network (Adam on BCE, best validation epoch kept) and compute its logits."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from calogen.eval.classifier_inputs import check_inputs, gather
from calogen.eval.classifier_nets import build_model, feature_stats
from calogen.eval.classifier_settings import ClassifierError, ClassifierSettings
from calogen.generator import derive_seed
from calogen.geometry import Geometry

__all__ = ["FittedClassifier", "batched_logits", "fit_classifier", "predict_logits", "torch_threads", "train_network"]

log = logging.getLogger(__name__)


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
    """Train one classifier (reference label 0, generated 1) as one run of
    :func:`~calogen.eval.classifier.run_classifier`: standardised on ``train`` (if the settings say so),
    epoch kept on ``val``; no calibration.

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
    ref, gen = check_inputs(kind, reference_inputs, generated_inputs, geometry)
    train, val = np.asarray(train, np.int64), np.asarray(val, np.int64)
    with torch_threads(settings.num_threads):
        stats = feature_stats(ref, gen, train, settings) if settings.standardize else None
        model = build_model(kind, ref.shape[1], settings, geometry, seed, stats)
        best_epoch, epochs_trained = train_network(model, ref, gen, train, val, settings, seed)
    model.eval()
    return FittedClassifier(model, best_epoch, epochs_trained)


def predict_logits(model: nn.Module, inputs: np.ndarray, settings: ClassifierSettings | None = None) -> np.ndarray:
    """``(N,)`` float32 logits (log-odds of "generated") of a trained network for ``(N, d)`` inputs."""
    settings = settings or ClassifierSettings()
    x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    with torch_threads(settings.num_threads):
        logits, _ = batched_logits(model, x, x[:0], np.arange(len(x)), settings)
    return logits.numpy()


def batched_logits(
    model: nn.Module, ref: torch.Tensor, gen: torch.Tensor, rows: np.ndarray, s: ClassifierSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels for ``rows`` (evaluation mode, batched)."""
    model.eval()
    outs, labels = [], []
    with torch.inference_mode():
        for start in range(0, len(rows), s.batch_size):
            x, y = gather(ref, gen, rows[start : start + s.batch_size])
            outs.append(model(x.to(s.device)).squeeze(1).float().cpu())
            labels.append(y)
    return torch.cat(outs), torch.cat(labels)


def train_network(
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
            x, y = gather(ref, gen, train[batch.numpy()])
            w = None if train_weights is None else train_weights[batch].to(s.device)
            loss = F.binary_cross_entropy_with_logits(model(x.to(s.device)).squeeze(1), y.to(s.device), weight=w)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        logits, labels = batched_logits(model, ref, gen, val, s)
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


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
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
