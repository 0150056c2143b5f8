"""Synthetic showers for the model tests: a Gamma longitudinal profile and an exponential radial profile."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from calogen.geometry import Geometry


def toy_showers(geometry: Geometry, n: int, *, seed: int, e_range: tuple[float, float] = (1e3, 1e5)) -> tuple[np.ndarray, np.ndarray]:
    """``n`` showers ``(n, voxels)`` MeV with log-uniform energies ``(n, 1)`` MeV in ``e_range``."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(*np.log(e_range), (n, 1)))
    depth = np.array([0.5 * sum(geometry.layers[i].z_range) for i in geometry.voxel_layer]) / 10.0
    t_max = 1.0 + 0.3 * np.log(e / 1e3) + rng.normal(0, 0.2, (n, 1))
    longitudinal = depth**2 * np.exp(-2 * depth / t_max)
    radial = np.exp(-geometry.voxel_r / rng.uniform(6, 10, (n, 1))) * geometry.voxel_area
    weights = longitudinal * radial * rng.gamma(4.0, 0.25, (n, geometry.n_voxels))
    showers = e * weights / weights.sum(axis=1, keepdims=True)
    showers[showers < 0.05 * geometry.threshold] = 0
    return e.astype(np.float32), showers.astype(np.float32)


@pytest.fixture
def one_thread():
    """Run torch on one thread (the test machine is shared), restoring the setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_directed_tiny(root: Path) -> Path:
    """A tiny model conditioned on the direction (geometry ``tiny``), trained 5 steps on one thread on 200 toy showers
    at random directions (theta up to 0.6 rad); returns its directory ``root / "model"``."""
    import torch

    from calogen.io import write_showers
    from calogen.train.config import Preset
    from calogen.train.loop import train

    geometry = Geometry.builtin("tiny")
    e, v = toy_showers(geometry, 200, seed=0)
    rng = np.random.default_rng(1)
    d = np.stack([rng.uniform(0, 0.6, 200), rng.uniform(-math.pi, math.pi, 200)], axis=1).astype(np.float32)
    write_showers(root / "train.h5", e, v, directions=d)
    settings = {"model": {"directions": True}, "train": {"max_steps": 5, "eval_every": 5, "checkpoint_every": 5}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(root / "train.h5", geometry, Preset.from_dict("directed", settings, base=Preset.resolve("tiny")), root / "model")
    finally:
        torch.set_num_threads(threads)
    return root / "model"
