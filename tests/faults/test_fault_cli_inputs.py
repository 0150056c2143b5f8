"""Item 7 of issue 11 (inputs of this helper's commands): every bad value is one line with exit 2,
and ``calogen``'s :func:`~calogen.cli.main` turns any exception inside a command into one line."""

from __future__ import annotations

import errno

import h5py
import numpy as np
import pytest
from _faults import one_error_line

import calogen.commands.simulate as simulate_command
from calogen.geometry import Geometry, GeometryError
from calogen.sim.engines import engine_spec
from calogen.sim.run import RunError, simulate_to_file

SIM = ["simulate", "--engine", "gflash", "--geometry", "tiny", "--energy", "1GeV", "--n", "2"]


@pytest.mark.parametrize("value", ["-1", str(2**63), str(2**64), "1.5", "abc"])
def test_seeds_outside_int64_are_usage_errors(tmp_path, cli, tiny_model, shower_file, value):
    commands = {
        "simulate": [*SIM, "-o", tmp_path / "s.h5"],
        "generate": ["generate", tiny_model, "--energy", "1GeV", "--n", "2", "-o", tmp_path / "g.h5"],
        "evaluate": ["evaluate", shower_file, shower_file, "--geometry", "tiny", "--out", tmp_path / "ev"],
        "calibrate-gflash": ["calibrate-gflash", shower_file, "--geometry", "tiny", "-o", tmp_path / "p.json"],
        "demo": ["demo", "--out", tmp_path / "demo"],
    }
    for name, argv in commands.items():
        status, err = cli(*argv, "--seed", value)
        assert status == 2 and "argument --seed" in one_error_line(err, name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n", "0"], "argument --n: must be >= 1, got 0"),
        (["--nfe", "0"], "argument --nfe: must be >= 1, got 0"),
        (["--nfe", "-2"], "argument --nfe: must be >= 1, got -2"),
        (["--batch-size", "0"], "argument --batch-size: must be >= 1"),
    ],
)
def test_generate_counts_must_be_positive(tmp_path, cli, tiny_model, argv, message):
    status, err = cli("generate", tiny_model, "--energy", "1GeV", "--n", "2", *argv, "-o", tmp_path / "g.h5")
    assert status == 2 and message in one_error_line(err, "generate")
    assert list(tmp_path.iterdir()) == []


def test_generate_rejects_empty_and_directory_energy_files(tmp_path, cli, tiny_model):
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["incident_energies"] = np.zeros((0, 1), np.float32)
        f["showers"] = np.zeros((0, 120), np.float32)
    status, err = cli("generate", tiny_model, "--energies-from", tmp_path / "empty.h5", "-o", tmp_path / "g.h5")
    assert status == 2 and "holds no showers" in one_error_line(err, "generate")
    (tmp_path / "dir.h5").mkdir()
    status, err = cli("generate", tiny_model, "--energies-from", tmp_path / "dir.h5", "-o", tmp_path / "g.h5")
    assert status == 2 and "dir.h5 is a directory" in one_error_line(err, "generate")
    assert not (tmp_path / "g.h5").exists()


def test_train_and_evaluate_counts(tmp_path, cli, shower_file):
    for value in ("0", "1.5", "abc"):
        status, err = cli("train", "--data", shower_file, "--geometry", "tiny", "--out", tmp_path / "m", "--max-steps", value)
        assert status == 2 and "argument --max-steps" in one_error_line(err, "train")
    status, err = cli("evaluate", shower_file, shower_file, "--geometry", "tiny", "--out", tmp_path / "ev", "--chunk-size", "0")
    assert status == 2 and "argument --chunk-size" in one_error_line(err, "evaluate")
    assert list(tmp_path.iterdir()) == []


def test_energy_limit_is_explicit_and_configurable(tmp_path, cli):
    status, err = cli("simulate", "--engine", "gflash", "--geometry", "tiny", "--energy", "1e12TeV", "--n", "1", "-o", tmp_path / "s.h5")
    assert status == 2 and "exceeds the limit of 10 TeV" in one_error_line(err, "simulate")
    status, err = cli(*SIM, "--max-energy", "lots", "-o", tmp_path / "s.h5")
    assert status == 2 and "cannot read energy 'lots'" in one_error_line(err, "simulate")
    assert list(tmp_path.iterdir()) == []
    spec = engine_spec("gflash", "tiny", "e-")
    with pytest.raises(RunError, match="exceeds the energy limit of 1 GeV"):
        simulate_to_file(spec, np.array([500.0, 2000.0]), None, 0, tmp_path / "s.h5", max_energy=1e3)
    simulate_to_file(spec, "list:500MeV,2GeV", 2, 0, tmp_path / "s.h5", max_energy=2e3)


@pytest.mark.parametrize(
    ("pid", "edges", "message"),
    [
        ("abc", "0,5,10", "pid 'abc' is not an integer"),
        ("11", "0,5,nan", "layer 0: radial edges must be finite"),
        ("11", "0,inf", "layer 0: radial edges must be finite"),
        ("11", "0,-inf,5", "layer 0: radial edges must be finite"),
    ],
)
def test_binning_xml_values_are_checked(tmp_path, cli, pid, edges, message):
    xml = tmp_path / "bins.xml"
    xml.write_text(f'<Bins><Bin pid="{pid}" name="electron"><Layer id="0" r_edges="{edges}" n_bin_alpha="4"/></Bin></Bins>')
    with pytest.raises(GeometryError, match=message):
        Geometry.from_xml(xml)
    status, err = cli("simulate", "--engine", "gflash", "--geometry", xml, "--energy", "1GeV", "--n", "1", "-o", tmp_path / "s.h5")
    assert status == 2 and message in one_error_line(err, "simulate")


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (RuntimeError("boom\nin two lines"), "unexpected RuntimeError: boom in two lines (run with -v for the traceback)"),
        (MemoryError(), "out of memory; ask for fewer showers or smaller batches"),
        (OSError(errno.EACCES, "Permission denied", "x.h5"), "Permission denied: x.h5"),
        (KeyError("energy"), "unexpected KeyError: 'energy' (run with -v for the traceback)"),
    ],
)
def test_main_turns_any_exception_into_one_line(tmp_path, cli, monkeypatch, capsys, exc, line):
    def fail(args: object) -> int:
        raise exc

    monkeypatch.setattr(simulate_command, "run", fail)
    status, err = cli(*SIM, "-o", tmp_path / "s.h5")
    assert status == 2 and err == f"calogen simulate: error: {line}\n"
    status, err = cli("-v", *SIM, "-o", tmp_path / "s.h5")
    assert status == 2 and err.startswith("Traceback (most recent call last)") and err.endswith(f"calogen simulate: error: {line}\n")


def test_usage_errors_are_one_line_and_help_is_success(cli):
    status, err = cli("simulate", "--energy", "1GeV")
    assert status == 2 and err.count("\n") == 1 and "the following arguments are required" in err
    assert cli("--help")[0] == 0
