"""Occupancy stage: exact counts and energies, count sampling, fitting, files, ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from calogen.geometry import Geometry
from calogen.models.hit_placement import floor_at, keep_largest, occupy
from calogen.models.occupancy import Occupancy, OccupancyConfig, OccupancyError, load_occupancy, save_occupancy
from calogen.models.rescale import group_members, group_totals, readout_targets
from calogen.models.voxel_groups import energy_groups
from calogen.train.occupancy import FitSettings, fit_counts, fit_spectrum, ring_counts

TINY = Geometry.builtin("tiny")
T = float(TINY.threshold)


def _rings(geometry: Geometry = TINY) -> tuple[torch.Tensor, torch.Tensor]:
    groups = energy_groups(geometry, "rings")
    return torch.from_numpy(groups), torch.from_numpy(group_members(groups))


def _mc_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Showers whose hits per ring grow with the incident energy and whose hits hold ~1-10 MeV."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n)).astype(np.float32)
    p = np.clip(0.05 + 0.25 * np.log10(e / 1e3), 0, 1)[:, None] * np.exp(-np.arange(TINY.n_voxels) % 4 / 2.0)[None]
    hit = rng.random((n, TINY.n_voxels)) < p
    return e, np.where(hit, rng.lognormal(1.0, 0.5, hit.shape), 0).astype(np.float32)


def test_keep_largest_keeps_exactly_the_largest():
    groups, members = _rings()
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(8, TINY.n_voxels, generator=g)
    scores[0, :3] = 1.0  # ties
    sizes = torch.bincount(groups)
    counts = torch.floor(torch.rand(8, sizes.numel(), generator=g) * (sizes + 1)).clamp(max=sizes.float())
    keep = keep_largest(scores, counts, groups, members)
    assert torch.equal(group_totals(keep.float(), groups, sizes.numel()), counts)
    for b in range(1, 8):  # every kept score is at least every dropped one of its ring
        for r in range(sizes.numel()):
            s, k = scores[b, groups == r], keep[b, groups == r]
            if k.any() and (~k).any():
                assert s[k].min() >= s[~k].max()


def test_occupy_conserves_ring_energies_exactly_and_respects_threshold():
    groups, members = _rings()
    g = torch.Generator().manual_seed(1)
    n_groups = int(groups.max()) + 1
    logits = 3 * torch.randn(16, TINY.n_voxels, generator=g) - 8
    logits[0] = -200.0  # sigmoid underflows to 0: the ring shares equally
    targets = readout_targets(torch.rand(16, n_groups, generator=g) ** 4 * 50, T)
    sizes = torch.bincount(groups).float()
    most = torch.minimum(torch.floor(targets / (T * (1 + 1e-5))), sizes)
    counts = torch.where(targets > 0, torch.ceil(torch.rand(16, n_groups, generator=g) * most).clamp_min(1), torch.zeros_like(targets))
    for floor, gamma in ((0.0, 1.0), (1.0, 0.5), (5.0, 0.3)):
        x = occupy(logits, targets, counts, groups, members, threshold=T, floor=floor, gamma=gamma)
        sums = group_totals(x.double(), groups, n_groups)
        assert torch.allclose(sums, targets.double(), rtol=1e-6, atol=0)
        assert ((x == 0) | (x >= T)).all()
        assert torch.equal(group_totals((x > 0).float(), groups, n_groups), counts)
        base = torch.minimum(torch.full_like(targets, max(floor, T)), targets / counts.clamp_min(1))[:, groups]
        assert (x[x > 0] >= base[x > 0] * (1 - 1e-6)).all()  # every hit holds at least the floor the ring allows


def test_counts_are_possible_and_reproducible_from_the_noise():
    torch.manual_seed(0)
    occ = Occupancy(TINY, OccupancyConfig(width=8, depth=1, max_count=6)).eval()
    g = torch.Generator().manual_seed(2)
    targets = readout_targets(torch.rand(32, occ.n_groups, generator=g) ** 3 * 5, T)
    e, noise = torch.full((32, 1), 1e4), torch.randn(32, occ.n_groups, generator=g)
    with torch.no_grad():
        k = occ.counts(targets, e, noise)
        assert torch.equal(k, occ.counts(targets, e, noise))
        possible = occ.possible(targets)
        assert possible.gather(2, k.long()[:, :, None]).all()
        assert ((k == 0) == (targets == 0)).all()
        showers = occ(torch.randn(32, TINY.n_voxels, generator=g), targets, e, noise)
    assert torch.allclose(group_totals(showers.double(), occ.groups, occ.n_groups), targets.double(), rtol=1e-6, atol=0)


def test_fit_learns_counts_deterministically_and_fits_the_spectrum():
    e, showers = _mc_like(400, seed=3)
    settings = FitSettings(steps=400, batch_size=64, lr=1e-2, eval_every=50, n_spectrum=100, gammas=(0.5, 1.0), floors=(0.0, 1.0), n_bands=2)
    fitted = []
    for _ in range(2):
        torch.manual_seed(0)
        occ = Occupancy(TINY, OccupancyConfig(width=16, depth=1, max_count=6))
        record = fit_counts(occ, e, showers, settings)
        fitted.append(occ)
    first, last = record["history"][0]["val"], record["best_val_nll_per_shower"]
    assert last < first
    assert all(torch.equal(a, b) for a, b in zip(fitted[0].net.state_dict().values(), fitted[1].net.state_dict().values()))
    # counts drawn for the MC's own ring energies reproduce its mean hits per shower at low and high energy
    rings, hits = ring_counts(TINY, showers)
    targets = readout_targets(torch.from_numpy(rings).float(), T)
    with torch.no_grad():
        k = occ.counts(targets, torch.from_numpy(e)[:, None], torch.randn(targets.shape, generator=torch.Generator().manual_seed(5)))
    for sel in (e < 5e3, e > 2e4):
        assert abs(float(k[sel].sum(1).mean()) / float(hits[sel].sum(1).mean()) - 1) < 0.1
    logits = torch.where(torch.from_numpy(showers) > 0, torch.log(torch.from_numpy(showers) + 1e-3), torch.full((400, TINY.n_voxels), -15.0))
    result = fit_spectrum(occ, (targets, logits, torch.from_numpy(e)[:, None]), showers, settings)
    assert (occ.config.gamma, list(occ.config.floor)) == (result["gamma"], result["floor"])
    assert len(occ.config.floor) == len(occ.config.floor_energies) == 2
    grid = {(g, f): s for g, f, *s in result["grid"]}  # every band got its best floor at the chosen gamma
    for b, floor in enumerate(occ.config.floor):
        assert grid[(result["gamma"], floor)][b] == min(s[b] for (g, _), s in grid.items() if g == result["gamma"])


def test_floor_is_piecewise_linear_in_log_energy_and_validated():
    e = torch.tensor([[1e2], [1e3], [np.sqrt(1e3 * 1e4)], [1e4], [1e5], [1e6]], dtype=torch.float32)
    f = floor_at(e, torch.tensor([2.0, 1.0, 0.5]), torch.log(torch.tensor([1e3, 1e4, 1e5]))).flatten()
    np.testing.assert_allclose(f.numpy(), [2.0, 2.0, 1.5, 1.0, 0.5, 0.5], rtol=1e-6)
    f = floor_at(e, torch.tensor([2.0, 1.0]), torch.log(torch.tensor([1e3, 1e4]))).flatten()
    np.testing.assert_allclose(f.numpy(), [2.0, 2.0, 1.5, 1.0, 1.0, 1.0], rtol=1e-6)
    assert torch.equal(Occupancy(TINY, OccupancyConfig(floor=(0.7,))).floor_at_energies(e), torch.full_like(e, 0.7))
    for bad in (dict(floor=(1.0, 2.0)), dict(floor=(1.0, 2.0), floor_energies=(5.0, 1.0)), dict(floor=(-1.0,)), dict(gamma=0.0), dict(width=0)):
        with pytest.raises(OccupancyError):
            OccupancyConfig(**bad)


def test_files_round_trip_and_bad_files_are_refused(tmp_path):
    torch.manual_seed(0)
    occ = Occupancy(TINY, OccupancyConfig(width=8, depth=1, max_count=6, floor=(1.5, 0.5), floor_energies=(1e3, 1e4), gamma=0.4))
    assert load_occupancy(tmp_path, TINY) is None  # a model directory without the stage
    save_occupancy(tmp_path, occ, {"data": "test"})
    back = load_occupancy(tmp_path, TINY)
    assert back is not None and back.config == occ.config
    assert all(torch.equal(a, b) for a, b in zip(occ.net.state_dict().values(), back.net.state_dict().values()))
    meta = json.loads((tmp_path / "occupancy.json").read_text())
    (tmp_path / "occupancy.json").write_text(json.dumps({**meta, "occupancy": {**meta["occupancy"], "gamma": -1}}))
    with pytest.raises(OccupancyError, match="gamma"):
        load_occupancy(tmp_path, TINY)
    (tmp_path / "occupancy.json").write_text(json.dumps({**meta, "occupancy": {**meta["occupancy"], "colour": 1}}))
    with pytest.raises(OccupancyError, match="unknown settings"):
        load_occupancy(tmp_path, TINY)
    (tmp_path / "occupancy.json").write_text(json.dumps(meta))
    save_occupancy(tmp_path, Occupancy(TINY, OccupancyConfig(width=4, depth=1, max_count=6)), {})
    (tmp_path / "occupancy.json").write_text(json.dumps(meta))
    with pytest.raises(OccupancyError, match="does not fit"):
        load_occupancy(tmp_path, TINY)
    (tmp_path / "occupancy.safetensors").unlink()
    with pytest.raises(OccupancyError, match="both"):
        load_occupancy(tmp_path, TINY)


def test_occupancy_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    occ = Occupancy(TINY, OccupancyConfig(width=8, depth=1, max_count=6, floor=(2.0, 1.0, 0.1), floor_energies=(1e3, 1e4, 1e5))).eval()
    g = torch.Generator().manual_seed(4)
    args = (
        torch.randn(5, TINY.n_voxels, generator=g), readout_targets(torch.rand(5, occ.n_groups, generator=g) ** 3 * 5, T),
        torch.tensor([[5e2], [2e3], [2e4], [5e4], [2e5]]), torch.randn(5, occ.n_groups, generator=g),
    )  # fmt: skip
    path = tmp_path / "occ.onnx"
    names = ["logits", "targets", "energies", "noise"]
    torch.onnx.export(occ, args, str(path), input_names=names, output_names=["showers"], opset_version=17, dynamo=False,
                      dynamic_axes={n: {0: "batch"} for n in [*names, "showers"]})  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {n: a.numpy() for n, a in zip(names, args)})[0]
    with torch.no_grad():
        expected = occ(*args).numpy()
    assert np.array_equal(out > 0, expected > 0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def _train_and_fit(root: Path, n_showers: int, fit_args: list[str]) -> None:
    """Toy showers in ``root/train.h5``, a tiny model (2 steps) in ``root/run``, then ``fit-occupancy fit_args``."""
    from _model_data import toy_showers

    from calogen.cli import main
    from calogen.io import ShowerWriter

    with ShowerWriter(root / "train.h5", TINY) as w:
        w.append(*toy_showers(TINY, n_showers, seed=2, e_range=(1e3, 1e4)))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--data", str(root / "train.h5"), "--geometry", "tiny", "--preset", "tiny",
                     "--out", str(root / "run"), "--max-steps", "2", "--no-progress"]) == 0  # fmt: skip
        assert main(["fit-occupancy", str(root / "run"), "--data", str(root / "train.h5"), *fit_args]) == 0
    finally:
        torch.set_num_threads(before)


def test_fit_occupancy_command_adds_the_stage_to_a_copy(tmp_path, capsys):
    from calogen.cli import main

    fit = ["--steps", "20", "--spectrum-showers", "30", "--out", str(tmp_path / "occ")]
    _train_and_fit(tmp_path, 120, fit)
    assert "occupancy stage fitted on 120 showers" in capsys.readouterr().out
    assert load_occupancy(tmp_path / "run", TINY) is None  # the original is untouched
    occ = load_occupancy(tmp_path / "occ", TINY)
    assert occ is not None and occ.config.max_count == 6
    assert (tmp_path / "run" / "checkpoints").is_dir() and not (tmp_path / "occ" / "checkpoints").exists()
    again = ["fit-occupancy", str(tmp_path / "run"), "--data", str(tmp_path / "train.h5"), *fit]
    assert main(again) == 2  # never into a non-empty directory
    assert "not empty" in capsys.readouterr().err


@pytest.fixture(scope="module")
def occ_model(tmp_path_factory):
    """A tiny model (2 training steps) and a copy with a fitted occupancy stage, through the CLI."""
    root = tmp_path_factory.mktemp("occ")
    _train_and_fit(root, 200, ["--steps", "150", "--spectrum-showers", "50", "--out", str(root / "occ")])
    return root


def test_generated_rings_keep_their_energies_and_the_model_stays_reproducible(occ_model):
    from calogen.models.generator import load

    plain, occ = load(occ_model / "run"), load(occ_model / "occ")
    assert plain.occupancy is None and occ.occupancy is not None
    assert occ.noise_shapes()["noise_energy"][0] == plain.noise_shapes()["noise_energy"][0] + occ.occupancy.n_groups
    e = np.geomspace(1.2e3, 9e3, 40)
    a, b = plain.sample(e, seed=3, nfe=2), occ.sample(e, seed=3, nfe=2)
    np.testing.assert_array_equal(b, occ.sample(e, seed=3, nfe=2))
    # the same noise gives the same ring energies (the plain model's rings hold exactly them), now on fewer voxels
    groups = torch.from_numpy(energy_groups(TINY, "rings"))
    rings_a = group_totals(torch.from_numpy(a).double(), groups, int(groups.max()) + 1)
    rings_b = group_totals(torch.from_numpy(b).double(), groups, int(groups.max()) + 1)
    assert torch.allclose(rings_b, rings_a, rtol=2e-6, atol=1e-9)
    assert ((b == 0) | (b >= T)).all()
    noise_e, noise_s = occ.draw_noise(4, seed=9)
    with torch.no_grad():
        out = occ.export_module(2, "heun")(torch.from_numpy(e[:4, None].astype(np.float32)), torch.from_numpy(noise_e), torch.from_numpy(noise_s))
    np.testing.assert_array_equal(out.numpy(), occ.sample_with_noise(e[:4], noise_e, noise_s, 2, sampler="heun"))


def test_hit_family_classifier_detects_counts_forced_wrong(occ_model):
    from calogen.eval.families import FamilySettings, family_auc
    from calogen.models.generator import load

    occ = load(occ_model / "occ")
    e = np.geomspace(1.2e3, 9e3, 300)
    groups = torch.from_numpy(energy_groups(TINY, "rings"))
    n_groups = int(groups.max()) + 1

    def hits(showers: np.ndarray) -> np.ndarray:
        layers = np.asarray(TINY.voxel_layer)
        return np.stack([np.log10(e), *((showers[:, layers == i] >= T).sum(1) for i in range(len(TINY.layers)))], axis=1)

    right, again = occ.sample(e, seed=1, nfe=2), occ.sample(e, seed=2, nfe=2)
    counts = occ.occupancy.counts
    occ.occupancy.counts = lambda *args: (counts(*args) - 2).clamp_min(1) * (args[0] > 0)  # two hits fewer per ring
    try:
        wrong = occ.sample(e, seed=2, nfe=2)
    finally:
        del occ.occupancy.counts
    rings = group_totals(torch.from_numpy(wrong).double(), groups, n_groups)
    assert torch.allclose(rings, group_totals(torch.from_numpy(again).double(), groups, n_groups), rtol=2e-6, atol=1e-9)
    settings = FamilySettings(max_showers_per_side=300)
    assert np.mean(family_auc(hits(right), hits(again), settings)) < 0.65
    assert np.mean(family_auc(hits(right), hits(wrong), settings)) > 0.9


def test_model_with_occupancy_exports_to_a_checked_onnx_graph(occ_model, tmp_path):
    pytest.importorskip("onnxruntime")
    from calogen.models.generator import load
    from calogen.serve.export import export_onnx

    occ = load(occ_model / "occ")
    check = export_onnx(occ.export_module(2), occ.noise_shapes(), tmp_path / "m.onnx", check_energies=np.geomspace(1.2e3, 9e3, 8))
    assert check is not None and check.max_rel_diff <= 1e-4 and (tmp_path / "m.onnx").is_file()


def test_each_solver_gets_its_own_spectrum_fit_and_export_uses_it(occ_model):
    from calogen.models.generator import load

    occ = load(occ_model / "occ")
    stage = occ.occupancy
    default = f"{occ.sampler}:{occ.nfe}"
    expected = {f"{occ.sampler}:{n}" for n in (1, 2, 4, 8)} - {default}
    assert set(stage.config.spectra) == expected
    record = json.loads((occ_model / "occ" / "occupancy.json").read_text())["provenance"]["spectra"]
    assert set(record) == expected | {default}
    for key in expected:
        sampler, nfe = key.split(":")
        view = occ.export_module(int(nfe), sampler).occupancy
        assert view is not stage and view.net is stage.net
        assert view.config.gamma == record[key]["gamma"]
        assert view.floor_values.tolist() == pytest.approx(record[key]["floor"] * (1 if len(record[key]["floor"]) > 1 else 2))
    assert occ.export_module(occ.nfe, occ.sampler).occupancy is stage  # the default pair
    assert stage.config.gamma == record[default]["gamma"]
    for bad in ({"euler:1": {"gamma": 0.5}}, {"euler:1": {"gamma": -1.0, "floor": [1.0]}}, {"euler:1": {"gamma": 0.5, "floor": [1.0, 2.0]}}):
        with pytest.raises(OccupancyError, match="spectra"):
            OccupancyConfig(spectra=bad)
