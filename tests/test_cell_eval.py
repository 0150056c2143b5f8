"""Evaluation of cell geometries: the challenge's histograms, classifier, FPD/KPD, hexagon maps, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calogen.cell_geometry import CellGeometry
from calogen.cli import main
from calogen.eval.cell_eval import (
    cell_classifier_vector,
    cell_sample_from_file,
    challenge_bins,
    compare_cell_samples,
)
from calogen.eval.evaluate import evaluate
from calogen.eval.hexmaps import hexmap_figure, maximum_layers
from calogen.eval.settings import EvaluationSettings
from calogen.io import write_showers

TINY_HEX = CellGeometry.builtin("tiny-hex")
HGCAL = CellGeometry.builtin("hgcal-like")


def cell_showers(geometry: CellGeometry, n: int, seed: int, x_shift: dict[int, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian spots (8 mm) with jittered centres and Gamma cell fluctuations, cells below 1 keV zeroed;
    ``x_shift`` moves layers in x (mm)."""
    rng = np.random.default_rng(seed)
    energies = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n))
    depth = np.arange(geometry.n_layers)
    profile = (depth + 0.5) ** 2 * np.exp(-(depth + 0.5) / max(geometry.n_layers / 6, 0.5))
    showers = np.zeros((n, geometry.n_voxels))
    for layer in range(geometry.n_layers):
        cells = geometry.layers[layer]
        x0 = rng.normal((x_shift or {}).get(layer, 0.0), 2.0, (n, 1))
        y0 = rng.normal(0.0, 2.0, (n, 1))
        spot = np.exp(-((cells.x - x0) ** 2 + (cells.y - y0) ** 2) / (2 * 8.0**2)) * rng.gamma(4.0, 0.25, (n, cells.n_cells))
        showers[:, geometry.layer_slice(layer)] = spot / spot.sum(1, keepdims=True) * profile[layer]
    showers *= 0.02 * energies[:, None] / profile.sum()
    showers[showers < 1e-3] = 0.0  # no Gaussian tails down to denormal floats: a 1 keV readout cut
    return energies.astype(np.float32), showers.astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cells")
    attrs = {"geometry": "tiny-hex"}
    write_showers(root / "ref.h5", *cell_showers(TINY_HEX, 500, seed=1), attrs=attrs)
    write_showers(root / "shifted.h5", *cell_showers(TINY_HEX, 500, seed=2, x_shift={1: 6.0, 2: 6.0}), attrs=attrs)
    write_showers(root / "hgcal.h5", *cell_showers(HGCAL, 60, seed=3))
    return root


def test_challenge_bins_follow_make_hist() -> None:
    edges = challenge_bins(np.array([2.0, -1.0, 0.5]))
    assert len(edges) == 50 and edges[0] == pytest.approx(-1.0 - 1e-8, abs=1e-12) and edges[-1] == pytest.approx(2.0 + 1e-8, abs=1e-12)
    occupancy = challenge_bins(np.arange(0, 331), discrete=True)
    assert np.allclose(np.diff(occupancy), 7.0)  # ceil(330 / 50) cells per bin
    single = challenge_bins(np.full(10, 1e5))  # the 1e-8 margin vanishes at 1e5: a 1e-3 window
    assert np.all(np.diff(single) > 0) and single[0] < 1e5 < single[-1]


def test_identical_samples_give_zero_separation_and_auc_near_half(files: Path) -> None:
    settings = EvaluationSettings(metrics=("hist", "cls-high", "fpd", "kpd"), official_classifier=False, adapt_distances=True)
    record = evaluate(files / "ref.h5", {"same": files / "ref.h5"}, TINY_HEX, files / "same-out", settings=settings)
    sample = record["samples"][0]
    assert {h["separation_power"] for h in sample["histograms"]} == {0.0}
    names = {h["name"] for h in sample["histograms"]}
    assert {"e_inc", "e_ratio", "x_centre_2", "y_width_0", "occupancy_1", "e_layer_2", "e_fraction_layer_0", "e_fraction_ring_2", "voxel_spectrum"} <= names
    assert len(names) == 2 + 6 * 3 + 3 + 3 + 1  # tiny-hex: 3 layers, rings 0-2
    (cls,) = sample["classifiers"]
    assert cls["kind"] == "cls-high" and abs(cls["auc_mean"] - 0.5) < 0.1
    assert sample["distances"]["fpd"]["value"] < 1e-2
    assert record["geometry"]["kind"] == "cells" and "CMSHGCaloChallenge" in record["conventions"]["official_code"]["repository"]


def test_shifted_x_centre_is_found_in_the_shifted_layers(files: Path) -> None:
    ref = cell_sample_from_file(files / "ref.h5", TINY_HEX)
    shifted = cell_sample_from_file(files / "shifted.h5", TINY_HEX)
    s = {h.name: h.separation for h in compare_cell_samples(ref, shifted)}
    assert s["x_centre_1"] > 0.5 and s["x_centre_2"] > 0.5
    assert s["x_centre_0"] < 0.1 and s["y_centre_1"] < 0.1
    assert cell_classifier_vector(ref).shape == (500, 2 + 6 * 3 + 3)


def test_cli_report_has_hexagon_maps_and_the_geometry_comes_from_the_file(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = files / "cli-out"
    argv = ["evaluate", str(files / "ref.h5"), f"shifted={files / 'shifted.h5'}", "--out", str(out),
            "--metrics", "hist,cls-low,cls-high", "--fast-classifier", "--max-showers", "200", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["geometry"]["name"] == "tiny-hex"
    aucs = {c["kind"]: c["auc_mean"] for c in record["samples"][0]["classifiers"]}
    assert aucs["cls-high"] > 0.8 and set(aucs) == {"cls-low", "cls-high"}
    page = (out / "report.html").read_text()
    assert '<section id="hexmaps">' in page and "data:image/png;base64," in page
    assert '<section id="showers-section" hidden>' in page
    assert "separation power, mean" in capsys.readouterr().out


def test_hexagon_maps_draw_every_cell_around_the_maximum(files: Path) -> None:
    sample = cell_sample_from_file(files / "hgcal.h5", HGCAL)
    layers = maximum_layers(sample.mean_shower, HGCAL)
    assert len(layers) == 3 and int(np.argmax(HGCAL.layer_energies(sample.mean_shower[None])[0])) == layers[1]
    fig = hexmap_figure(HGCAL, {"reference": sample.mean_shower, "model": sample.mean_shower * 1.1}, layers)
    polys = [ax.collections[0] for ax in fig.axes if ax.get_title()]  # the colour bars have no title
    assert len(polys) == 6 and all(len(p.get_paths()) == 331 for p in polys)
    histograms = compare_cell_samples(sample, sample)
    assert len(histograms) == 2 + 6 * 26 + 26 + 11 + 1


def test_a_file_with_another_cell_count_exits_2(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    e, showers = cell_showers(TINY_HEX, 20, seed=4)
    write_showers(files / "wide.h5", e, np.concatenate([showers, showers[:, :1]], axis=1))
    out = files / "bad-out"
    argv = ["evaluate", str(files / "ref.h5"), str(files / "wide.h5"), "--geometry", "tiny-hex", "--out", str(out), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "showers have 58 voxels but geometry 'tiny-hex' has 57" in err
    assert len(err.splitlines()) == 1 and not out.exists()
