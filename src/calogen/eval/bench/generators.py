"""What ``calogen bench`` times: Generator specifications parsed from text and built on demand.

A specification reads ``[NAME=]KIND[:ARGUMENT][@OPTIONS]``:

* ``model:DIR@nfe=2,sampler=euler`` — a model directory written by ``calogen train`` (default name
  ``DIR's name-nfeN``); a hybrid refiner's directory times the FastSim (run in this process) and the
  refiner together;
* ``gflash`` — the built-in GFLASH with its packaged calibration; ``mc`` — the detailed Monte Carlo;
* ``NAME=cmd:COMMAND[@timeout=S]`` — any program that writes a CaloChallenge HDF5 file. Each call writes the incident
  energies to ``{energies}`` (HDF5, ``incident_energies`` ``(N, 1)`` MeV) and ``{energies_txt}`` (one MeV
  value per line), runs ``COMMAND`` with ``{energies}``, ``{energies_txt}``, ``{n}``, ``{seed}`` and
  ``{out}`` replaced (split like a shell line, run without a shell) and reads the showers from ``{out}``;
  the time includes starting the program and both files.

:class:`ModelOnDevice` runs a model's network pipeline on a torch device (e.g. ``cuda``) with the noise
the model itself draws, so GPU timings measure the same work as the CPU ones; a hybrid's FastSim stays on
the CPU and its time is included.

Example:
    >>> spec = parse_generator("fast=model:runs/m@nfe=4")
    >>> spec.name, spec.kind, spec.argument, spec.options
    ('fast', 'model', 'runs/m', {'nfe': '4'})
"""

from __future__ import annotations

import copy
import re
import shlex
import string
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calogen.errors import CalogenError
from calogen.geometry import Geometry

__all__ = ["KINDS", "BenchError", "CommandGenerator", "GeneratorSpec", "ModelOnDevice", "build_generator", "parse_generator"]

KINDS = ("model", "gflash", "mc", "cmd")
PLACEHOLDERS = ("energies", "energies_txt", "n", "seed", "out")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_TIMEOUT = re.compile(r"@timeout=([^@\s]+)\s*$")
_OPTIONS = {"model": {"nfe", "sampler", "weights"}, "gflash": set(), "mc": set(), "cmd": {"timeout"}}


class BenchError(CalogenError):
    """A generator specification, metrics file or benchmark setting is invalid."""


@dataclass(frozen=True)
class GeneratorSpec:
    """A parsed generator specification (see the module docstring)."""

    name: str
    kind: str
    argument: str = ""
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""


def parse_generator(text: str) -> GeneratorSpec:
    """Parse ``[NAME=]KIND[:ARGUMENT][@OPTIONS]``; raises :class:`BenchError` naming the fix."""
    head, sep, rest = text.partition("=")
    name = ""
    if sep and ":" not in head and "@" not in head and rest.split(":", 1)[0].split("@", 1)[0] in KINDS:
        name, text_body = head.strip(), rest
    else:
        text_body = text
    kind, _, argument = text_body.partition(":")
    kind = kind.strip()
    if kind == "cmd":
        if not name:
            raise BenchError(f"{text!r}: name a command generator, e.g. mine=cmd:python gen.py --n {{n}} -o {{out}}")
        options: dict[str, str] = {}
        suffix = _TIMEOUT.search(argument)
        if suffix:
            argument, options = argument[: suffix.start()], {"timeout": suffix.group(1)}
        if not argument.strip():
            raise BenchError(f"{text!r}: give the command after 'cmd:'")
    else:
        kind, _, opt_text = text_body.partition("@")
        kind, _, argument = kind.partition(":")
        kind = kind.strip()
        options = {}
        for item in filter(None, (p.strip() for p in opt_text.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not value.strip():
                raise BenchError(f"{text!r}: option {item!r} must read KEY=VALUE")
            options[key.strip()] = value.strip()
    if kind not in KINDS:
        raise BenchError(f"{text!r}: unknown generator kind {kind!r}; use model:DIR[@nfe=N], gflash, mc or NAME=cmd:COMMAND")
    unknown = sorted(set(options) - _OPTIONS[kind])
    if unknown:
        raise BenchError(f"{text!r}: unknown option(s) {unknown} for {kind}; known: {sorted(_OPTIONS[kind]) or 'none'}")
    if kind == "model" and not argument.strip():
        raise BenchError(f"{text!r}: give the model directory, e.g. model:runs/cpu-small@nfe=2")
    if kind in ("gflash", "mc") and argument.strip():
        raise BenchError(f"{text!r}: {kind} takes no argument")
    if not name:
        name = kind if kind != "model" else f"{Path(argument.strip()).name}-nfe{options.get('nfe', 'default')}"
    if not _NAME.match(name):
        raise BenchError(f"{text!r}: generator name {name!r} may hold only letters, digits and _.+-")
    return GeneratorSpec(name, kind, argument.strip(), options, text)


def _positive_int(spec: GeneratorSpec, key: str) -> int | None:
    if key not in spec.options:
        return None
    try:
        value = int(spec.options[key])
    except ValueError:
        value = 0
    if value < 1:
        raise BenchError(f"{spec.text!r}: {key} must be a positive integer, got {spec.options[key]!r}")
    return value


def build_generator(spec: GeneratorSpec, geometry: Geometry, *, particle: str) -> tuple[Any, dict[str, Any]]:
    """The Generator a spec describes and a JSON-ready description of it (kind, settings)."""
    if spec.kind == "model":
        from calogen.models import load

        model = load(spec.argument, weights=spec.options.get("weights", "ema"))
        if model.geometry.n_voxels != geometry.n_voxels:
            raise BenchError(
                f"{spec.text!r}: the model has {model.geometry.n_voxels} voxels, --geometry {geometry.name} has {geometry.n_voxels}"
            )
        view = model.using(nfe=_positive_int(spec, "nfe"), sampler=spec.options.get("sampler"))
        description = {"kind": "model", "directory": spec.argument, "nfe": view.nfe, "sampler": view.sampler}
        if getattr(view, "refiner", None) is not None:
            view.engine()  # built now, so a refiner without a recorded FastSim engine fails before any timing
            description.update(hybrid=True, fastsim=view.fastsim["engine"])  # FastSim time included
        return _QuietModel(view), description
    if spec.kind in ("gflash", "mc"):
        from calogen.sim.engines import configure_numba_cache, make_engine

        configure_numba_cache()
        engine = make_engine("gflash" if spec.kind == "gflash" else "full", geometry, particle)
        return engine, {"kind": spec.kind, "particle": particle}
    try:
        timeout = float(spec.options.get("timeout", 3600.0))
    except ValueError:
        raise BenchError(f"{spec.text!r}: timeout must be a number of seconds, got {spec.options['timeout']!r}") from None
    return CommandGenerator(spec.argument, geometry, timeout_s=timeout), {"kind": "cmd", "command": spec.argument}


class _QuietModel:
    """A model whose extrapolation warning (energies outside its training range) is logged once, not per call."""

    def __init__(self, model: Any) -> None:
        self.model, self.geometry, self.warned = model, model.geometry, False

    def modules(self) -> list[Any]:
        return [self.model.pair]

    def sample(self, energies: np.ndarray, *, seed: int, batch_size: int | None = None) -> np.ndarray:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            out = self.model.sample(energies, seed=seed, batch_size=batch_size)
        if caught and not self.warned:
            import logging

            logging.getLogger(__name__).warning("%s", caught[0].message)
            self.warned = True
        return out


class ModelOnDevice:
    """A model's pipeline on a torch ``device``: noise drawn as :meth:`FlowModel.sample` draws it, networks on the device.

    A :class:`~calogen.hybrid.HybridGenerator` runs its FastSim on the CPU (seeds as in its ``sample``) and
    the refiner on the device.

    Args:
        model: a loaded :class:`~calogen.models.generator.FlowModel` or hybrid (its ``nfe`` and ``sampler`` are used).
        device: torch device name, e.g. ``"cuda"`` or ``"cpu"``.
    """

    def __init__(self, model: Any, device: str) -> None:
        import torch

        self.model, self.geometry, self.device = model, model.geometry, torch.device(device)
        refiner = getattr(model, "refiner", None)
        self.flow = model if refiner is None else refiner.model
        module = model.export_module(model.nfe, model.sampler) if refiner is None else refiner.export_module(model.nfe, model.sampler)
        self.module = copy.deepcopy(module).to(self.device)  # a copy: moving it moves its networks, which the CPU model shares

    def modules(self) -> list[Any]:
        return [self.model.pair]

    def sample(self, energies: np.ndarray, *, seed: int, batch_size: int | None = None) -> np.ndarray:
        """Showers ``(N, voxels)`` float32 MeV; ``batch_size`` showers per pipeline call (default: all)."""
        import torch

        from calogen.generator import derive_seed

        e = np.asarray(energies, dtype=np.float32).reshape(-1, 1)
        inputs: tuple[np.ndarray, ...] = (e,)
        if self.flow is not self.model:  # a hybrid: FastSim showers on the CPU, refined on the device
            inputs = (e, np.asarray(self.model.engine().sample(e.reshape(-1), seed=derive_seed(seed, 0), batch_size=batch_size), dtype=np.float32))
            seed = derive_seed(seed, 1)
        inputs = (*inputs, *self.flow.draw_noise(e.shape[0], seed=seed))
        step = max(1, batch_size or e.shape[0])
        out = np.empty((e.shape[0], self.geometry.n_voxels), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, e.shape[0], step):
                out[s : s + step] = self.module(*(torch.from_numpy(a[s : s + step]).to(self.device) for a in inputs)).cpu().numpy()
        return out


class CommandGenerator:
    """A Generator that runs an external program writing a CaloChallenge HDF5 file (see the module docstring).

    Args:
        command: the command line with ``{energies}``, ``{energies_txt}``, ``{n}``, ``{seed}``, ``{out}``.
        geometry: the readout the program's output must have.
        timeout_s: a call running longer fails.
    """

    def __init__(self, command: str, geometry: Geometry, *, timeout_s: float = 3600.0) -> None:
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise BenchError(f"cannot split command {command!r}: {exc}") from None
        if not self.argv:
            raise BenchError("the command is empty")
        try:
            parsed = [p for arg in self.argv for p in string.Formatter().parse(arg) if p[1] is not None]
        except ValueError as exc:
            raise BenchError(f"command {command!r}: {exc} (write literal braces as {{{{ and }}}})") from None
        fields = {f for _, f, _, _ in parsed}
        unknown = sorted(fields - set(PLACEHOLDERS)) + [f"{f}:{s}" for _, f, s, c in parsed if s or c]
        if unknown or "out" not in fields:
            raise BenchError(
                f"command {command!r}: placeholders {unknown or ''} unknown or {{out}} missing; use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
            )
        if not timeout_s > 0:
            raise BenchError(f"command timeout must be > 0 s, got {timeout_s}")
        self.command, self.geometry, self.timeout_s = command, geometry, timeout_s

    def sample(self, energies: np.ndarray, *, seed: int, batch_size: int | None = None) -> np.ndarray:
        """Run the program once for all ``energies`` (``batch_size`` is the program's business)."""
        import h5py

        from calogen.io import ShowerFile, ShowerFileError

        e = np.asarray(energies, dtype=np.float32).reshape(-1, 1)
        with tempfile.TemporaryDirectory(prefix="calogen-bench-") as tmp:
            paths = {"energies": Path(tmp) / "energies.h5", "energies_txt": Path(tmp) / "energies.txt", "out": Path(tmp) / "showers.h5"}
            with h5py.File(paths["energies"], "w") as f:
                f.create_dataset("incident_energies", data=e)
            np.savetxt(paths["energies_txt"], e[:, 0], fmt="%.9g")
            values = {**{k: str(v) for k, v in paths.items()}, "n": str(e.shape[0]), "seed": str(seed)}
            argv = [arg.format(**values) for arg in self.argv]
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s, check=False)
            except FileNotFoundError:
                raise BenchError(f"command {self.command!r}: program {argv[0]!r} not found") from None
            except subprocess.TimeoutExpired:
                raise BenchError(f"command {self.command!r} ran past its {self.timeout_s:g} s timeout (option @timeout=S)") from None
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or [""])[-1]
                raise BenchError(f"command {self.command!r} exited with status {done.returncode}: {last}")
            try:
                with ShowerFile(paths["out"], self.geometry) as f:
                    data = f.read()
            except ShowerFileError as exc:
                raise BenchError(f"command {self.command!r} did not write a valid shower file to {{out}}: {exc}") from None
        if data.energies.shape[0] != e.shape[0] or not np.array_equal(data.energies.reshape(-1), e.reshape(-1)):
            raise BenchError(f"command {self.command!r} wrote showers for other incident energies than {{energies}} holds")
        return data.showers
