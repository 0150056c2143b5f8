"""calogen bench: generator specifications, command and GPU-path generators, published results, the plane, the CLI."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _model_data import one_thread, toy_showers  # noqa: F401

from calogen.cli import main
from calogen.eval.bench.generators import BenchError, CommandGenerator, ModelOnDevice, build_generator, parse_generator
from calogen.eval.bench.page import OUTPUT_FILES, write_outputs
from calogen.eval.bench.plane import plane_figures, plane_points
from calogen.eval.bench.published import DATASETS, PublishedError, published_results, results_from_csv
from calogen.eval.bench.quality import load_quality
from calogen.eval.bench.run import BenchSettings, make_record, time_all
from calogen.geometry import Geometry
from calogen.io import write_showers
from calogen.models import load

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = Geometry.builtin("tiny")
RESULTS = Path(__file__).resolve().parents[1].parent / "shared" / "calochallenge" / "final_results"
FAST = BenchSettings(batch_sizes=(1, 20), min_showers=4, min_seconds=0.0, min_repeats=2, budget_s=5.0)
FAKE = """import sys, h5py, numpy as np
e = h5py.File(sys.argv[1], "r")["incident_energies"][:]
shift = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
with h5py.File(sys.argv[2], "w") as f:
    f["incident_energies"] = e + shift
    f["showers"] = np.repeat(e / 120, 120, axis=1).astype(np.float32)
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny reference, a GFLASH-like sample, their metrics.json, a trained tiny model and a fake external program."""
    root = tmp_path_factory.mktemp("bench")
    write_showers(root / "train.h5", *toy_showers(TINY, 160, seed=2, e_range=(1e3, 1e4)))
    write_showers(root / "ref.h5", *toy_showers(TINY, 200, seed=3, e_range=(1e3, 1e4)))
    write_showers(root / "gen.h5", *toy_showers(TINY, 200, seed=4, e_range=(1e3, 1e4)))
    assert main(["evaluate", str(root / "ref.h5"), f"gflash={root / 'gen.h5'}", "--geometry", "tiny", "--out", str(root / "eval"),
                 "--metrics", "cls-high,fpd", "--quiet"]) == 0  # fmt: skip
    assert main(["train", "--data", str(root / "train.h5"), "--geometry", "tiny", "--preset", "tiny",
                 "--out", str(root / "model"), "--max-steps", "3", "--no-progress"]) == 0  # fmt: skip
    (root / "fake.py").write_text(FAKE)
    return root


def test_generator_specifications_parse_with_names_and_options():
    spec = parse_generator("model:runs/cpu-small@nfe=4,sampler=heun")
    assert (spec.name, spec.kind, spec.argument, spec.options) == ("cpu-small-nfe4", "model", "runs/cpu-small", {"nfe": "4", "sampler": "heun"})
    assert parse_generator("gflash").name == "gflash" and parse_generator("ref=mc").name == "ref"
    cmd = parse_generator("mine=cmd:python gen.py --n={n} -o {out}")
    assert (cmd.name, cmd.kind, cmd.argument, cmd.options) == ("mine", "cmd", "python gen.py --n={n} -o {out}", {})
    timed = parse_generator("mine=cmd:python gen.py --to a@b -o {out} @timeout=2.5")
    assert (timed.argument, timed.options) == ("python gen.py --to a@b -o {out}", {"timeout": "2.5"})
    for bad, words in [
        ("cmd:python gen.py -o {out}", "name a command generator"),
        ("gan:x", "unknown generator kind 'gan'"),
        ("model:x@steps=3", "unknown option(s) ['steps']"),
        ("model:x@nfe", "must read KEY=VALUE"),
        ("gflash:x", "gflash takes no argument"),
        ("model:", "give the model directory"),
        ("a b=gflash", "may hold only"),
    ]:
        with pytest.raises(BenchError, match=None) as info:
            parse_generator(bad)
        assert words in str(info.value), (bad, str(info.value))


def test_command_generator_runs_the_program_and_checks_its_output(files):
    python = sys.executable
    gen = CommandGenerator(f"{python} {files / 'fake.py'} {{energies}} {{out}}", TINY)
    energies = np.array([1e3, 2e3, 5e3])
    showers = gen.sample(energies, seed=1)
    np.testing.assert_allclose(showers.sum(axis=1), energies, rtol=1e-5)
    for command, words in [
        (f"{python} {files / 'fake.py'} {{energies}}", "{out} missing"),
        (f"{python} x.py {{energies}} {{out}} {{nfe}}", "['nfe']"),
        (f"{python} x.py {{n:d}} {{out}}", "n:d"),
        ("'unclosed {out}", "cannot split"),
    ]:
        with pytest.raises(BenchError) as info:
            CommandGenerator(command, TINY)
        assert words in str(info.value)
    for command, words in [
        (f"{python} {files / 'fake.py'} {{energies}} {{out}} 1", "other incident energies"),
        (f"{python} -c 'import sys; sys.exit(\"broken\")' {{out}}", "exited with status 1: broken"),
        ("/nonexistent/program {out}", "not found"),
        (f"{python} -c pass {{out}}", "did not write a valid shower file"),
    ]:
        with pytest.raises(BenchError) as info:
            CommandGenerator(command, TINY).sample(energies, seed=1)
        assert words in str(info.value)
    slow, _ = build_generator(parse_generator(f"s=cmd:{python} -c 'import time; time.sleep(5)' {{out}}@timeout=0.2"), TINY, particle="e-")
    with pytest.raises(BenchError, match="past its 0.2 s timeout"):
        slow.sample(energies, seed=1)
    with pytest.raises(BenchError, match="timeout must be a number"):
        build_generator(parse_generator("s=cmd:prog {out}@timeout=soon"), TINY, particle="e-")


def test_model_on_device_reproduces_the_model_and_counts_parameters(files):
    model = load(files / "model").using(nfe=2)
    energies = np.geomspace(1.5e3, 8e3, 6)
    on_cpu = ModelOnDevice(model, "cpu")
    np.testing.assert_allclose(on_cpu.sample(energies, seed=3, batch_size=4), model.sample(energies, seed=3), rtol=1e-4, atol=1e-5)
    assert all(a is not b for a, b in zip(on_cpu.module.parameters(), model.pair.parameters(), strict=False))
    generator, description = build_generator(parse_generator(f"model:{files / 'model'}@nfe=2"), TINY, particle="e-")
    assert description["nfe"] == 2 and description["kind"] == "model"
    rows = time_all([parse_generator(f"m=model:{files / 'model'}@nfe=1")], TINY, FAST, particle="e-")
    n_params = sum(p.numel() for p in model.pair.parameters())
    assert rows[0]["n_parameters"] == n_params > 0
    if torch.cuda.is_available():
        assert rows[0]["timing"]["gpu"]["batches"][0]["batch_size"] == 1
    else:
        assert rows[0]["timing"]["gpu"] is None and rows[0]["gpu_note"] == "no GPU on this machine"
    with pytest.raises(BenchError, match="120 voxels"):
        build_generator(parse_generator(f"model:{files / 'model'}"), Geometry.builtin("ds1-photons"), particle="e-")


def test_packaged_results_load_and_convert_units():
    ds2 = published_results("ds2")
    names = [e.name for e in ds2.entries]
    assert names[0] == "GEANT4" and ds2.entries[0].is_reference and "CaloDREAM" in names and len(names) == 18
    assert "arXiv:2410.21611" in ds2.citation
    dream = ds2.entries[names.index("CaloDREAM")]
    assert dream.figures["fpd_1e3"] is not None and dream.quality("fpd")[0] == pytest.approx(dream.figures["fpd_1e3"][0] / 1e3)
    assert dream.time_ms[("gpu", 10_000)] is None and dream.time_ms[("cpu", 100)][0] > 0
    assert all(published_results(d).entries for d in DATASETS)
    with pytest.raises(PublishedError, match="choose one of"):
        published_results("tiny")


def test_packaged_results_equal_the_published_tables():
    if not RESULTS.is_dir():
        pytest.skip(f"published results {RESULTS} not available")
    for dataset, stem in DATASETS.items():
        parsed = [e.to_dict() for e in results_from_csv(RESULTS / f"{stem}.csv")]
        assert parsed == [e.to_dict() for e in published_results(dataset).entries], dataset


def test_results_csv_reader_is_robust(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(
        'submission id,submission name,sep E layer,binary cls low,binary cls low std,FPD * 1e3,time CPU 100,time CPU 100 std\n'
        '0,GEANT4,"[0.1, 0.2, ""x""]",0.5,0.002,10.7,,\n'
        '3,Model A,"[]",0.7,nan,150.0,12.5,1.5\n'
    )  # fmt: skip
    geant, model = results_from_csv(path)
    assert geant.is_reference and geant.time_ms[("cpu", 100)] is None and geant.figures["auc_low"] == (0.5, 0.002)
    assert model.figures["auc_low"] == (0.7, None) and model.figures["auc_high"] is None
    assert model.time_ms[("cpu", 100)] == (12.5, 1.5) and model.quality("fpd") == (0.15, None)
    (tmp_path / "bad.csv").write_text("name,value\nx,1\n")
    with pytest.raises(PublishedError, match="not a CaloChallenge results table"):
        results_from_csv(tmp_path / "bad.csv")
    with pytest.raises(PublishedError, match="cannot read"):
        results_from_csv(tmp_path / "missing.csv")


def test_quality_is_read_from_evaluate_outputs(files):
    metrics = files / "eval" / "metrics.json"
    quality = load_quality([str(metrics)], ["gflash", "mc"], geometry="tiny")
    assert set(quality) == {"gflash"} and set(quality["gflash"].values) == {"auc_high", "fpd"}
    record = json.loads(metrics.read_text())
    auc = next(c for c in record["samples"][0]["classifiers"] if c["kind"] == "cls-high")
    assert quality["gflash"].values["auc_high"] == (auc["auc_mean"], auc["auc_std"])
    assert quality["gflash"].reference["n_showers"] == 200
    assert quality["gflash"].conventions == record["conventions"] and quality["gflash"].conventions["official_code"]["date"]
    assert set(load_quality([f"other={metrics}#gflash"], ["other"], geometry="tiny")) == {"other"}
    for entries, gens, words in [
        ([str(metrics)], ["mc"], "none of its samples"),
        ([f"x={metrics}"], ["gflash"], "no generator called 'x'"),
        ([f"gflash={metrics}#nope"], ["gflash"], "no sample 'nope'"),
        ([str(metrics), f"gflash={metrics}"], ["gflash"], "two --metrics entries"),
        ([str(files / "ref.h5")], ["gflash"], "not valid JSON"),
        ([str(files / "missing.json")], ["gflash"], "cannot read"),
    ]:
        with pytest.raises(BenchError) as info:
            load_quality(entries, gens, geometry="tiny")
        assert words in str(info.value)
    with pytest.raises(BenchError, match="evaluates geometry 'tiny'"):
        load_quality([str(metrics)], ["gflash"], geometry="ds2")


def test_bench_record_plane_and_page(files, tmp_path):
    specs = [parse_generator("gflash"), parse_generator("mc")]
    rows = time_all(specs, TINY, FAST, particle="e-")
    quality = load_quality([str(files / "eval" / "metrics.json")], ["gflash", "mc"], geometry="tiny")
    record = make_record(rows, quality, TINY, FAST, plane=("cpu", 20), published=published_results("ds2"))
    for row in rows:
        assert [b["batch_size"] for b in row["timing"]["cpu"]["batches"]] == [1, 20] and row["n_parameters"] == 0
        assert len(row["load_average"]["before"]) == 3 and len(row["load_average"]["after_cpu"]) == 3
    points = plane_points(record)
    gflash = next(p for p in points["ours"] if p["name"] == "gflash")
    assert gflash["auc_high"] == list(quality["gflash"].values["auc_high"]) and gflash["auc_low"] is None
    assert next(p for p in points["ours"] if p["name"] == "mc")["fpd"] is None
    cpu_points = plane_points(make_record(rows, quality, TINY, FAST, plane=("cpu", 20), published=None, clock="cpu"))
    timed = rows[0]["timing"]["cpu"]["batches"][1]
    assert timed["cpu_ms_per_shower_median"] > 0 and cpu_points["ours"][0]["ms"] == timed["cpu_ms_per_shower_median"]
    assert points["published"] == [] and "CaloDREAM" in points["published_untimed"]  # nobody published batch 20
    assert points["reference"]["name"] == "GEANT4"
    record100 = {**record, "settings": {**record["settings"], "batch_sizes": [1, 100]}, "plane": {"device": "cpu", "batch_size": 100}}
    for row in record100["generators"]:
        row["timing"]["cpu"]["batches"][1]["batch_size"] = 100
    points = plane_points(record100)
    assert len(points["published"]) == 17 and not points["published_untimed"]
    svg, png = plane_figures(record100)
    assert (svg, png) == plane_figures(record100) and png.startswith(b"\x89PNG")
    assert all(name in svg for name in ("CaloDREAM", "gflash", "mc (time only)", "GEANT4 vs GEANT4", "arXiv:2410.21611"))
    paths = write_outputs(record100, tmp_path / "out")
    assert [p.name for p in paths] == list(OUTPUT_FILES)
    page = (tmp_path / "out" / "bench.html").read_text()
    assert "<svg" in page and not re.search(r"(src|href)=[\"']?(https?:|//)", page) and "comparable" in page
    assert json.loads((tmp_path / "out" / "bench.json").read_text())["quality"]["gflash"]["source"]["sample"] == "gflash"
    with pytest.raises(BenchError, match="not among the timed"):
        make_record(rows, quality, TINY, FAST, plane=("cpu", 100), published=None)
    with pytest.raises(BenchError, match="clock"):
        make_record(rows, quality, TINY, FAST, plane=("cpu", 20), published=None, clock="tsc")


def test_bench_cli_end_to_end_and_errors(files, tmp_path, capsys):
    fake = f"flat=cmd:{sys.executable} {files / 'fake.py'} {{energies}} {{out}}"
    args = ["bench", "--geometry", "tiny", "-g", "gflash", "-g", fake, "--metrics", str(files / "eval" / "metrics.json"),
            "--batch-sizes", "1,10", "--plane", "cpu:10", "--budget", "5", "--min-seconds", "0", "--min-showers", "4",
            "--threads", "1", "--published", "none", "--out", str(tmp_path / "b")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "gflash cpu: b1" in out and "flat cpu: b1" in out
    record = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert [g["name"] for g in record["generators"]] == ["gflash", "flat"] and record["published"] is None
    assert record["environment"]["torch_threads"] == 1 and record["settings"]["threads"] == 1
    again = ["bench", "--geometry", "tiny", "--timings-from", str(tmp_path / "b" / "bench.json"), "--plane", "cpu:1", "--clock", "cpu",
             "--metrics", f"flat={files / 'eval' / 'metrics.json'}#gflash", "--out", str(tmp_path / "c")]  # fmt: skip
    assert main(again) == 0
    redrawn = json.loads((tmp_path / "c" / "bench.json").read_text())
    assert redrawn["generators"] == record["generators"] and redrawn["environment"] == record["environment"]
    assert set(redrawn["quality"]) == {"flat"} and redrawn["plane"] == {"device": "cpu", "batch_size": 1, "clock": "cpu"}
    for bad, words in [
        (["-g", "gflash", "-g", "gflash"], "used twice"),
        (["-g", "gan"], "unknown generator kind"),
        (["-g", "gflash", "--plane", "tpu:5"], "must read cpu:BATCH"),
        (["-g", "gflash", "--plane", "gpu:10", "--no-gpu"], "needs GPU timings"),
        ([], "give the generators to time"),
        (["-g", "gflash", "--timings-from", str(tmp_path / "b" / "bench.json")], "not both"),
        (["--timings-from", str(files / "eval" / "metrics.json")], "not a bench.json"),
        (["-g", "gflash", "--out", str(files / "ref.h5")], "not a directory"),
        (["-g", "gflash", "--batch-sizes", "1,x"], "comma-separated integers"),
        (["-g", "gflash", "--batch-sizes", "1,10"], "batch 100 is not among the timed batch sizes (1, 10)"),
        (["-g", "gflash", "--metrics", str(files / "missing.json")], "cannot read metrics file"),
    ]:
        status = main(["bench", "--geometry", "tiny", "--out", str(tmp_path / "never"), *bad])
        err = capsys.readouterr().err
        assert status == 2 and words in err and len(err.strip().splitlines()) == 1, (bad, err)
    assert not (tmp_path / "never").exists()
