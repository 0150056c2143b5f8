"""Fit the occupancy stage (:mod:`calogen.models.occupancy`) of a trained model to its training showers.

Two steps, both on training showers only:

1. **Count network.** Every training shower gives its ring energies ``T`` and hits per ring ``k``
   (voxels at or above the threshold; a geometry without a readout threshold, such as a cell geometry,
   gets the ``hit_quantile`` of the training voxel energies above 0 as the stage's threshold). :class:`~calogen.models.occupancy.HitCountNet` learns
   ``p(k | T, E_inc)`` by cross-entropy over the possible counts (Adam, cosine learning rate,
   ``val_fraction`` of the showers held out; the weights with the best validation loss are kept).
2. **Spectrum.** The model generates ring energies and logits for ``n_spectrum`` training energies (a
   direction-conditioned model at those showers' directions); counts are drawn from the fitted network, every
   candidate is recentred when ``OccupancyConfig.centre`` is on (new fits of cylindrical geometries), and ``gamma`` and the floor are chosen on a grid to
   minimise the separation power of the voxel-energy spectrum (49 log bins from the threshold, as in
   :mod:`calogen.eval.histograms`) against those training showers: the showers are split into
   ``n_bands`` equal bands of ``ln E_inc``, each band gets its best floor, ``gamma`` (shared)
   minimises the mean over bands, and the floors become nodes at the bands' mean energies. This is
   done for the model's default NFE and for each of ``nfes`` (the logits sharpen with more steps).
   A refiner's logits come from refining FastSim showers of the same energies, simulated by the engine
   recorded in its ``config.json``.

Same data, settings and seed give the same weights.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.models.hit_placement import gumbel, occupy
from calogen.models.occupancy import COUNT_SLACK, OCCUPANCY_FILES, Occupancy, OccupancyConfig, load_occupancy, save_occupancy
from calogen.models.rescale import readout_targets
from calogen.models.voxel_groups import energy_groups, group_sums

if TYPE_CHECKING:
    from calogen.cell_geometry import CellGeometry

__all__ = ["FitSettings", "fit_counts", "fit_occupancy", "fit_spectrum", "hit_threshold", "ring_counts", "spectrum_separation"]


@dataclass(frozen=True)
class FitSettings:
    """Settings of :func:`fit_counts` and :func:`fit_spectrum`.

    Args:
        steps: optimiser steps of the count network.
        batch_size: showers per step.
        lr: peak learning rate (cosine decay to 5%).
        val_fraction: showers held out to pick the best weights.
        eval_every: steps between validation losses.
        seed: initialisation, batches and count noise.
        n_spectrum: showers generated for the floor/gamma grid.
        gammas, floors: the grid (floors in MeV; values below the threshold act as the threshold).
        n_bands: incident-energy bands with their own floor.
        nfes: shape-network NFEs (the model's sampler) that get their own ``gamma`` and floor besides
            the model's default NFE.
        hit_quantile: for a geometry without a readout threshold, the stage's threshold is this quantile of the
            training showers' non-zero voxel energies.
    """

    steps: int = 1500
    batch_size: int = 128
    lr: float = 3e-3
    val_fraction: float = 0.1
    eval_every: int = 100
    seed: int = 0
    n_spectrum: int = 2000
    gammas: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0, 1.25, 1.5, 2.0)
    floors: tuple[float, ...] = (0.0, 0.3, 0.6, 1.0, 1.5, 2.0, 3.0)
    n_bands: int = 3
    nfes: tuple[int, ...] = (1, 2, 4, 8)
    hit_quantile: float = 0.01

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.eval_every, self.n_spectrum, self.n_bands) < 1:
            raise CalogenError("occupancy fit: steps, batch_size, eval_every, n_spectrum and n_bands must be >= 1")
        if not 0 < self.val_fraction < 1 or not self.lr > 0:
            raise CalogenError(f"occupancy fit: need 0 < val_fraction < 1 and lr > 0, got {self.val_fraction}, {self.lr}")
        if not self.gammas or not self.floors or min(self.gammas) <= 0 or min(self.floors) < 0:
            raise CalogenError("occupancy fit: gammas must be positive and floors >= 0, neither empty")
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in self.nfes):
            raise CalogenError(f"occupancy fit: nfes must be integers >= 1, got {self.nfes}")
        if not 0 <= self.hit_quantile < 1:
            raise CalogenError(f"occupancy fit: need 0 <= hit_quantile < 1, got {self.hit_quantile}")


def ring_counts(geometry: Geometry | CellGeometry, showers: np.ndarray, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ring energies ``(N, G)`` MeV (float64) and hits per ring ``(N, G)`` (voxels above 0 and at least ``threshold``,
    default the geometry's) of showers ``(N, voxels)``."""
    groups = energy_groups(geometry, "rings")
    showers = np.asarray(showers, dtype=np.float32)
    hits = (showers >= np.float32(geometry.threshold if threshold is None else threshold)) & (showers > 0)
    return group_sums(showers, groups), np.rint(group_sums(hits.astype(np.float32), groups))


def _loss(occupancy: Occupancy, targets: torch.Tensor, energies: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per shower (summed over rings) of the true counts among the possible ones."""
    logits = occupancy.logits(targets, energies)
    logits = torch.where(occupancy.possible(targets), logits, torch.full_like(logits, -1e9))
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[2]), counts.long().reshape(-1), reduction="none")
    return nll.reshape(counts.shape).sum(dim=1).mean()


def fit_counts(
    occupancy: Occupancy, energies: np.ndarray, showers: np.ndarray, settings: FitSettings = FitSettings(), *, log: Any = None
) -> dict[str, Any]:  # fmt: skip
    """Train ``occupancy.net`` in place on training showers; returns a record (losses, steps, seconds).

    Showers whose ring energies violate the readout (a ring below the threshold) are used as read out:
    their targets pass :func:`~calogen.models.rescale.readout_targets` like generated ones.
    """
    started = time.perf_counter()
    geometry_rings, hits = ring_counts(occupancy.geometry, showers, occupancy.threshold)
    targets = readout_targets(torch.from_numpy(geometry_rings).float(), occupancy.threshold)
    counts = torch.from_numpy(hits).float()
    counts = torch.where(targets > 0, counts.clamp(1, occupancy.config.max_count), torch.zeros_like(counts))
    counts = torch.minimum(counts, torch.floor(targets / (occupancy.threshold * COUNT_SLACK)))
    e = torch.from_numpy(np.asarray(energies, dtype=np.float32).reshape(-1, 1))
    n = e.shape[0]
    gen = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(n, generator=gen)
    n_val = max(1, int(round(settings.val_fraction * n)))
    val, train = order[:n_val], order[n_val:]
    if train.numel() < 1:
        raise CalogenError(f"occupancy fit needs more showers than the validation part, got {n}")
    torch.manual_seed(settings.seed)
    net = occupancy.net.train()
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    best, best_state, history = math.inf, copy.deepcopy(net.state_dict()), []
    for step in range(1, settings.steps + 1):
        lr = settings.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - 1) / settings.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = train[torch.randint(train.numel(), (settings.batch_size,), generator=gen)]
        loss = _loss(occupancy, targets[batch], e[batch], counts[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % settings.eval_every == 0 or step == settings.steps:
            with torch.no_grad():
                v = float(_loss(occupancy, targets[val], e[val], counts[val]))
            history.append({"step": step, "train": loss.item(), "val": v})
            if log is not None:
                log(f"occupancy counts step {step}: train {loss.item():.3f} val {v:.3f}")
            if v < best:
                best, best_state = v, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    net.eval()
    return {"best_val_nll_per_shower": best, "history": history, "n_train": int(train.numel()), "n_val": int(n_val),
            "seconds": time.perf_counter() - started, "settings": dataclasses.asdict(settings)}  # fmt: skip


def spectrum_separation(reference: np.ndarray, generated: np.ndarray, threshold: float) -> float:
    """Separation power of the voxel-energy spectra (49 log bins from the threshold to the reference maximum)."""
    from calogen.eval.separation import separation_from_counts

    ref, gen = reference[reference >= threshold], generated[generated >= threshold]
    top = max(float(ref.max(initial=0.0)), 10 * threshold)
    bins = np.logspace(np.log10(threshold), np.log10(np.float32(top)), 50)
    return separation_from_counts(np.histogram(ref, bins)[0], np.histogram(gen, bins)[0], bins)


def fit_spectrum(
    occupancy: Occupancy, stages: tuple[torch.Tensor, torch.Tensor, torch.Tensor], reference: np.ndarray,
    settings: FitSettings = FitSettings(),
) -> dict[str, Any]:  # fmt: skip
    """Choose ``gamma`` and the floor per energy band (set on ``occupancy.config``) minimising :func:`spectrum_separation`.

    Args:
        occupancy: with a fitted count network.
        stages: ``(targets (N, G) MeV, logits (N, voxels), energies (N, 1) MeV)`` generated by the model.
        reference: the training showers ``(N, voxels)`` MeV of the same energies.
    """
    targets, logits, energies = stages
    t = occupancy.threshold
    gen = torch.Generator().manual_seed(settings.seed + 1)
    targets = readout_targets(targets, t)
    with torch.no_grad():
        counts = occupancy.counts(targets, energies, torch.randn(targets.shape, generator=gen))
        scores = logits + gumbel(torch.randn(logits.shape, generator=gen)) if occupancy.config.placement == "sampled" else None
    log_e = np.log(energies.numpy().reshape(-1).astype(np.float64))
    edges = np.linspace(log_e.min(), log_e.max(), settings.n_bands + 1)
    band = np.clip(np.searchsorted(edges[1:-1], log_e, side="right"), 0, settings.n_bands - 1)
    bands = [np.flatnonzero(band == b) for b in range(settings.n_bands) if (band == b).any()]
    floors = sorted({max(f, t) for f in settings.floors})
    positions = occupancy.positions if occupancy.config.centre else None
    grid: dict[tuple[float, float], list[float]] = {}
    for gamma in settings.gammas:
        for floor in floors:
            with torch.no_grad():
                x = occupy(logits, targets, counts, occupancy.groups, occupancy.members, threshold=t, floor=floor, gamma=gamma,
                           positions=positions, scores=scores).numpy()  # fmt: skip
            grid[(gamma, floor)] = [spectrum_separation(reference[rows], x[rows], t) for rows in bands]
    def best_floors(gamma: float) -> list[tuple[float, float]]:
        return [min(((grid[(gamma, f)][b], f) for f in floors)) for b in range(len(bands))]
    gamma = min(settings.gammas, key=lambda g: float(np.mean([s for s, _ in best_floors(g)])))
    chosen = [f for _, f in best_floors(gamma)]
    nodes = [float(np.exp(log_e[rows].mean())) for rows in bands]
    config = dataclasses.replace(occupancy.config, gamma=gamma, floor=tuple(chosen), floor_energies=tuple(nodes) if len(chosen) > 1 else ())
    occupancy.configure(config)
    with torch.no_grad():
        x = occupy(logits, targets, counts, occupancy.groups, occupancy.members, threshold=t,
                   floor=occupancy.floor_at_energies(energies.to(targets.dtype)), gamma=gamma, positions=positions,
                   scores=scores).numpy()  # fmt: skip
    return {
        "gamma": gamma, "floor": list(config.floor), "floor_energies": list(config.floor_energies),
        "separation": spectrum_separation(reference, x, t),
        "separation_per_band": [spectrum_separation(reference[rows], x[rows], t) for rows in bands],
        "grid": [[g, f, *s] for (g, f), s in grid.items()],
    }  # fmt: skip


def _stages(
    model: Any, nfe: int, energies: np.ndarray, noise: tuple[np.ndarray, np.ndarray], source: np.ndarray | None = None,
    directions: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Ring energies, voxel logits and incident energies the model generates at ``nfe`` (:func:`fit_spectrum`'s
    ``stages``); a refiner's shape flow starts at the FastSim showers ``source (N, voxels)`` MeV. A model conditioned on
    the direction generates at ``directions (N, 2)`` rad (None: its default direction)."""
    from calogen.models.generator import EVALUATION_CHUNK

    module = model.export_module(nfe, model.sampler)
    inputs = (energies, *noise) if source is None else (energies, *noise, source)
    parts: list[tuple[torch.Tensor, torch.Tensor]] = []
    with torch.inference_mode():
        for s in range(0, energies.shape[0], EVALUATION_CHUNK):
            sl = slice(s, s + EVALUATION_CHUNK)
            d = None if directions is None else torch.from_numpy(np.ascontiguousarray(directions[sl], dtype=np.float32))
            targets, _, logits = module.stages(*(torch.from_numpy(a[sl]) for a in inputs), directions=d)
            parts.append((targets, logits))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), torch.from_numpy(energies)


def _flow_and_source(model: Any, energies: np.ndarray, seed: int) -> tuple[Any, np.ndarray | None]:
    """The flow model behind ``model`` and, for a refiner (a :class:`~calogen.hybrid.HybridGenerator`), FastSim
    showers of ``energies (N, 1)`` MeV from its recorded engine (seed ``derive_seed(seed, 0)``); None for a plain model."""
    refiner = getattr(model, "refiner", None)
    if refiner is None:
        return model, None
    from calogen.generator import derive_seed

    return refiner.model, np.asarray(model.engine().sample(energies.reshape(-1), seed=derive_seed(seed, 0)), dtype=np.float32)


def hit_threshold(geometry: Geometry | CellGeometry, showers: np.ndarray, quantile: float) -> float:
    """The stage's threshold (MeV) for ``geometry``: 0 (its own readout threshold) when it has one, else the ``quantile``
    of the non-zero voxel energies of ``showers (N, voxels)``."""
    if geometry.threshold > 0:
        return 0.0
    showers = np.asarray(showers)
    deposits = showers[showers > 0]
    if deposits.size == 0:
        raise CalogenError("occupancy fit: the training showers hold no energy")
    return float(np.quantile(deposits.astype(np.float64), quantile))


def _counts_of(directory: str | os.PathLike[str], geometry: Geometry | CellGeometry) -> tuple[Occupancy, dict[str, Any]]:
    """The occupancy stage of another model directory and its count-network record (:func:`fit_occupancy` ``counts_from``)."""
    import json

    occupancy = load_occupancy(directory, geometry)
    if occupancy is None:
        raise CalogenError(f"--counts-from {directory} has no occupancy stage; fit one there first")
    record = json.loads((Path(directory) / OCCUPANCY_FILES[0]).read_text()).get("provenance", {}).get("counts", {})
    return occupancy, {**record, "from": str(directory)}


def fit_occupancy(
    model_dir: str | os.PathLike[str], data: str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None,
    n_showers: int | None = None, config: OccupancyConfig = OccupancyConfig(), settings: FitSettings = FitSettings(),
    log: Any = None, counts_from: str | os.PathLike[str] | None = None, centre: bool | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Fit the occupancy stage of a trained model to its training showers and add it to the model directory.

    Args:
        model_dir: a model directory (:func:`calogen.load`). For a refiner the spectra are fitted on its own
            refined showers, started from FastSim showers its recorded engine simulates for the training energies.
        data: its training showers (CaloChallenge HDF5); the first ``n_showers`` (default: all) are used.
        out: write a copy of the model (without its training checkpoints) with the stage here (default: add it to ``model_dir``).
        n_showers: showers to use.
        config: network settings (``max_count`` is set to the geometry's most alpha bins, ``centre`` to the
            ``centre`` argument); its ``placement`` also applies to a ``counts_from`` stage.
        settings: fit settings.
        log: callable receiving progress lines.
        counts_from: take the count network from the occupancy stage of this model directory (same geometry;
            for a student, its teacher: the counts depend on ring energies alone) and fit only the spectra.
        centre: ``OccupancyConfig.centre`` of the new stage; None: on for a cylindrical geometry, off for a cell
            geometry (on ``hgcal-like`` the tilt pushed the spectrum fit to its grid's edge: docs/geometries.md).

    Returns:
        the provenance record written into ``occupancy.json``.
    """
    from calogen.io import ShowerFile
    from calogen.models.generator import load

    model = load(model_dir)
    with ShowerFile(data, model.geometry) as f:
        n = f.n_showers if n_showers is None else min(n_showers, f.n_showers)
        showers = f.read(0, n)
    energies = showers.energies.reshape(-1)
    config = dataclasses.replace(config, centre=model.geometry.kind != "cells" if centre is None else centre)
    if counts_from is None:
        max_count = int(np.bincount(energy_groups(model.geometry, "rings")).max())  # the largest ring
        threshold = hit_threshold(model.geometry, showers.showers, settings.hit_quantile)
        torch.manual_seed(settings.seed)
        occupancy = Occupancy(model.geometry, dataclasses.replace(config, max_count=max_count, threshold=threshold))
        counts_record = fit_counts(occupancy, energies, showers.showers, settings, log=log)
    else:
        occupancy, counts_record = _counts_of(counts_from, model.geometry)
        occupancy.configure(dataclasses.replace(occupancy.config, centre=config.centre, placement=config.placement))
    m = min(settings.n_spectrum, n)
    e = energies[:m].astype(np.float32).reshape(-1, 1)
    flow, source = _flow_and_source(model, e, settings.seed)
    noise = flow.draw_noise(m, seed=settings.seed)
    directions = showers.directions[:m] if source is None and flow.config.directions and showers.directions is not None else None
    default = f"{model.sampler}:{model.nfe}"
    records: dict[str, dict[str, Any]] = {}
    for nfe in [*sorted(set(settings.nfes) - {model.nfe}), model.nfe]:  # the default last: it stays configured
        key = f"{model.sampler}:{nfe}"
        record = records[key] = fit_spectrum(occupancy, _stages(flow, nfe, e, noise, source, directions), showers.showers[:m], settings)
        if log is not None:
            log(f"occupancy spectrum at NFE {nfe}: gamma {record['gamma']}, floors {record['floor']} MeV at "
                f"{record['floor_energies']} MeV, separation {record['separation']:.4f} on {m} training showers")  # fmt: skip
    spectra = {key: {"gamma": r["gamma"], "floor": r["floor"]} for key, r in records.items() if key != default}
    occupancy.configure(dataclasses.replace(occupancy.config, spectra=spectra))
    target = Path(model_dir if out is None else out)
    if out is not None:
        if target.exists() and any(target.iterdir()):
            raise CalogenError(f"--out {target} exists and is not empty; choose a new directory")
        shutil.copytree(model_dir, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*OCCUPANCY_FILES, "checkpoints"))
    provenance = {
        "data": str(data), "n_showers": n, "model_nfe": model.nfe, "model_sampler": model.sampler, "threshold": occupancy.threshold,
        "counts": counts_record, "spectrum": records[default], "spectra": records,
    }  # fmt: skip
    save_occupancy(target, occupancy, provenance)
    return provenance
