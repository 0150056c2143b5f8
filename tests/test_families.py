"""Per-family classifier AUCs: blind to identical samples, sharp on occupancy, twins kept in one fold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calogen.eval.families import (
    FAMILIES,
    FamilyError,
    FamilySettings,
    compare_families,
    family_auc,
    family_columns,
    hits_per_layer,
    shower_spectra,
    spectrum_edges,
)
from calogen.features import compute_features
from calogen.geometry import Geometry
from calogen.io import write_showers

TINY = Geometry.builtin("tiny")
T = TINY.threshold  # 15.15 keV


def _showers(n: int, rng: np.random.Generator, energies: np.ndarray | None = None, *, extra_hits: float = 0.0):
    """Toy showers: exponential profiles, Gamma fluctuations, half the voxels empty; ``extra_hits`` fills that
    fraction of the empty voxels with 0.05 MeV (a change of the hit count worth ~0.05% of the energy)."""
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n)) if energies is None else energies
    layer, radial = np.exp(-np.arange(5) / 2.0), np.exp(-np.arange(4) / 0.8)
    mean = (layer[:, None, None] * np.ones(6)[None, :, None] * radial[None, None, :]).ravel()
    shape = rng.gamma(4.0, 0.25, (n, TINY.n_voxels)) * mean * (rng.random((n, TINY.n_voxels)) < 0.5)
    showers = shape / shape.sum(axis=1, keepdims=True) * e[:, None] * rng.uniform(0.8, 1.0, (n, 1))
    empty = showers == 0
    showers[empty & (rng.random(showers.shape) < extra_hits)] = 0.05
    return e.astype(np.float32), showers.astype(np.float32)


def _aucs(a, b, n=400, **kw) -> dict[str, float]:
    fa, fb = compute_features(a[0], a[1], TINY), compute_features(b[0], b[1], TINY)
    ca, cb = family_columns(fa, shower_spectra(a[1], T)), family_columns(fb, shower_spectra(b[1], T))
    settings = FamilySettings(max_showers_per_side=n, **kw)
    return {name: float(np.mean(family_auc(ca[name], cb[name], settings))) for name in FAMILIES}


def test_same_distribution_gives_auc_near_half():
    rng = np.random.default_rng(1)
    aucs = _aucs(_showers(400, rng), _showers(400, rng))
    assert all(0.42 < v < 0.58 for v in aucs.values()), aucs


def test_occupancy_alone_is_found_by_hits_and_spectrum_only():
    rng = np.random.default_rng(2)
    aucs = _aucs(_showers(400, rng), _showers(400, rng, extra_hits=0.3))
    assert aucs["hits"] > 0.95 and aucs["voxel_spectrum"] > 0.95, aucs
    assert aucs["e_inc"] < 0.58 and aucs["e_ratio"] < 0.6 and aucs["layer_energies"] < 0.65, aucs


def test_twins_with_the_same_incident_energy_do_not_push_the_control_below_half():
    rng = np.random.default_rng(3)
    ref = _showers(400, rng)
    gen = _showers(400, rng, energies=ref[0].astype(np.float64))  # generated from the reference's energies
    aucs = _aucs(ref, gen)
    assert aucs["e_inc"] == pytest.approx(0.5, abs=0.02), aucs  # memorised twins gave ~0.40 before grouping


def test_same_seed_same_aucs_and_folds_give_a_spread():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(300, 3)), rng.normal(0.3, 1.0, size=(300, 3))
    first, again = family_auc(x, y, FamilySettings(seed=5)), family_auc(x, y, FamilySettings(seed=5))
    assert first == again and len(first) == 3 and np.std(first) > 0
    assert family_auc(x, y, FamilySettings(seed=6)) != first


def test_spectrum_bins_by_hand():
    assert spectrum_edges(T).tolist() == [T, 0.1, 0.3, 1, 3, 10, 30, 100, 300, 1e3, 3e3, 1e4, np.inf]
    assert spectrum_edges(1.0)[:3].tolist() == [1.0, 3.0, 10.0]
    showers = np.zeros((2, 8), np.float32)
    showers[0, :7] = [0.01, 0.02, 0.1, 0.5, 2.0, 5000.0, 2e4]
    showers[1, 0] = 3.0
    counts = shower_spectra(showers, T)
    assert counts[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1]  # 0.01 is below the threshold
    assert counts[1].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]  # a value on an edge goes up


def test_hits_per_layer_counts_above_threshold_voxels():
    rng = np.random.default_rng(5)
    e, showers = _showers(20, rng)
    showers[0, :3] = 0.01  # below threshold: not hits
    expected = (showers >= T).reshape(20, 5, -1).sum(axis=2)
    assert np.array_equal(hits_per_layer(compute_features(e, showers, TINY)), expected)


def test_compare_families_from_files_and_profiles_add_up(tmp_path):
    rng = np.random.default_rng(6)
    ref, gen = _showers(300, rng), _showers(250, rng, extra_hits=0.5)
    write_showers(tmp_path / "ref.h5", *ref)
    write_showers(tmp_path / "gen.h5", *gen)
    fr, fg = compute_features(*ref, TINY), compute_features(*gen, TINY)
    out = compare_families((tmp_path / "ref.h5", fr), (tmp_path / "gen.h5", fg), FamilySettings(), chunk_size=64)
    assert [f.family for f in out.families] == list(FAMILIES) and out.n_per_side == 250
    by_name = {f.family: f for f in out.families}
    assert by_name["hits"].auc_mean > 0.95 and by_name["e_inc"].auc_mean < 0.6
    decades = np.diff(np.log10(out.spectrum_edges))
    for hits, spectrum, showers in ((out.hits_reference, out.spectrum_reference, ref[1]), (out.hits_generated, out.spectrum_generated, gen[1])):
        mean_hits = (showers >= T).sum(axis=1).mean()
        assert hits.sum() == pytest.approx(mean_hits) and (spectrum * decades).sum() == pytest.approx(mean_hits)
    record = out.to_dict()
    assert record["mean_hits_per_shower"]["generated"] > record["mean_hits_per_shower"]["reference"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_folds": 1}, "n_folds=1"), ({"max_showers_per_side": 5}, "max_showers_per_side=5"), ({"learning_rate": 0}, "learning_rate")],
)
def test_bad_settings_are_errors(kwargs, message):
    with pytest.raises(FamilyError, match=message):
        FamilySettings(**kwargs)


def test_too_few_showers_is_an_error():
    x = np.zeros((10, 2))
    with pytest.raises(FamilyError, match="at least 20 showers per side"):
        family_auc(x, x)


def test_evaluate_command_reports_families(tmp_path, capsys):
    from calogen.cli import main

    rng = np.random.default_rng(7)
    write_showers(tmp_path / "ref.h5", *_showers(200, rng))
    write_showers(tmp_path / "gen.h5", *_showers(200, rng, extra_hits=0.3))
    out = tmp_path / "out"
    argv = ["evaluate", str(tmp_path / "ref.h5"), f"gen={tmp_path / 'gen.h5'}", "--geometry", "tiny", "--out", str(out),
            "--metrics", "families", "--quiet"]
    assert main(argv) == 0
    record = json.loads((out / "metrics.json").read_text())
    families = {f["family"]: f for f in record["samples"][0]["families"]["families"]}
    assert list(families) == list(FAMILIES) and families["hits"]["auc_mean"] > 0.9
    assert len(families["hits"]["aucs"]) == 3 and record["samples"][0]["families"]["n_per_side"] == 200
    assert "AUC family hits" in capsys.readouterr().out
