"""The Geant4 example (examples/geant4/run.py): showers from calogen in process and from `calogen serve`.

Each run is a subprocess (Geant4 allows one run manager per process). Checked: every event's deposited
total equals the generated showers' total; a shower binned back in its own mesh is the generated shower;
the direction moves where the energy lands; the server gives the showers the local backend gives. A tiny
model conditioned on the direction gets each particle's incidence to the barrel's layer normal and is
placed in the layer-normal frame: its layers land in the barrel's layers, centred on the trajectory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _model_data import train_directed_tiny

import calogen
from calogen.generator import derive_seed
from calogen.geometry import Geometry
from calogen.io import read_showers

pytestmark = pytest.mark.skipif(importlib.util.find_spec("geant4_pybind") is None, reason="needs calogen[geant4] (geant4_pybind)")

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "examples" / "geant4" / "run.py"
SHIPPED = Path(calogen.__file__).parent / "data" / "pretrained" / "cpu-small-ds2"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "true"}


def run_example(tmp_path: Path, name: str, *args: str) -> dict:  # type: ignore[type-arg]
    """Run the example with ``args``; its JSON summary, plus the path of its CaloChallenge file."""
    out, summary = tmp_path / f"{name}.h5", tmp_path / f"{name}.json"
    cmd = [sys.executable, str(RUN), "--quiet", "-o", str(out), "--summary", str(summary), *args]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "mean per event: transport" in done.stdout
    return {**json.loads(summary.read_text()), "file": out}


def assert_energy_balance(result: dict) -> None:  # type: ignore[type-arg]
    for event in result["events"]:
        assert event["deposited_total"] == pytest.approx(event["generated_total"], rel=1e-12, abs=1e-9)
        assert event["generated_total"] == pytest.approx(sum(event["generated"]), rel=1e-12)
        assert event["generated_total"] > 0


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[type-arg]
    tmp = tmp_path_factory.mktemp("local")
    return run_example(tmp, "local", "--events", "20", "--particles", "2", "--spread-deg", "15", "--energy", "loguniform:10GeV:100GeV")


def test_local_backend_deposits_exactly_the_generated_energy(local: dict) -> None:  # type: ignore[type-arg]
    events = local["events"]
    assert len(events) == 20 and all(len(e["energies"]) == 2 for e in events)
    assert_energy_balance(local)
    assert all(10e3 <= e <= 100e3 for event in events for e in event["energies"])
    data = read_showers(local["file"])
    assert len(data) == 20
    np.testing.assert_allclose(data.energies[:, 0], [sum(e["energies"]) for e in events], rtol=1e-6)


def test_direction_moves_the_energy_not_the_shower(tmp_path: Path) -> None:
    """The same showers entering along two directions: the shower in its own mesh is unchanged, the detector's view moves."""
    common = ("--events", "3", "--energy", "50GeV", "--seed", "7")
    straight = run_example(tmp_path, "straight", *common, "--direction", "0,1,0")
    tilted = run_example(tmp_path, "tilted", *common, "--direction", "0,1,1")
    for result in (straight, tilted):
        assert_energy_balance(result)
    rows = [read_showers(r["file"]).showers for r in (straight, tilted)]
    np.testing.assert_array_equal(rows[0], rows[1])  # the same showers, each binned back in its own mesh
    for a, b in zip(straight["events"], tilted["events"], strict=True):
        assert a["generated"] == b["generated"]
        assert b["mesh_total"] == pytest.approx(b["generated_total"], rel=1e-6)  # one shower: its mesh holds all of it
        np.testing.assert_allclose(a["entries"][0], [0, 800, 0], atol=1e-6)
        np.testing.assert_allclose(b["entries"][0], [0, 800, 800], atol=1e-6)
        for event in (a, b):  # the energy lies along the direction, a few cm behind the entry point
            offset = np.subtract(event["barycentre"], event["entries"][0])
            along = offset @ np.asarray(event["directions"][0])
            assert 20 < along < 120 and np.linalg.norm(offset - along * np.asarray(event["directions"][0])) < 0.1 * along
        assert np.linalg.norm(np.subtract(a["barycentre"], b["barycentre"])) > 700


@contextlib.contextmanager
def serving(model_dir: Path) -> Iterator[tuple[int, int]]:
    """``calogen serve`` of ``model_dir`` on free ports: ``(http_port, grpc_port)``."""
    cmd = [sys.executable, "-m", "calogen.cli", "serve", str(model_dir), "--http-port", "0", "--grpc-port", "0"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        deadline, ports = time.monotonic() + 90, None
        assert proc.stdout is not None
        while ports is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            found = re.search(r"on http://127\.0\.0\.1:(\d+) and grpc 127\.0\.0\.1:(\d+)", line)
            ports = (int(found[1]), int(found[2])) if found else None
        assert ports is not None, "calogen serve did not start"
        yield ports
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, int]]:
    """``calogen serve`` of the shipped model: ``(http_port, grpc_port)``."""
    with serving(SHIPPED) as ports:
        yield ports


def test_server_backend_gives_the_local_showers(server: tuple[int, int], local: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    http_port, grpc_port = server
    args = ("--events", "5", "--particles", "2", "--spread-deg", "15", "--energy", "loguniform:10GeV:100GeV", "--backend", "triton")
    remote = run_example(tmp_path, "grpc", *args, "--url", f"grpc://127.0.0.1:{grpc_port}")
    assert len(remote["events"]) == 5
    assert_energy_balance(remote)
    for got, want in zip(remote["events"], local["events"][:5], strict=False):
        assert got["energies"] == want["energies"]
        np.testing.assert_allclose(got["generated"], want["generated"], rtol=1e-5)
        np.testing.assert_allclose(got["barycentre"], want["barycentre"], rtol=1e-5)
    per_particle = run_example(tmp_path, "http", *args, "--url", f"http://127.0.0.1:{http_port}", "--per-particle")
    assert per_particle["per_particle"] and len(per_particle["events"]) == 5
    assert_energy_balance(per_particle)


class OnnxTriton:
    """A stand-in for ``tritonclient.grpc.InferenceServerClient`` that runs an exported Triton repository in onnxruntime."""

    def __init__(self, repository: Path, name: str) -> None:
        import onnxruntime as ort
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2 as mc

        self.name, self.requests = name, []  # type: ignore[var-annotated]
        self.config = text_format.Parse((repository / name / "config.pbtxt").read_text(), mc.ModelConfig())
        self.session = ort.InferenceSession(str(repository / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])

    def get_model_repository_index(self):  # type: ignore[no-untyped-def]
        from types import SimpleNamespace

        return SimpleNamespace(models=[SimpleNamespace(name=self.name)])

    def get_model_config(self, name: str):  # type: ignore[no-untyped-def]
        from types import SimpleNamespace

        return SimpleNamespace(config=self.config)

    def async_infer(self, model_name, inputs, callback, outputs=None, parameters=None) -> None:  # type: ignore[no-untyped-def]
        from types import SimpleNamespace

        feed = {i.name(): np.frombuffer(i._raw_content, dtype=np.float32).reshape(i.shape()) for i in inputs}
        self.requests.append(({k: v.shape for k, v in feed.items()}, parameters))
        showers = self.session.run(["SHOWERS"], feed)[0]
        callback(SimpleNamespace(as_numpy=lambda name: showers), None)

    def close(self) -> None:
        pass


def test_server_backend_sends_noise_to_an_exported_triton_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model exported with --format triton takes noise, not a seed: the backend draws it, chunked at max_batch_size."""
    import tritonclient.grpc

    from calogen.cli import main

    assert main(["export", str(SHIPPED), "--format", "triton", "-o", str(tmp_path / "repo"), "--max-batch-size", "4", "--no-check"]) == 0
    fake = OnnxTriton(tmp_path / "repo", "cpu-small-ds2")
    monkeypatch.setattr(tritonclient.grpc, "InferenceServerClient", lambda *a, **k: fake)
    monkeypatch.syspath_prepend(str(RUN.parent))
    from backends import TritonBackend

    backend = TritonBackend("grpc://triton.example:8001")
    assert backend.model == "cpu-small-ds2" and backend.geometry.name == "ds2" and backend.max_batch == 4
    energies = np.geomspace(1e4, 1e5, 6)
    showers = backend.showers(energies, seed=3)
    assert [shapes["NOISE_SHAPE"] for shapes, _ in fake.requests] == [(4, 6480), (2, 6480)]
    assert all(shapes["NOISE_ENERGY"][1] == 856 and params is None for shapes, params in fake.requests)
    assert showers.shape == (6, 6480) and np.isfinite(showers).all()
    assert np.all((showers.sum(axis=1) > 0.5 * energies) & (showers.sum(axis=1) < 1.2 * energies))
    np.testing.assert_array_equal(backend.showers(energies, seed=3), showers)  # the noise follows the seed


# --- a model conditioned on the direction -----------------------------------------------------------------------
TILT = math.radians(20.0)
"""A direction 20 degrees from the barrel's normal (0, 1, 0) at y = 800 mm, leaning along the beam axis."""


@pytest.fixture(scope="module")
def directed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model (geometry ``tiny``, 1-100 GeV) conditioned on the direction, trained a few steps on toy showers at random directions."""
    return train_directed_tiny(tmp_path_factory.mktemp("directed"))


def layer_energies(geometry: Geometry, shower: np.ndarray) -> np.ndarray:
    return np.add.reduceat(shower.astype(np.float64), geometry.layer_offsets[:-1])


@pytest.mark.parametrize("direction", [(0.0, 1.0, 0.0), (0.3, 0.8, -0.4), (0.2, -0.9, 0.3)], ids=["normal", "oblique", "from-outside"])
def test_layer_normal_frame_centres_every_ring_on_the_trajectory(direction: tuple[float, float, float], monkeypatch: pytest.MonkeyPatch) -> None:
    """Layer l lies z_l deep along the normal (turned into the calorimeter), each ring centred where the trajectory
    crosses that depth; mesh_row reads the shower back in that frame only."""
    monkeypatch.syspath_prepend(str(RUN.parent))
    from placement import local_centres, mesh_row, place, rotation

    geometry = Geometry.builtin("tiny")
    entry, normal = np.array([0.0, 800.0, 0.0]), np.array([0.0, 1.0, 0.0])
    u = np.asarray(direction) / np.linalg.norm(direction)
    inward = normal * np.sign(u @ normal)
    shower = np.arange(1, geometry.n_voxels + 1, dtype=np.float32)
    points, energies = place(shower[None], entry[None], u[None], local_centres(geometry), normal[None])
    mid = np.array([0.5 * sum(layer.z_range) for layer in geometry.layers])[geometry.voxel_layer]
    np.testing.assert_allclose((points - entry) @ inward, mid, atol=1e-9)
    for ring in np.unique(np.stack([geometry.voxel_layer, geometry.voxel_r], axis=1), axis=0):
        voxels = (geometry.voxel_layer == ring[0]) & (geometry.voxel_r == ring[1])
        np.testing.assert_allclose(points[voxels].mean(axis=0), entry + mid[voxels][0] / abs(u @ normal) * u, atol=1e-9)
    np.testing.assert_array_equal(mesh_row(geometry, points, energies, entry, u, normal), shower)
    rotated = entry + local_centres(geometry) @ rotation(u).T
    if direction == (0.0, 1.0, 0.0):  # at normal incidence both frames agree
        np.testing.assert_allclose(points, rotated, atol=1e-9)
    else:
        assert np.abs(points - rotated).max() > 1.0
        assert not np.array_equal(mesh_row(geometry, points, energies, entry, u), shower)


class Recorder:
    """A backend that records the directions it gets and answers uniform showers of the whole energy."""

    def __init__(self, directed: bool) -> None:
        self.geometry, self.directed, self.received = Geometry.builtin("tiny"), directed, []  # type: ignore[var-annotated]

    def showers(self, energies: np.ndarray, seed: int, *, per_particle: bool = False, directions: np.ndarray | None = None) -> np.ndarray:
        self.received.append(directions)
        return np.repeat(np.asarray(energies, np.float32)[:, None] / self.geometry.n_voxels, self.geometry.n_voxels, axis=1)


ENTRIES = [  # energy MeV, entry point mm, direction; the incidence (theta rad) to the barrel's radial normal there
    ((1e4, 0.0, 800.0, 0.0, 0.0, 1.0, 0.0), 0.0),
    ((2e4, 0.0, 800.0, 0.0, 0.0, math.cos(TILT), math.sin(TILT)), TILT),
    ((3e4, 0.0, -800.0, 10.0, 0.0, -math.cos(TILT), -math.sin(TILT)), TILT),
    ((4e4, 100.0, math.sqrt(800**2 - 100**2), 0.0, 0.0, 1.0, 0.0), math.asin(100 / 800)),
]


@pytest.mark.parametrize("directed", [True, False], ids=["directed", "not-directed"])
def test_backend_gets_the_incidence_to_the_layer_normal(directed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A direction-conditioned backend gets (theta, 0) to the barrel's normal and every shower layer lands in its barrel
    layer; any other backend gets no direction and its showers are rotated onto the direction, as before."""
    monkeypatch.syspath_prepend(str(RUN.parent))
    from detector import Barrel, Readout
    from hook import Entries, shower_event
    from placement import local_centres, rotation

    backend = Recorder(directed)
    barrel = Barrel(backend.geometry)
    entries = Entries()
    entries.rows = [row for row, _ in ENTRIES]
    record = shower_event(backend, barrel, local_centres(backend.geometry), seed=0, per_particle=False)(0, entries, 0.0)
    showers = backend.showers(record.energies, 0)
    assert record.readout.total == pytest.approx(record.generated.sum(), rel=1e-12)
    if not directed:
        assert backend.received[0] is None and record.incidence is None
        centres = local_centres(backend.geometry)
        hits = np.concatenate([entry + centres @ rotation(u).T for entry, u in zip(record.entries, record.directions, strict=True)])
        want = Readout.collect(barrel, hits, showers.ravel())
        np.testing.assert_array_equal(record.readout.cells, want.cells)
        np.testing.assert_array_equal(record.readout.energies, want.energies)
        return
    np.testing.assert_allclose(backend.received[0], [[theta, 0.0] for _, theta in ENTRIES], atol=1e-12)
    np.testing.assert_array_equal(record.incidence, backend.received[0])
    assert record.readout.outside == 0.0  # tilted rotated showers poke out in front of the barrel; these do not
    layers = np.bincount(record.readout.cells // (barrel.n_phi * barrel.n_z), weights=record.readout.energies, minlength=barrel.geometry.n_layers)
    np.testing.assert_allclose(layers, layer_energies(barrel.geometry, showers.astype(np.float64).sum(axis=0)), rtol=1e-9)


def test_direction_conditioned_model_generates_at_the_incidence(directed_dir: Path, tmp_path: Path) -> None:
    """An electron 20 degrees off the normal: the event binned back in its frame is ``sample(directions=[(20 deg, 0)])``
    with the event's seed, and every shower layer's energy is in the barrel layer it belongs to."""
    cells = tmp_path / "cells.npz"
    args = ("--model", str(directed_dir), "--events", "3", "--energy", "20GeV", "--seed", "5", "--readout", str(cells))
    result = run_example(tmp_path, "directed", *args, "--direction", f"0,{math.cos(TILT)!r},{math.sin(TILT)!r}")
    assert_energy_balance(result)
    model = calogen.load(directed_dir)
    rows, readout = read_showers(result["file"]).showers, np.load(cells)
    n_phi, n_z = readout["shape"][1:]
    for row, event in zip(rows, result["events"], strict=True):
        np.testing.assert_allclose(event["entries"][0], [0, 800, 800 * math.tan(TILT)], atol=1e-6)
        np.testing.assert_allclose(event["incidence"], [[TILT, 0.0]], atol=1e-9)
        seed, energies = derive_seed(derive_seed(derive_seed(5, 1), event["event"]), 0), np.asarray(event["energies"], np.float32)
        want = model.sample(energies, seed=seed, directions=np.array([[TILT, 0.0]]))[0]
        np.testing.assert_allclose(row, want, rtol=1e-5, atol=1e-6 * want.max())
        assert np.abs(model.sample(energies, seed=seed)[0] - want).max() > 1e-3 * want.max()  # normal incidence is another shower
        mine = readout["event"] == event["event"]
        layers = np.bincount(readout["cell"][mine] // (n_phi * n_z), weights=readout["energy"][mine], minlength=model.geometry.n_layers)
        np.testing.assert_allclose(layers, layer_energies(model.geometry, want), rtol=1e-5)


def test_server_backend_sends_the_incidence(directed_dir: Path, tmp_path: Path) -> None:
    """Against ``calogen serve`` of a direction-conditioned model: each particle's incidence to the radial normal at its
    entry point travels as INCIDENT_DIRECTION, so the server's events are the local backend's."""
    args = ("--events", "3", "--particles", "2", "--spread-deg", "15", "--energy", "loguniform:10GeV:50GeV", "--seed", "2")
    with serving(directed_dir) as (_, grpc_port):
        remote = run_example(tmp_path, "directed-grpc", *args, "--backend", "triton", "--url", f"grpc://127.0.0.1:{grpc_port}")
    local = run_example(tmp_path, "directed-local", *args, "--model", str(directed_dir))
    assert_energy_balance(remote)
    for got, want in zip(remote["events"], local["events"], strict=True):
        entries, directions = np.asarray(got["entries"]), np.asarray(got["directions"])
        radial = entries[:, :2] / np.linalg.norm(entries[:, :2], axis=1, keepdims=True)
        theta = np.arccos(np.abs(np.sum(directions[:, :2] * radial, axis=1)))
        np.testing.assert_allclose(got["incidence"], np.stack([theta, np.zeros(2)], axis=1), atol=1e-9)
        assert 0.02 < theta.max() < math.radians(15.01)
        assert got["energies"] == want["energies"] and got["incidence"] == want["incidence"]
        np.testing.assert_allclose(got["generated"], want["generated"], rtol=1e-5)
        np.testing.assert_allclose(got["barycentre"], want["barycentre"], rtol=1e-5)
    rows = [read_showers(r["file"]).showers for r in (remote, local)]
    np.testing.assert_allclose(rows[0], rows[1], rtol=1e-5, atol=1e-6 * rows[1].max())  # the shape follows the direction (2e-3 of the largest voxel)
