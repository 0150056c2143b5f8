"""Occupancy stage, ``centre``: every ring keeps its sum and hits while its centre of energy returns to the shape network's."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from calogen.geometry import Geometry
from calogen.models.hit_placement import keep_largest, occupy, ring_positions
from calogen.models.occupancy import Occupancy, OccupancyConfig, OccupancyError, load_occupancy, save_occupancy
from calogen.models.preprocess import sigmoid
from calogen.models.rescale import group_members, group_totals, readout_targets
from calogen.models.voxel_groups import energy_groups

TINY = Geometry.builtin("tiny")
T = float(TINY.threshold)


def _case(seed: int) -> tuple[torch.Tensor, ...]:
    """Rings of ``TINY``, logits leaning toward +x, ring energies and possible counts for 32 showers."""
    groups = torch.from_numpy(energy_groups(TINY, "rings"))
    members = torch.from_numpy(group_members(groups.numpy()))
    n_groups = int(groups.max()) + 1
    g = torch.Generator().manual_seed(seed)
    lean = torch.from_numpy(TINY.voxel_eta / 8.0).float()  # one logit per radial bin toward +x
    logits = 2 * torch.randn(32, TINY.n_voxels, generator=g) - 6 + lean
    targets = readout_targets(torch.rand(32, n_groups, generator=g) ** 2 * 40, T)
    most = torch.minimum(torch.floor(targets / (T * (1 + 1e-5))), torch.bincount(groups).float())
    counts = torch.where(targets > 0, torch.ceil(torch.rand(32, n_groups, generator=g) * most).clamp_min(1), torch.zeros_like(targets))
    return logits, targets, counts, groups, members


def _centres(x: torch.Tensor, positions: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Centre of energy ``(B, G, 2)`` of every ring in :func:`ring_positions` units (0 for an empty ring)."""
    total = group_totals(x.double(), groups, n_groups).clamp_min(1e-300)
    return torch.stack([group_totals(x.double() * positions[:, i].double(), groups, n_groups) / total for i in (0, 1)], dim=2)


def test_ring_positions_are_unit_radius_for_alpha_binned_rings():
    p = ring_positions(TINY)
    assert p.shape == (TINY.n_voxels, 2) and p.dtype == np.float32
    np.testing.assert_allclose(np.hypot(p[:, 0], p[:, 1]), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.arctan2(p[:, 1], p[:, 0]), TINY.voxel_alpha, atol=1e-6)


def test_recentred_rings_keep_sums_hits_and_floor_and_get_the_network_centre():
    logits, targets, counts, groups, members = _case(0)
    n_groups = targets.shape[1]
    positions = torch.from_numpy(ring_positions(TINY))
    keep = keep_largest(logits, counts, groups, members)
    reference = _centres(torch.where(keep, sigmoid(logits), torch.zeros_like(logits)), positions, groups, n_groups)
    for floor, gamma in ((0.0, 0.3), (1.0, 0.5), (3.0, 1.0)):
        flat = occupy(logits, targets, counts, groups, members, threshold=T, floor=floor, gamma=gamma)
        x = occupy(logits, targets, counts, groups, members, threshold=T, floor=floor, gamma=gamma, positions=positions)
        assert torch.isfinite(x).all()
        assert torch.equal(x > 0, flat > 0)  # the same hits
        assert torch.allclose(group_totals(x.double(), groups, n_groups), targets.double(), rtol=1e-6, atol=0)
        base = torch.minimum(torch.full_like(targets, max(floor, T)), targets / counts.clamp_min(1))[:, groups]
        assert (x[x > 0] >= base[x > 0] * (1 - 1e-6)).all()
        # rings with room to tilt (3+ hits, energy above the floor, no voxel at the floor after the tilt) reach the centre
        at_floor = group_totals(((x > 0) & (x <= base * (1 + 1e-4))).double(), groups, n_groups) > 0
        free = (counts >= 3) & (group_totals(torch.where(x > 0, x - base, torch.zeros_like(x)), groups, n_groups) > 0.5 * targets) & ~at_floor
        assert free.sum() >= 10
        got, before = _centres(x, positions, groups, n_groups), _centres(flat, positions, groups, n_groups)
        miss, was = (got[free] - reference[free]).abs(), (before[free] - reference[free]).abs()
        assert miss.max() < 0.05 and miss.mean() < 3e-3  # the ridge of the tilt solve leaves a little
        if gamma < 1:  # the flattening had moved them
            assert was.max() > 0.05 and miss.mean() < 0.1 * was.mean()


def test_single_and_degenerate_rings_stay_finite_and_untilted():
    groups = torch.from_numpy(energy_groups(TINY, "rings"))
    members = torch.from_numpy(group_members(groups.numpy()))
    n_groups = int(groups.max()) + 1
    positions = torch.from_numpy(ring_positions(TINY))
    logits = torch.full((3, TINY.n_voxels), -8.0)
    logits[1] = -200.0  # sigmoid underflows: equal shares
    targets = readout_targets(torch.full((3, n_groups), 5.0), T)
    targets[2] = T  # one hit of exactly the threshold: nothing above the base
    counts = torch.ones_like(targets)
    counts[0] = 2.0
    flat = occupy(logits, targets, counts, groups, members, threshold=T, floor=0.0, gamma=0.5)
    x = occupy(logits, targets, counts, groups, members, threshold=T, floor=0.0, gamma=0.5, positions=positions)
    assert torch.isfinite(x).all()
    torch.testing.assert_close(x, flat, rtol=1e-6, atol=0)


def test_centre_setting_round_trips_defaults_off_and_is_validated(tmp_path):
    assert OccupancyConfig().centre is False
    with pytest.raises(OccupancyError, match="centre"):
        OccupancyConfig(centre=1)
    torch.manual_seed(0)
    occ = Occupancy(TINY, OccupancyConfig(width=4, depth=1, max_count=6, centre=True))
    save_occupancy(tmp_path, occ, {})
    assert load_occupancy(tmp_path, TINY).config.centre is True
    meta = json.loads((tmp_path / "occupancy.json").read_text())
    del meta["occupancy"]["centre"]  # a file written before the setting existed
    (tmp_path / "occupancy.json").write_text(json.dumps(meta))
    old = load_occupancy(tmp_path, TINY)
    assert old.config.centre is False
    logits, targets, _, groups, members = _case(1)
    args = (logits, targets, torch.full((32, 1), 5e3), torch.randn(32, targets.shape[1], generator=torch.Generator().manual_seed(2)))
    expected = occupy(logits, readout_targets(targets, T), old.counts(readout_targets(targets, T), args[2], args[3]), groups, members,
                      threshold=T, floor=old.floor_at_energies(args[2]), gamma=old.config.gamma)  # fmt: skip
    assert torch.equal(old(*args), expected)  # byte-identical to the stage without the setting
    old.configure(replace(old.config, centre=True))
    assert not torch.equal(old(*args), expected)


def test_centred_stage_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    occ = Occupancy(TINY, OccupancyConfig(width=8, depth=1, max_count=6, gamma=0.4, centre=True)).eval()
    logits, targets, _, _, _ = _case(3)
    args = (logits[:6], targets[:6], torch.tensor([[5e2], [2e3], [2e4], [5e4], [2e5], [1e4]]),
            torch.randn(6, occ.n_groups, generator=torch.Generator().manual_seed(4)))  # fmt: skip
    path = tmp_path / "occ.onnx"
    names = ["logits", "targets", "energies", "noise"]
    torch.onnx.export(occ, args, str(path), input_names=names, output_names=["showers"], opset_version=17, dynamo=False,
                      dynamic_axes={n: {0: "batch"} for n in [*names, "showers"]})  # fmt: skip
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {n: a.numpy() for n, a in zip(names, args)})[0]
    with torch.no_grad():
        expected = occ(*args).numpy()
    assert np.array_equal(out > 0, expected > 0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
