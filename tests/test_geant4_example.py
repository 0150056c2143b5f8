"""The Geant4 example (examples/geant4/run.py): showers from calogen in process and from `calogen serve`.

Each run is a subprocess (Geant4 allows one run manager per process). Checked: every event's deposited
total equals the generated showers' total; a shower binned back in its own mesh is the generated shower;
the direction moves where the energy lands; the server gives the showers the local backend gives.
"""

from __future__ import annotations

import importlib.util
import json
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

import calogen
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


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, int]]:
    """``calogen serve`` of the shipped model on free ports: ``(http_port, grpc_port)``."""
    cmd = [sys.executable, "-m", "calogen.cli", "serve", str(SHIPPED), "--http-port", "0", "--grpc-port", "0"]
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
