"""Where showers come from: calogen in this process, or a KServe-v2 / Triton server over gRPC or HTTP.

Both backends answer ``showers(energies, seed, per_particle=False, directions=None) -> (N, voxels)`` float32
MeV for one event. ``directed`` says whether the model is conditioned on the incident direction; such a
model takes ``directions (N, 2)`` ``(theta, phi)`` rad to the layer normal (locally ``sample(...,
directions=...)``, on a server the ``INCIDENT_DIRECTION`` tensor, FP32), any other takes none. Batched
(the default), the event's showers go out in one call (one request, or requests of the server's
``max_batch_size``); per particle, in one call per shower. Chunk ``k`` (a batch, or particle
``k``) is sampled with seed ``derive_seed(seed, k)``, so for the same event the server gives the showers
the local backend gives (up to the rounding of the server's merged batches). The server backend sends
all of an event's requests at once with the client's asynchronous call and waits for all of them, as
CMS's SONIC does.

A model exported for a real Triton server (``calogen export --format triton``) takes its noise as inputs
(``NOISE_*``, listed in its config) instead of a seed: the backend then sends standard-normal noise drawn
with numpy from ``derive_seed(seed, k)`` — showers of the same distribution, not the same showers as
calogen's own noise stream for that seed.
"""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from calogen.generator import derive_seed
from calogen.geometry import Geometry
from calogen.serve.protocol import DIRECTION_INPUT

__all__ = ["SHIPPED_MODEL", "LocalBackend", "TritonBackend"]

SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "src" / "calogen" / "data" / "pretrained" / "cpu-small-ds2"


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


class LocalBackend:
    """A calogen model (``calogen.load``) run in this process.

    Args:
        model_dir: the model directory (default: the shipped DS2 model).
        nfe: network evaluations per shower (None: the model's).
    """

    def __init__(self, model_dir: str | Path | None = None, *, nfe: int | None = None) -> None:
        import calogen

        self.model = calogen.load(model_dir or SHIPPED_MODEL)
        self.geometry: Geometry = self.model.geometry
        self.nfe = nfe
        self.energy_range = (self.model.preprocessor.e_min, self.model.preprocessor.e_max)
        self.directed = bool(getattr(getattr(self.model, "config", None), "directions", False))

    def showers(self, energies: np.ndarray, seed: int, *, per_particle: bool = False, directions: np.ndarray | None = None) -> np.ndarray:
        e = np.asarray(energies, dtype=np.float32)
        parts = _chunks(e.size, 1 if per_particle else max(e.size, 1))
        out = [self._sample(e[sl], derive_seed(seed, k), None if directions is None else directions[sl]) for k, sl in enumerate(parts)]
        return np.concatenate(out) if out else np.empty((0, self.geometry.n_voxels), np.float32)

    def _sample(self, energies: np.ndarray, seed: int, directions: np.ndarray | None) -> np.ndarray:
        if directions is None:
            return self.model.sample(energies, seed=seed, nfe=self.nfe)
        return self.model.sample(energies, seed=seed, nfe=self.nfe, directions=directions)

    def close(self) -> None:
        pass


class TritonBackend:
    """A model served over the KServe-v2 protocol: ``calogen serve``, or Triton with a calogen-served model.

    Args:
        url: ``grpc://host:port`` (default scheme) or ``http://host:port``.
        model: the served model's name (default: the only model the server lists).
        geometry: the model's geometry (default: the built-in one named in the model's config).
    """

    def __init__(self, url: str, *, model: str | None = None, geometry: Geometry | None = None) -> None:
        parsed = urlparse(url if "://" in url else f"grpc://{url}")
        self.protocol, address = parsed.scheme, parsed.netloc
        if self.protocol == "grpc":
            import tritonclient.grpc as client_module
        elif self.protocol == "http":
            import tritonclient.http as client_module  # type: ignore[no-redef]
        else:
            raise SystemExit(f"--url {url!r}: use grpc://HOST:PORT or http://HOST:PORT")
        self._module = client_module
        self.client = client_module.InferenceServerClient(address, **({"concurrency": 16} if self.protocol == "http" else {}))
        self.model = model or self._only_model()
        config = self.client.get_model_config(self.model)
        params, self.max_batch, inputs = self._config(config)
        self.noise_dims = {name: dims for name, dims in inputs.items() if name.startswith("NOISE_")}
        self.directed = DIRECTION_INPUT in inputs
        self.geometry = geometry or Geometry.builtin(params["geometry"])
        low, _, high = params.get("energy_range_mev", "0:inf").partition(":")
        self.energy_range = (float(low), float(high))

    def _only_model(self) -> str:
        index = self.client.get_model_repository_index()
        names = [m.name for m in index.models] if self.protocol == "grpc" else [m["name"] for m in index]
        if len(names) != 1:
            raise SystemExit(f"the server lists models {names}; choose one with --model")
        return names[0]

    def _config(self, config) -> tuple[dict[str, str], int, dict[str, list[int]]]:  # type: ignore[no-untyped-def]
        """Parameters, ``max_batch_size`` and the inputs' per-shower dims of a model config."""
        if self.protocol == "grpc":
            cfg = config.config
            inputs = {i.name: list(i.dims) for i in cfg.input}
            return {k: v.string_value for k, v in cfg.parameters.items()}, int(cfg.max_batch_size), inputs
        inputs = {i["name"]: [int(d) for d in i["dims"]] for i in config.get("input", [])}
        return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}, int(config["max_batch_size"]), inputs

    def _request(self, energies: np.ndarray, seed: int, directions: np.ndarray | None) -> tuple[list, dict[str, int] | None]:  # type: ignore[type-arg]
        """Input tensors and request parameters for ``energies (n, 1)`` (and ``directions (n, 2)``): a seed, or noise drawn from it."""
        arrays = {"INCIDENT_ENERGY": energies}
        rng = np.random.default_rng(seed)
        arrays.update({name: rng.standard_normal((energies.shape[0], *dims), dtype=np.float32) for name, dims in self.noise_dims.items()})
        if directions is not None:
            arrays[DIRECTION_INPUT] = np.asarray(directions, dtype=np.float32)
        inputs = []
        for name, array in arrays.items():
            inputs.append(self._module.InferInput(name, list(array.shape), "FP32"))
            inputs[-1].set_data_from_numpy(array)
        return inputs, (None if self.noise_dims else {"seed": seed})

    def showers(self, energies: np.ndarray, seed: int, *, per_particle: bool = False, directions: np.ndarray | None = None) -> np.ndarray:
        e = np.asarray(energies, dtype=np.float32).reshape(-1, 1)
        parts = _chunks(e.shape[0], 1 if per_particle else self.max_batch)
        results: list[np.ndarray | None] = [None] * len(parts)
        errors: list[Exception] = []
        done = threading.Semaphore(0)
        handles = []
        for k, sl in enumerate(parts):
            inputs, params = self._request(e[sl], derive_seed(seed, k), None if directions is None else directions[sl])
            outputs = [self._module.InferRequestedOutput("SHOWERS")]
            if self.protocol == "grpc":
                self.client.async_infer(self.model, inputs, self._callback(k, results, errors, done), outputs=outputs, parameters=params)
            else:
                handles.append(self.client.async_infer(self.model, inputs, outputs=outputs, parameters=params))
        if self.protocol == "grpc":
            for _ in parts:
                done.acquire()
        else:
            results = [h.get_result().as_numpy("SHOWERS") for h in handles]
        if errors:
            raise errors[0]
        return np.concatenate(results) if results else np.empty((0, self.geometry.n_voxels), np.float32)  # type: ignore[arg-type]

    @staticmethod
    def _callback(k: int, results: list, errors: list, done: threading.Semaphore):  # type: ignore[no-untyped-def,type-arg]
        def receive(result, error) -> None:  # type: ignore[no-untyped-def]
            if error is not None:
                errors.append(error)
            else:
                results[k] = result.as_numpy("SHOWERS")
            done.release()

        return receive

    def close(self) -> None:
        self.client.close()
