"""Shards of simulate and generate runs: merged shards equal the unsharded file; bad shard sets are refused."""

from __future__ import annotations

import itertools
import json
import re

import h5py
import numpy as np
import pytest

from calogen.cli import main
from calogen.generator import generate_to_file
from calogen.geometry import Geometry
from calogen.shards import MANIFEST_ATTR, Manifest, ShardError, merge_shards, read_manifest, shard_rows
from calogen.sim.engines import engine_spec
from calogen.sim.run import simulate_to_file

TINY = Geometry.builtin("tiny")
N, SEED = 23, 4
ENERGY = "loguniform:1GeV:100GeV"
SIM = ["simulate", "--engine", "gflash", "--geometry", "tiny", "--energy", ENERGY, "--n", str(N), "--seed", str(SEED), "--chunk-size", "4"]


class Toy:
    """A Generator whose shower depends on its seed and on its row within the call (as batched networks may)."""

    geometry = TINY

    def sample(self, energies: np.ndarray, *, seed: int, batch_size: int | None = None) -> np.ndarray:
        e = np.asarray(energies, dtype=np.float32).reshape(-1, 1)
        w = np.random.default_rng(seed).random((e.shape[0], TINY.n_voxels)) + np.arange(e.shape[0])[:, None]
        return (e * w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def same_showers(a, b) -> bool:
    """The two files hold the same bytes in both shower datasets."""
    with h5py.File(a) as fa, h5py.File(b) as fb:
        return all(fa[k][:].tobytes() == fb[k][:].tobytes() and fa[k].shape == fb[k].shape for k in ("incident_energies", "showers"))


def _simulate(path, **options):
    return simulate_to_file(engine_spec("gflash", TINY, "e-"), ENERGY, N, SEED, path, chunk_size=4, **options)


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory):
    return _simulate(tmp_path_factory.mktemp("sim") / "all.h5")


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """The three shards of the run, written through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    for i in range(3):
        assert main([*SIM, "--shard-index", str(i), "--num-shards", "3", "-o", str(root / f"s{i}.h5")]) == 0
    return [root / f"s{i}.h5" for i in range(3)]


def test_shard_rows_cover_the_run_with_balanced_sizes():
    rows = [shard_rows(23, i, 7) for i in range(7)]
    assert rows[0][0] == 0 and rows[-1][1] == 23 and all(a[1] == b[0] for a, b in itertools.pairwise(rows))
    assert {b - a for a, b in rows} == {3, 4}
    with pytest.raises(ShardError, match="number of shards"):
        shard_rows(5, 0, 6)
    with pytest.raises(ShardError, match="shard index"):
        shard_rows(5, 3, 3)


@pytest.mark.parametrize("count", [1, 3, 7])
def test_simulate_shards_merge_to_the_unsharded_file(tmp_path, unsharded, count):
    paths = [_simulate(tmp_path / f"s{i}.h5", shard=(i, count)) for i in range(count)]
    manifests = [read_manifest(p) for p in paths]
    assert [(m.start, m.stop) for m in manifests] == [shard_rows(N, i, count) for i in range(count)]
    assert len({m.run_sha256 for m in manifests}) == 1 and manifests[0].run["command"] == "simulate"
    merged = merge_shards(paths[::-1], tmp_path / "merged.h5")  # any order: rows decide
    assert same_showers(merged, unsharded)
    with h5py.File(merged) as fm, h5py.File(unsharded) as fu:
        assert dict(fm.attrs) == dict(fu.attrs) and MANIFEST_ATTR not in fm.attrs


@pytest.mark.parametrize("count", [1, 3, 7])
def test_generate_shards_merge_to_the_unsharded_file(tmp_path, count):
    energies = np.geomspace(1e3, 1e5, N)
    generate_to_file(Toy(), energies, tmp_path / "all.h5", seed=SEED, chunk_size=5)
    paths = []
    for i in range(count):
        manifest = Manifest.for_shard("generate", {"toy": 1}, seed=SEED, geometry="tiny", total=N, index=i, count=count)
        generate_to_file(Toy(), energies, tmp_path / f"g{i}.h5", seed=SEED, chunk_size=5, batch_size=2, manifest=manifest)
        paths.append(tmp_path / f"g{i}.h5")
    assert same_showers(merge_shards(paths, tmp_path / "merged.h5"), tmp_path / "all.h5")


def test_cli_shards_merge_and_report_rows(tmp_path, unsharded, three, capsys):
    assert main(["merge", "-o", str(tmp_path / "m.h5"), f"{three[0].parent}/s*.h5"]) == 0
    assert same_showers(tmp_path / "m.h5", unsharded)
    assert main([*SIM, "--shard-index", "1", "--num-shards", "3", "-o", str(tmp_path / "x.h5")]) == 0
    assert "wrote 8 (rows [7, 15) of 23, shard 1 of 3)" in capsys.readouterr().out


def _corrupt(src, dst):
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        f["showers"][0, 5] += 1.0
    return dst


def _foreign(tmp_path):
    path = tmp_path / "foreign.h5"
    assert main([*SIM[:-4], "--seed", "5", "--chunk-size", "4", "--shard-index", "1", "--num-shards", "3", "-o", str(path)]) == 0
    return path


@pytest.mark.parametrize(
    ("pick", "message"),
    [
        (lambda s, t: [s[0], s[2]], r"rows \[7, 15\) of the 23-shower run are missing .*add shard 1 of 3"),
        (lambda s, t: [s[0], s[1]], r"rows \[15, 23\) of the 23-shower run are missing .*add shard 2 of 3"),
        (lambda s, t: [s[0], s[1], s[1], s[2]], "is given twice"),
        (lambda s, t: [*s, _simulate(t / "half.h5", shard=(1, 2))], "overlaps"),
        (lambda s, t: [s[0], _foreign(t), s[2]], "belongs to another run"),
        (lambda s, t: [s[0], _corrupt(s[1], t / "bad.h5"), s[2]], "do not match the hash in its manifest"),
        (lambda s, t: [s[0], s[1], t.parent / "sim0" / "all.h5"], "is not a shard"),
    ],
    ids=["gap", "missing-last", "duplicate", "overlap", "foreign", "corrupt", "not-a-shard"],
)
def test_merge_refuses_bad_shard_sets(tmp_path, three, unsharded, pick, message, capsys):
    capsys.readouterr()
    shards = pick(three, tmp_path)
    if "not a shard" in message:
        shards[-1] = unsharded
    assert main(["merge", "-o", str(tmp_path / "m.h5"), *map(str, shards)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "m.h5").exists() and not list(tmp_path.glob(".m.h5*"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--shard-index", "1"], "go together"),
        (["--shard-index", "3", "--num-shards", "3"], "must lie in 0..2"),
        (["--shard-index", "0", "--num-shards", "24"], "must lie in 1..23"),
        (["--shard-index", "-1", "--num-shards", "2"], "must be >= 0"),
    ],
)
def test_cli_bad_shard_options_exit_2(tmp_path, capsys, extra, message):
    assert main([*SIM, *extra, "-o", str(tmp_path / "x.h5")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "x.h5").exists()


def test_manifest_round_trip_and_strict_keys(three):
    manifest = read_manifest(three[1])
    assert Manifest.from_json(manifest.to_json()) == manifest and manifest.content_sha256["showers"]
    data = json.loads(manifest.to_json())
    with pytest.raises(ValueError, match="keys"):
        Manifest.from_json(json.dumps({**data, "extra": 1}))


def test_evaluate_reads_a_glob_of_shards_as_one_file(tmp_path, unsharded, three, capsys):
    common = ["--geometry", "tiny", "--metrics", "hist", "--quiet"]
    assert main(["evaluate", str(unsharded), f"gen={unsharded}", "--out", str(tmp_path / "a"), *common]) == 0
    assert main(["evaluate", f"{three[0].parent}/s*.h5", f"gen={three[2]},{three[0]},{three[1]}", "--out", str(tmp_path / "b"), *common]) == 0
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert a["samples"][0]["histograms"] == b["samples"][0]["histograms"] and b["samples"][0]["n_showers"] == N
    assert not list((tmp_path / "b").glob(".shards-*"))
    assert main(["evaluate", f"{three[0]},{unsharded}", f"gen={unsharded}", "--out", str(tmp_path / "c"), *common]) == 2
    assert "is not a shard but other files" in capsys.readouterr().err


def test_shards_cut_differently_merge_when_their_rows_tile_the_run(tmp_path, unsharded):
    parts = [_simulate(tmp_path / "a.h5", shard=(0, 2)), _simulate(tmp_path / "b.h5", shard=(2, 4)), _simulate(tmp_path / "c.h5", shard=(3, 4))]
    assert shard_rows(N, 0, 2)[1] == shard_rows(N, 2, 4)[0]
    assert same_showers(merge_shards(parts, tmp_path / "m.h5"), unsharded)


@pytest.mark.parametrize("kind", ["serial", "pool"])
def test_features_of_shards_on_an_executor_equal_the_unsharded_file(unsharded, three, kind):
    from calogen.eval.sharded_features import features_from_shards
    from calogen.executor import make_executor
    from calogen.features import features_from_file

    whole = features_from_file(unsharded, TINY, chunk_size=4)
    with make_executor(kind, 2 if kind == "pool" else 1) as executor:
        parts = features_from_shards(three, TINY, executor=executor, chunk_size=4)
    for name in ("e_inc", "e_total", "e_layer", "eta_centre", "r_width", "sparsity", "mean_shower"):
        assert getattr(parts, name).tobytes() == getattr(whole, name).tobytes(), name
    assert parts.n_showers == N
    assert np.array_equal(parts.voxel_spectrum.counts, whole.voxel_spectrum.counts)


def test_evaluate_computes_shard_features_on_an_executor(tmp_path, unsharded, three, capsys):
    common = ["--geometry", "tiny", "--metrics", "hist", "--quiet"]
    assert main(["evaluate", str(unsharded), f"gen={unsharded}", "--out", str(tmp_path / "a"), *common]) == 0
    shards = f"{three[2]},{three[0]},{three[1]}"
    assert main(["evaluate", shards, f"gen={shards}", "--out", str(tmp_path / "b"), "--executor", "serial", *common]) == 0
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert a["samples"][0]["histograms"] == b["samples"][0]["histograms"]
    assert main(["evaluate", shards, f"gen={unsharded}", "--out", str(tmp_path / "c"), "--executor", "serial", "--geometry", "tiny-hex"]) == 2
    assert "cylindrical geometries only" in capsys.readouterr().err
