"""The executor abstraction: serial, process pool and Dask give the same results, files and retries."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from _model_data import one_thread  # noqa: F401
from test_shards import ENERGY, N, SEED, TINY, Toy, same_showers

import calogen
from calogen.cli import main
from calogen.executor import DaskExecutor, ExecutorError, PoolExecutor, SerialExecutor, make_executor
from calogen.generator import generate_as_shards, generate_to_file
from calogen.sim.engines import engine_spec
from calogen.sim.run import simulate_to_file

SHIPPED = Path(calogen.__file__).parent / "data" / "pretrained" / "cpu-small-ds2"


def _square(x: int) -> int:
    return x * x


def _flaky(task: tuple[Path, int]) -> int:
    """Fails the first time it sees a task (a marker file remembers), then returns its value."""
    marker, value = task
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"first attempt at {value} fails")
    return value


@dataclass(frozen=True)
class ToyRecipe:
    """A picklable recipe for :class:`test_shards.Toy`."""

    def build(self) -> Toy:
        return Toy()


def _dask(workers: int = 2) -> DaskExecutor:
    pytest.importorskip("distributed")
    return DaskExecutor(workers=workers, processes=False)  # threads: starting processes costs seconds here


@pytest.fixture(scope="module")
def serial_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("serial") / "serial.h5"
    return simulate_to_file(engine_spec("gflash", TINY, "e-"), ENERGY, N, SEED, path, chunk_size=4)


@pytest.mark.parametrize("make", [SerialExecutor, lambda: PoolExecutor(2), _dask], ids=["serial", "pool", "dask"])
def test_map_keeps_order_and_retries(tmp_path, make):
    with make() as executor:
        assert list(executor.map(_square, list(range(7)))) == [x * x for x in range(7)]
        tasks = [(tmp_path / f"m{i}", i) for i in range(3)]
        assert list(executor.map(_flaky, tasks, retries=1)) == [0, 1, 2]
        with pytest.raises(RuntimeError, match="first attempt"):
            list(executor.map(_flaky, [(tmp_path / "once", 9)], retries=0))


def test_dask_executor_uses_a_given_client_and_leaves_it_open():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        with DaskExecutor(client=client) as executor:
            assert executor.workers == 1 and list(executor.map(_square, [3, 4])) == [9, 16]
        assert client.status == "running"


@pytest.mark.parametrize("make", [lambda: PoolExecutor(2), _dask], ids=["pool", "dask"])
def test_simulate_gives_the_serial_file(tmp_path, serial_file, make):
    with make() as executor:
        out = simulate_to_file(engine_spec("gflash", TINY, "e-"), ENERGY, N, SEED, tmp_path / "x.h5", chunk_size=4, executor=executor)
    assert same_showers(out, serial_file) and not list(tmp_path.glob(".x.h5*"))
    with h5py.File(out) as fo, h5py.File(serial_file) as fs:
        assert dict(fo.attrs) == dict(fs.attrs)


@pytest.mark.parametrize("make", [lambda: PoolExecutor(2), _dask], ids=["pool", "dask"])
def test_generate_as_shards_gives_the_serial_file(tmp_path, make):
    energies = np.geomspace(1e3, 1e5, N)
    generate_to_file(Toy(), energies, tmp_path / "serial.h5", seed=SEED, chunk_size=5)
    with make() as executor:
        generate_as_shards(ToyRecipe(), energies, tmp_path / "x.h5", seed=SEED, run={"geometry": "tiny"}, executor=executor,
                           shards=3, chunk_size=5)  # fmt: skip
    assert same_showers(tmp_path / "x.h5", tmp_path / "serial.h5")


GEN = ["generate", str(SHIPPED), "--n", str(N), "--energy", "loguniform:1GeV:100GeV", "--nfe", "1", "--seed", "2", "--no-progress"]


@pytest.mark.skipif(not (SHIPPED / "config.json").is_file(), reason="no shipped model")
def test_generate_cli_shards_executors_and_batch_size_give_the_same_bytes(tmp_path, one_thread):
    assert main([*GEN, "-o", str(tmp_path / "serial.h5")]) == 0
    for i in range(3):
        assert main([*GEN, "--batch-size", "7", "--shard-index", str(i), "--num-shards", "3", "-o", str(tmp_path / f"part-{i}.h5")]) == 0
    assert main(["merge", "-o", str(tmp_path / "merged.h5"), str(tmp_path / "part-*.h5")]) == 0
    assert same_showers(tmp_path / "merged.h5", tmp_path / "serial.h5")
    assert main([*GEN, "--executor", "pool", "--workers", "2", "-o", str(tmp_path / "pool.h5")]) == 0
    assert same_showers(tmp_path / "pool.h5", tmp_path / "serial.h5")


def test_without_dask_the_executor_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ExecutorError, match=r"pip install 'calogen\[dask\]'"):
        make_executor("dask")
    argv = ["simulate", "--engine", "gflash", "--geometry", "tiny", "--energy", "1GeV", "--n", "3", "-o", str(tmp_path / "x.h5")]
    assert main([*argv, "--executor", "dask"]) == 2
    assert "calogen[dask]" in capsys.readouterr().err and not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--executor", "pool", "--scheduler", "tcp://127.0.0.1:1"], "--scheduler applies to --executor dask"),
        (["--executor", "serial", "--workers", "2"], "runs one process"),
        (["--retries", "-1"], "--retries must be >= 0"),
    ],
)
def test_bad_executor_options_exit_2(tmp_path, capsys, extra, message):
    argv = ["simulate", "--engine", "gflash", "--geometry", "tiny", "--energy", "1GeV", "--n", "3", "-o", str(tmp_path / "x.h5")]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "x.h5").exists()
