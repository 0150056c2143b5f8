"""The HTML report: log-binned histograms drawn per decade, the family chart's data, a self-contained page."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calogen.eval.families import FAMILIES, FamilySettings, compare_families
from calogen.eval.histograms import compare_features
from calogen.eval.report import SampleReport, _drawn, render_report
from calogen.features import compute_features
from calogen.geometry import Geometry
from calogen.io import write_showers

TINY = Geometry.builtin("tiny")


def test_a_narrow_first_log_bin_with_few_entries_is_no_spike():
    bins = np.logspace(np.log10(0.015), 4, 40)
    rng = np.random.default_rng(0)
    values = np.concatenate([np.full(2, 0.0155), 10 ** rng.uniform(1, 4, 1000)])  # 2 entries in the first bin
    counts, _ = np.histogram(values, bins)
    density = counts / counts.sum() / np.diff(bins)
    drawn = np.array(_drawn(density, bins, log_x=True), dtype=float)
    assert np.argmax(density) == 0  # per MeV, the two entries are the tallest bar
    assert drawn[0] < 0.05 * drawn.max()  # per decade they are 2 of 1002 entries
    assert (drawn * np.diff(np.log10(bins))).sum() == pytest.approx(1.0, rel=1e-4)  # fraction per decade
    linear = np.linspace(0, 1, 5)
    assert _drawn(np.array([1.0, 2.0, 0.5, 0.5]), linear, log_x=False) == [1.0, 2.0, 0.5, 0.5]


def _showers(n: int, rng: np.random.Generator, occupancy: float) -> tuple[np.ndarray, np.ndarray]:
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n))
    shape = rng.gamma(2.0, 1.0, (n, TINY.n_voxels)) * (rng.random((n, TINY.n_voxels)) < occupancy)
    return e.astype(np.float32), (shape / shape.sum(1, keepdims=True) * e[:, None]).astype(np.float32)


def test_report_embeds_families_and_per_decade_histograms(tmp_path):
    rng = np.random.default_rng(1)
    ref, gen = _showers(200, rng, 0.5), _showers(200, rng, 0.8)
    write_showers(tmp_path / "ref.h5", *ref)
    write_showers(tmp_path / "gen.h5", *gen)
    fr, fg = compute_features(*ref, TINY), compute_features(*gen, TINY)
    families = compare_families((tmp_path / "ref.h5", fr), (tmp_path / "gen.h5", fg), FamilySettings())
    histograms = compare_features(fr, fg)
    sample = SampleReport("gen", histograms, fg.mean_shower, families=families)
    render_report(tmp_path / "r.html", title="t <x>", geometry=TINY, reference_name="ref", reference_mean_shower=fr.mean_shower, samples=[sample])
    page = (tmp_path / "r.html").read_text()
    assert "src=" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "<title>t &lt;x&gt;</title>" in page and 'id="giveaway"' in page
    data = json.loads(page.split('type="application/json">', 1)[1].split("</script>", 1)[0])
    embedded = data["samples"][0]["families"]
    assert [f["family"] for f in embedded["families"]] == list(FAMILIES)
    hits = next(f for f in embedded["families"] if f["family"] == "hits")
    assert hits["auc_mean"] > 0.9 and embedded["n_per_side"] == 200
    assert sum(embedded["hits_generated"]) > sum(embedded["hits_reference"])
    by_name = {h["name"]: h for h in data["histograms"]}
    layer, ratio = by_name["e_layer_0"], by_name["e_ratio"]
    assert (layer["y"], ratio["y"]) == ("fraction per decade", "density")
    source = next(h for h in histograms if h.name == "e_layer_0")
    assert np.allclose(layer["reference"], source.reference * np.diff(source.bins) / np.diff(np.log10(source.bins)), rtol=1e-4)
    assert np.allclose(ratio["samples"]["gen"]["values"], next(h for h in histograms if h.name == "e_ratio").generated, rtol=1e-4)


def test_report_without_families_hides_the_section(tmp_path):
    rng = np.random.default_rng(2)
    f = compute_features(*_showers(60, rng, 0.5), TINY)
    render_report(tmp_path / "r.html", title="t", geometry=TINY, reference_name="ref", reference_mean_shower=f.mean_shower,
                  samples=[SampleReport("gen", compare_features(f, f), f.mean_shower)])
    data = json.loads((tmp_path / "r.html").read_text().split('type="application/json">', 1)[1].split("</script>", 1)[0])
    assert data["samples"][0]["families"] is None


def test_report_shows_the_demos_weighted_and_hybrid_rows(tmp_path):
    """The demo's rows: one GFLASH file evaluated plain and with DCTR weights (its ESS shown, its histograms
    weighted), and a hybrid sample, in the order given."""
    from calogen.eval.evaluate import evaluate
    from calogen.eval.settings import EvaluationSettings
    from calogen.eval.weights_file import write_weights

    rng = np.random.default_rng(3)
    for name, occupancy in (("ref", 0.5), ("gflash", 0.8), ("hybrid", 0.55)):
        write_showers(tmp_path / f"{name}.h5", *_showers(150, rng, occupancy))
    w = rng.uniform(0.2, 3.0, 150)
    write_weights(tmp_path / "w.h5", w, {})
    samples = {"GFLASH": tmp_path / "gflash.h5", "GFLASH+DCTR": tmp_path / "gflash.h5", "hybrid": tmp_path / "hybrid.h5"}
    evaluate(tmp_path / "ref.h5", samples, TINY, tmp_path / "eval", settings=EvaluationSettings(metrics=("hist",)),
             weights={"GFLASH+DCTR": tmp_path / "w.h5"})  # fmt: skip
    data = json.loads((tmp_path / "eval" / "report.html").read_text().split('type="application/json">', 1)[1].split("</script>", 1)[0])
    assert [s["name"] for s in data["samples"]] == ["GFLASH", "GFLASH+DCTR", "hybrid"]
    assert ["ESS" in s["scalars"] for s in data["samples"]] == [False, True, False]
    assert data["samples"][1]["scalars"]["ESS"][0] == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-6)
    layer = next(h for h in data["histograms"] if h["name"] == "e_layer_0")["samples"]
    assert layer["GFLASH"]["values"] != layer["GFLASH+DCTR"]["values"]  # the weights reach the histograms
