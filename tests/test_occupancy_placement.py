"""Occupancy stage, ``placement: sampled``: a ring's hits drawn without replacement (Gumbel top-k) from explicit noise."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from calogen.geometry import Geometry
from calogen.models.hit_placement import gumbel, keep_largest, occupy
from calogen.models.occupancy import Occupancy, OccupancyConfig, OccupancyError
from calogen.models.rescale import group_members, group_totals, readout_targets
from calogen.models.voxel_groups import energy_groups

TINY = Geometry.builtin("tiny")
T = float(TINY.threshold)


def test_gumbel_top_one_draws_with_softmax_probabilities():
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0])
    z = torch.randn(40_000, 4, generator=torch.Generator().manual_seed(0))
    wins = torch.bincount((logits + gumbel(z)).argmax(dim=1), minlength=4).double() / z.shape[0]
    np.testing.assert_allclose(wins.numpy(), torch.softmax(logits.double(), 0).numpy(), atol=0.01)
    assert torch.isfinite(gumbel(torch.tensor([-40.0, 0.0, 40.0]))).all()


def test_sampled_placement_moves_the_hits_and_keeps_counts_and_sums():
    groups = torch.from_numpy(energy_groups(TINY, "rings"))
    members = torch.from_numpy(group_members(groups.numpy()))
    n_groups = int(groups.max()) + 1
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(1, TINY.n_voxels, generator=g) - 6).expand(200, -1)  # one shape, 200 draws
    targets = readout_targets(torch.full((200, n_groups), 20.0), T)
    counts = torch.full((200, n_groups), 2.0)
    largest = occupy(logits, targets, counts, groups, members, threshold=T, floor=1.0, gamma=0.5)
    scores = logits + gumbel(torch.randn(logits.shape, generator=g))
    x = occupy(logits, targets, counts, groups, members, threshold=T, floor=1.0, gamma=0.5, scores=scores)
    assert torch.equal(group_totals((x > 0).float(), groups, n_groups), counts)
    assert torch.allclose(group_totals(x.double(), groups, n_groups), targets.double(), rtol=1e-6, atol=0)
    assert ((x == 0) | (x >= T)).all()
    assert torch.equal(x > 0, keep_largest(scores, counts, groups, members))
    assert torch.equal((largest > 0).float().std(dim=0), torch.zeros(TINY.n_voxels))  # always the same voxels
    hit = (x > 0).double().mean(dim=0)
    assert (hit > 0).sum() > (largest[0] > 0).sum() * 2  # sampled: many more voxels are ever hit
    # more likely where the logit is larger: within each ring, the top-logit voxel is hit more often than the lowest one
    by_ring = [(logits[0, groups == r], hit[groups == r]) for r in range(n_groups)]
    assert np.mean([float(h[s.argmax()] > h[s.argmin()]) for s, h in by_ring]) > 0.8


def test_stage_noise_layout_and_validation():
    torch.manual_seed(0)
    largest = Occupancy(TINY, OccupancyConfig(width=4, depth=1, max_count=6))
    sampled = Occupancy(TINY, OccupancyConfig(width=4, depth=1, max_count=6, placement="sampled"))
    sampled.net.load_state_dict(largest.net.state_dict())
    assert largest.noise_dim == largest.n_groups and sampled.noise_dim == largest.n_groups + TINY.n_voxels
    with pytest.raises(OccupancyError, match="placement"):
        OccupancyConfig(placement="random")
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, TINY.n_voxels, generator=g) - 5
    targets = readout_targets(torch.rand(6, largest.n_groups, generator=g) * 30, T)
    energies, noise = torch.full((6, 1), 5e3), torch.randn(6, sampled.noise_dim, generator=g)
    with torch.no_grad():
        a, b = largest(logits, targets, energies, noise[:, : largest.n_groups]), sampled(logits, targets, energies, noise)
        again = sampled(logits, targets, energies, noise)
        other = sampled(logits, targets, energies, torch.cat([noise[:, : largest.n_groups], -noise[:, largest.n_groups :]], dim=1))
    assert torch.equal(b, again)  # the same noise, the same bytes
    n = sampled.n_groups
    for y in (b, other):  # the count noise alone sets the counts
        assert torch.equal(group_totals((y > 0).float(), sampled.groups, n), group_totals((a > 0).float(), sampled.groups, n))
    assert not torch.equal(b > 0, other > 0)


def test_model_with_sampled_placement_generates_reproducibly_and_exports(tmp_path):
    pytest.importorskip("onnxruntime")
    from _model_data import toy_showers

    from calogen.cli import main
    from calogen.io import ShowerWriter
    from calogen.models.generator import load
    from calogen.serve.export import export_onnx

    with ShowerWriter(tmp_path / "train.h5", TINY) as w:
        w.append(*toy_showers(TINY, 80, seed=2, e_range=(1e3, 1e4)))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--data", str(tmp_path / "train.h5"), "--geometry", "tiny", "--preset", "tiny",
                     "--out", str(tmp_path / "run"), "--max-steps", "2", "--no-progress"]) == 0  # fmt: skip
        assert main(["fit-occupancy", str(tmp_path / "run"), "--data", str(tmp_path / "train.h5"), "--steps", "10",
                     "--spectrum-showers", "20", "--nfe", "2", "--placement", "sampled", "--out", str(tmp_path / "occ")]) == 0  # fmt: skip
    finally:
        torch.set_num_threads(before)
    meta = json.loads((tmp_path / "occ" / "occupancy.json").read_text())
    assert meta["occupancy"]["placement"] == "sampled" and meta["occupancy"]["centre"] is True
    shutil.copytree(tmp_path / "occ", tmp_path / "top")
    meta["occupancy"]["placement"] = "largest"
    (tmp_path / "top" / "occupancy.json").write_text(json.dumps(meta))
    sampled, top = load(tmp_path / "occ"), load(tmp_path / "top")
    assert sampled.noise_shapes()["noise_energy"][0] == top.noise_shapes()["noise_energy"][0] + TINY.n_voxels
    ns, nt = sampled.draw_noise(5, seed=4), top.draw_noise(5, seed=4)
    assert np.array_equal(ns[1], nt[1]) and np.array_equal(ns[0][:, : nt[0].shape[1]], nt[0])  # placement noise comes last
    e = np.geomspace(1.2e3, 9e3, 30)
    a, b = sampled.sample(e, seed=3), top.sample(e, seed=3)
    np.testing.assert_array_equal(a, sampled.sample(e, seed=3))
    groups = torch.from_numpy(energy_groups(TINY, "rings"))
    rings = [group_totals(torch.from_numpy(x).double(), groups, int(groups.max()) + 1) for x in (a, b)]
    assert torch.allclose(rings[0], rings[1], rtol=2e-6, atol=1e-9)
    assert not np.array_equal(a > 0, b > 0)
    check = export_onnx(sampled.export_module(2), sampled.noise_shapes(), tmp_path / "m.onnx", check_energies=np.geomspace(1.2e3, 9e3, 8))
    assert check is not None and check.max_rel_diff <= 1e-4
