"""The Par04 graph and the DDML backend of a direction-conditioned model: Par04's polar angle becomes calogen's incident direction."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from _model_data import one_thread, train_directed_tiny  # noqa: F401

from calogen.errors import CalogenError
from calogen.integrations.ddml import DDMLConfig, make_run_inference
from calogen.integrations.par04 import calodit_input, from_par04_order, layer_direction, par04_directions, to_par04_order, vae_input
from calogen.integrations.par04_graph import PAR04_INPUT, PAR04_OUTPUT, export_par04
from calogen.models.generator import FlowModel, load
from calogen.models.preprocess import direction_features

pytestmark = pytest.mark.usefixtures("one_thread")

ENERGIES = np.array([4_000.0, 16_000.0, 64_000.0], dtype=np.float32)
"""1024 GeV / 256, / 64 and / 16 (MeV): exact in float32 after Par04's division."""
FORWARD, BACKWARD = 1.0, 2.0
"""Two Par04 angles (rad to the beam axis): calogen theta 0.571 at phi pi, and 0.429 at phi 0."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model conditioned on the direction, trained a few steps on toy showers at random directions."""
    return train_directed_tiny(tmp_path_factory.mktemp("par04-directions"))


@pytest.fixture(scope="module")
def model(model_dir: Path) -> FlowModel:
    directed = load(model_dir)
    assert directed.config.directions and directed.default_direction == (0.0, 0.0)
    return directed


@pytest.fixture(scope="module")
def graph(model: FlowModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("par04-graph") / "directed.onnx"
    check = export_par04(model, path)
    assert check is not None and check.max_rel_diff <= 1e-5  # checked at Par04 angles pi/2 +- pi/4
    return path


def _run(graph: Path, model: FlowModel, theta: float, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The graph's showers (MeV, CaloChallenge order) at Par04 angle ``theta``, and ``sample_with_noise`` on the same noise."""
    noise_energy, noise_shape = model.draw_noise(ENERGIES.size, seed=seed)
    x = vae_input(ENERGIES, theta, np.hstack([noise_energy, noise_shape]))
    cells = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run([PAR04_OUTPUT], {PAR04_INPUT: x})[0]
    want = model.sample_with_noise(ENERGIES, noise_energy, noise_shape, directions=par04_directions(theta, ENERGIES.size))
    return from_par04_order(cells * ENERGIES[:, None], model.geometry), want


def test_graph_follows_the_par04_angle(graph: Path, model: FlowModel) -> None:
    got = {}
    for theta in (FORWARD, BACKWARD):
        got[theta], want = _run(graph, model, theta)
        assert np.abs(got[theta] - want).max() <= 1e-5 * np.abs(want).max()
    # the angle changes the showers by far more than the graph's error (6e-3 against 2e-7 of the largest cell, 5 training steps)
    assert np.abs(got[FORWARD] - got[BACKWARD]).max() > 1e-3 * np.abs(got[FORWARD]).max()


def test_graph_at_normal_incidence_is_the_default_direction(graph: Path, model: FlowModel) -> None:
    got, _ = _run(graph, model, math.pi / 2)
    noise_energy, noise_shape = model.draw_noise(ENERGIES.size, seed=3)
    want = model.sample_with_noise(ENERGIES, noise_energy, noise_shape)  # no direction: the default, normal incidence
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize(
    ("theta_p", "theta", "phi"),
    [(math.pi / 2, 0.0, 0.0), (math.pi / 3, math.pi / 6, math.pi), (2 * math.pi / 3, math.pi / 6, 0.0), (0.1, math.pi / 2 - 0.1, math.pi)],
)
def test_par04_angle_to_layer_direction(theta_p: float, theta: float, phi: float) -> None:
    d = par04_directions(theta_p, 2)
    np.testing.assert_allclose(d, [[theta, phi]] * 2, atol=1e-12)
    unit = direction_features(torch.as_tensor(d)).numpy()
    np.testing.assert_allclose(unit, [[-math.cos(theta_p), 0.0, math.sin(theta_p)]] * 2, atol=1e-12)  # leans towards alpha = 0 past pi/2
    np.testing.assert_allclose(np.stack(layer_direction(np.array([theta_p])), axis=1), [[theta, phi]], atol=1e-12)


@pytest.mark.parametrize("theta_p", [0.0, math.pi, -0.2, 3.5, math.nan])
def test_par04_angle_along_the_beam_is_refused(theta_p: float) -> None:
    with pytest.raises(CalogenError, match=r"does not enter a barrel; need 0 < theta < pi"):
        par04_directions(theta_p, 1)
    with pytest.raises(CalogenError, match="one per shower"):
        par04_directions(np.full(2, math.pi / 2), 3)


# --- DDML -------------------------------------------------------------------------------------------------------
def test_ddml_vae_layout_generates_at_the_par04_angle(model_dir: Path, model: FlowModel) -> None:
    """DDML's latent is the noise and its angle the direction: the answer equals ``sample_with_noise`` at that direction."""
    infer = make_run_inference(DDMLConfig(model=str(model_dir)))
    noise_energy, noise_shape = model.draw_noise(ENERGIES.size, seed=5)
    got = {}
    for theta in (FORWARD, BACKWARD):
        got[theta] = infer([vae_input(ENERGIES, theta, np.hstack([noise_energy, noise_shape]))]).reshape(ENERGIES.size, -1)
        want = model.sample_with_noise(ENERGIES, noise_energy, noise_shape, directions=par04_directions(theta, ENERGIES.size))
        np.testing.assert_allclose(got[theta], to_par04_order(want / ENERGIES[:, None], model.geometry), rtol=1e-6, atol=1e-9)
    assert np.abs(got[FORWARD] - got[BACKWARD]).max() > 1e-3 * np.abs(got[FORWARD]).max()  # the angle is not read past


def test_ddml_calodit_layout_generates_at_the_par04_angle(model_dir: Path, model: FlowModel) -> None:
    from calogen.generator import derive_seed

    infer = make_run_inference(DDMLConfig(model=str(model_dir), input_layout="calodit", output_order="calochallenge", seed=4))
    thetas = np.array([FORWARD, BACKWARD, math.pi / 2])
    got = infer([calodit_input(ENERGIES, 0.3, thetas)]).reshape(ENERGIES.size, -1)
    sent = thetas.astype(np.float32)  # DDML's tensors are float32
    want = model.sample(ENERGIES, seed=derive_seed(4, 0), directions=par04_directions(sent, ENERGIES.size))
    np.testing.assert_array_equal(got, want)
    with pytest.raises(CalogenError, match="does not enter a barrel"):
        infer([calodit_input(ENERGIES[:1], 0.0, 0.0)])
    with pytest.raises(CalogenError, match="too short"):
        infer([np.array([[50.0, 0.0]], dtype=np.float32)])
