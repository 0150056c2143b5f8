"""Fixtures of the fault-injection tests: a small shower file, a two-step model and a CLI runner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from _model_data import one_thread  # noqa: F401  (fixture for the tests here)
from calogen.cli import main
from calogen.geometry import Geometry
from calogen.io import write_showers

TINY = Geometry.builtin("tiny")


@pytest.fixture(scope="session")
def shower_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 random tiny-geometry showers between 1 and 100 GeV."""
    rng = np.random.default_rng(0)
    energies = np.exp(rng.uniform(np.log(1e3), np.log(1e5), (300, 1))).astype(np.float32)
    weights = rng.gamma(0.5, 1.0, (300, TINY.n_voxels)) * (rng.random((300, TINY.n_voxels)) < 0.6)
    showers = (energies * weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    path = tmp_path_factory.mktemp("data") / "showers.h5"
    write_showers(path, energies, showers)
    return path


@pytest.fixture(scope="session")
def tiny_model(shower_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory trained for two steps on :func:`shower_file`."""
    import torch

    from calogen.train.loop import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(shower_file, "tiny", "tiny", tmp_path_factory.mktemp("model") / "m", max_steps=2).directory
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str]]:
    """Run ``calogen ARGS`` in this process; returns the exit status and stderr."""

    def run(*argv: object) -> tuple[int, str]:
        capsys.readouterr()
        status = main([str(a) for a in argv])
        return status, capsys.readouterr().err

    return run
