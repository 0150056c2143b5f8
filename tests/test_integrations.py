"""Par04 and DDML adapters: the cell permutation by hand, the Par04 ONNX graph against calogen's own showers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import calogen
from calogen.errors import CalogenError
from calogen.geometry import Geometry
from calogen.integrations import par04
from calogen.integrations.ddml import DDMLConfig, make_run_inference

SHIPPED = Path(calogen.__file__).parent / "data" / "pretrained" / "cpu-small-ds2"


# --- conventions -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "ds2"])
def test_par04_order_is_r_then_phi_then_z(name: str) -> None:
    g = Geometry.builtin(name)
    n_z, n_alpha, n_r = g.shape
    showers = np.arange(g.n_voxels, dtype=np.float32)[None]  # each voxel holds its CaloChallenge index
    cells = par04.to_par04_order(showers, g)[0]
    for i_r, i_phi, i_z in [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0), (n_r - 1, n_alpha - 1, n_z - 1), (2, 3, 4)]:
        assert cells[(i_r * n_alpha + i_phi) * n_z + i_z] == g.voxel_index(i_z, i_phi, i_r)
    assert np.array_equal(par04.from_par04_order(cells, g), showers[0])
    assert sorted(par04.par04_permutation(g).tolist()) == list(range(g.n_voxels))


def test_irregular_geometry_has_no_par04_order() -> None:
    with pytest.raises(CalogenError, match="irregular"):
        par04.par04_permutation(Geometry.builtin("ds1-photons"))


def test_input_vectors_follow_par04() -> None:
    latent = np.full((2, 3), 0.5)
    x = par04.vae_input(np.array([10_240.0, 102_400.0]), np.pi / 4, latent)
    assert x.dtype == np.float32 and x.shape == (2, 3 + par04.VAE_CONDITION_SIZE)
    np.testing.assert_allclose(x[:, 3:], [[0.01, 0.5, 0, 1], [0.1, 0.5, 0, 1]], rtol=1e-6)
    y = par04.calodit_input([50_000.0], 0.3, 1.2, geometry="FCCeeCLD")
    np.testing.assert_allclose(y, [[50.0, 0.3, 1.2, 0, 0, 0, 1, 0]], rtol=1e-6)
    with pytest.raises(CalogenError, match="Par04SiW"):
        par04.calodit_input([1.0], 0, 0, geometry="CMS")


# --- the Par04 graph of the shipped model ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return calogen.load(SHIPPED)


@pytest.fixture(scope="module")
def par04_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from calogen.cli import main

    out = tmp_path_factory.mktemp("par04") / "ds2.onnx"
    assert main(["export", str(SHIPPED), "--format", "par04", "-o", str(out)]) == 0
    return out


def test_par04_graph_has_one_input_and_one_output(par04_graph: Path, model) -> None:  # type: ignore[no-untyped-def]
    import onnx

    from calogen.integrations.par04_graph import latent_size

    graph = onnx.load(str(par04_graph)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["output"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == latent_size(model) + 4 == 856 + 6480 + 4


def test_par04_graph_cells_are_calogen_showers_permuted(par04_graph: Path, model) -> None:  # type: ignore[no-untyped-def]
    """Cell (r, phi, z) of the graph, times E, is voxel (layer z, alpha phi, r) of calogen's shower on the same noise."""
    import onnxruntime as ort

    energies = np.array([16_000.0, 64_000.0], dtype=np.float32)  # 1024 GeV / 64 and / 16: exact after Par04's scaling
    noise_energy, noise_shape = model.draw_noise(2, seed=5)
    want = model.sample_with_noise(energies, noise_energy, noise_shape)
    session = ort.InferenceSession(str(par04_graph), providers=["CPUExecutionProvider"])
    run = lambda theta: session.run(["output"], {"input": par04.vae_input(energies, theta, np.hstack([noise_energy, noise_shape]))})[0]  # noqa: E731
    cells = run(np.pi / 2) * energies[:, None]
    n_z, n_alpha, n_r = model.geometry.shape
    grid = cells.reshape(2, n_r, n_alpha, n_z)
    scale = float(np.abs(want).max())
    for i_r, i_phi, i_z in [(0, 0, 10), (0, 7, 12), (3, 15, 20), (8, 2, 44)]:
        np.testing.assert_allclose(grid[:, i_r, i_phi, i_z], want[:, model.geometry.voxel_index(i_z, i_phi, i_r)], atol=1e-5 * scale)
    np.testing.assert_allclose(par04.from_par04_order(cells, model.geometry), want, atol=1e-5 * scale)
    np.testing.assert_allclose(cells.sum(axis=1), want.sum(axis=1), rtol=1e-5)
    assert np.array_equal(run(0.2), run(np.pi / 2))  # the angle is read past: calogen's models ignore direction


# --- DDML -------------------------------------------------------------------------------------------------------
def test_ddml_vae_layout_uses_ddml_latent_as_the_noise(model) -> None:  # type: ignore[no-untyped-def]
    """Par04ExampleVAE's input: latent + [E / 1024 GeV, theta / 90 deg, 0, 1]; answer: cells / E, r -> phi -> z."""
    from calogen.generator import derive_seed

    infer = make_run_inference(DDMLConfig(model=str(SHIPPED), seed=3))
    energies = np.array([16_000.0, 64_000.0], dtype=np.float32)
    noise_energy, noise_shape = model.draw_noise(2, seed=9)
    out = infer([par04.vae_input(energies, 0.3, np.hstack([noise_energy, noise_shape]))])
    assert out.dtype == np.float32 and out.shape == (2 * model.geometry.n_voxels,)
    want = model.sample_with_noise(energies, noise_energy, noise_shape) / energies[:, None]
    np.testing.assert_allclose(out.reshape(2, -1), par04.to_par04_order(want, model.geometry), rtol=1e-6, atol=1e-9)
    short = infer([par04.vae_input(energies[:1], 0.3, np.zeros((1, 10)))[0]])  # another latent size: the noise comes from the seed of call 1
    want = model.sample(energies[:1], seed=derive_seed(3, 1)) / energies[0]
    np.testing.assert_allclose(short, par04.to_par04_order(want, model.geometry)[0], rtol=1e-6, atol=1e-9)


def test_ddml_calodit_layout_returns_mev(model) -> None:  # type: ignore[no-untyped-def]
    from calogen.generator import derive_seed

    infer = make_run_inference(DDMLConfig(model=str(SHIPPED), input_layout="calodit", output_order="calochallenge"))
    out = infer([par04.calodit_input([20.0e3, 50.0e3], 0.0, 1.57)])
    np.testing.assert_array_equal(out.reshape(2, -1), model.sample(np.array([20.0e3, 50.0e3]), seed=derive_seed(0, 0)))
    with pytest.raises(CalogenError, match="no input tensors"):
        infer([])


def test_ddml_config_from_environment() -> None:
    env = {"DDML_MODEL_PATH": "/models/x", "CALOGEN_NFE": "4", "CALOGEN_INPUT_LAYOUT": "calodit", "CALOGEN_OUTPUT_ORDER": "calochallenge"}
    config = DDMLConfig.from_env(env)
    assert (config.model, config.nfe, config.seed, config.input_layout, config.output_order) == ("/models/x", 4, 0, "calodit", "calochallenge")
    assert DDMLConfig.from_env({"CALOGEN_MODEL": "/a", "DDML_MODEL_PATH": "/b"}).model == "/a"
    default = Path(DDMLConfig.from_env({}).model)  # the shipped default model (the tuned one-step student)
    assert default == SHIPPED.with_name("cpu-small-ds2-student").resolve() and DDMLConfig.from_env({}).input_layout == "vae"
    assert calogen.load(default).config.objective == "consistency"
    with pytest.raises(CalogenError, match="CALOGEN_INPUT_LAYOUT"):
        DDMLConfig.from_env({"CALOGEN_INPUT_LAYOUT": "gan"})
    with pytest.raises(CalogenError, match="CALOGEN_NFE"):
        DDMLConfig.from_env({"CALOGEN_NFE": "four"})
