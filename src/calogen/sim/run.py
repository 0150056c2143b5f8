"""Run an engine over many showers into one CaloChallenge file: chunked, parallel and resumable.

The run is a pure function of (engine spec, energies, n, seed, chunk size): incident energies are
drawn with ``EnergySpec.sample(n, seed=seed)`` and rounded to float32 (the values stored are the
values simulated); chunk ``k`` covers showers ``[k * chunk_size, (k + 1) * chunk_size)`` and is
simulated with ``first_index = k * chunk_size``, so shower ``i`` is seeded from
``derive_seed(seed, i)`` whichever process simulates it. Chunks are written in order, so the output
file is identical byte for byte for any number of workers and across interruptions.

Chunks run on an executor (:mod:`calogen.executor`): serially, in a spawned process pool
(``workers > 1``) or, with a Dask executor, as one shard file per chunk written by a Dask task (rerun
when it fails or its worker dies) in a temporary directory beside the output and merged at the end. A
shard (``shard=(i, k)``) is rows :func:`calogen.shards.shard_rows` ``(n, i, k)`` of the same run, shower
``j`` still seeded from ``derive_seed(seed, j)``, written with its manifest for ``calogen merge``.

While running, everything lives in a work directory ``OUT.partial/`` beside the output:

- ``manifest.json``: the run's parameters and the number of completed chunks;
- ``chunk-000000.npz``, ...: each completed chunk, sparse (flat indices and values), written
  atomically before the manifest counts it;
- the HDF5 file being streamed (gzip), moved onto ``OUT`` only when the last chunk is in.

An interruption (Ctrl-C, an engine error, a killed process) leaves ``OUT`` untouched; the work
directory stays for resumption unless no chunk was complete. ``resume=True`` checks that the manifest
describes the same run, rebuilds the HDF5 file from the saved chunks and carries on; the work
directory is deleted once ``OUT`` is in place.

Example:
    >>> from calogen.sim.engines import engine_spec
    >>> simulate_to_file(engine_spec("gflash", "ds2", "e-"), "loguniform:1GeV:1TeV", 10_000, 7,
    ...                  "ds2.h5", chunk_size=500, workers=4, progress=True)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from calogen.energies import DEFAULT_MAX_ENERGY_MEV, EnergySpec, EnergySpecError, format_energy
from calogen.errors import CalogenError
from calogen.executor import Executor, make_executor
from calogen.io import ShowerWriter
from calogen.outputs import check_destination, set_new_file_mode
from calogen.shards import ContentHash, Manifest, merge_shards, shard_directory, shard_rows, write_manifest
from calogen.sim.engines import EngineSpec

__all__ = ["RunError", "simulate_to_file", "work_dir"]

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "calogen-simulate-partial/1"
PIECE_SECONDS = 0.1  # one process simulates a chunk in pieces of about this long, so Ctrl-C acts promptly


class RunError(CalogenError):
    """A simulation run cannot start or resume: bad settings, unwritable output, mismatched work files."""


def work_dir(path: str | os.PathLike[str]) -> Path:
    """The work directory of a run writing to ``path``: ``path`` with ``.partial`` appended."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def _calogen_version() -> str:
    try:
        return importlib.metadata.version("calogen")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _spec_text(spec: EnergySpec) -> str:
    """``spec`` as a string :meth:`EnergySpec.parse` reads back exactly (energies in MeV)."""
    values = [f"{v!r}MeV" for v in spec.values]
    if spec.kind == "fixed":
        return values[0]
    if spec.kind == "list":
        return "list:" + ",".join(values)
    return f"{spec.kind}:" + ":".join(values)


def _draw_energies(
    energies: EnergySpec | str | np.ndarray, n: int | None, seed: int, max_energy: float
) -> tuple[np.ndarray, str]:
    """The run's incident energies, float32 ``(n,)`` MeV, and a text that identifies them."""
    if isinstance(energies, (str, EnergySpec)):
        spec = EnergySpec.parse(energies) if isinstance(energies, str) else energies
        if spec.range[1] > max_energy:
            raise RunError(
                f"energy {format_energy(spec.range[1])} exceeds the limit of {format_energy(max_energy)}; "
                "lower it or raise the limit (--max-energy)"
            )
        if n is None or n < 1:
            raise RunError(f"number of showers must be >= 1, got {n}")
        return spec.sample(n, seed=seed).astype(np.float32), _spec_text(spec)
    values = np.asarray(energies, dtype=np.float32).reshape(-1)
    if n is not None and n != values.size:
        raise RunError(f"n={n} but {values.size} energies were given; pass n=None or the matching count")
    if values.size == 0:
        raise RunError("no incident energies given; pass at least one")
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        raise EnergySpecError(f"incident energies must be finite and > 0 MeV; entry {int(np.argmax(bad))} is {values[bad][0]}")
    if values.max() > max_energy:
        raise RunError(
            f"entry {int(np.argmax(values))} ({format_energy(float(values.max()))}) exceeds the energy limit of "
            f"{format_energy(max_energy)}; raise the limit (max_energy) to simulate it"
        )
    return values, "array:sha256=" + hashlib.sha256(values.tobytes()).hexdigest()


def _check_settings(seed: int, chunk_size: int, workers: int) -> None:
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise RunError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    if chunk_size < 1:
        raise RunError(f"chunk size must be >= 1, got {chunk_size}")
    if workers < 1:
        raise RunError(f"workers must be >= 1, got {workers}")


# --- the work directory ------------------------------------------------------------------------
def _write_atomic(path: Path, write: Any) -> None:
    """Call ``write(file object)`` on a temporary file, fsync it and rename it onto ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_manifest(work: Path, run: dict[str, Any], completed: int) -> None:
    text = json.dumps({"format": MANIFEST_FORMAT, "run": run, "completed_chunks": completed}, indent=1, sort_keys=True)
    _write_atomic(work / "manifest.json", lambda fh: fh.write(text.encode()))


def _chunk_path(work: Path, k: int) -> Path:
    return work / f"chunk-{k:06d}.npz"


def _save_chunk(work: Path, k: int, showers: np.ndarray) -> None:
    """Store a chunk sparsely (flat indices of non-zero voxels and their values)."""
    flat = showers.reshape(-1)
    index = np.flatnonzero(flat)
    shape = np.asarray(showers.shape, dtype=np.int64)
    _write_atomic(_chunk_path(work, k), lambda fh: np.savez(fh, shape=shape, index=index, values=flat[index]))


def _load_chunk(work: Path, k: int) -> np.ndarray:
    try:
        with np.load(_chunk_path(work, k), allow_pickle=False) as data:
            showers = np.zeros(tuple(int(s) for s in data["shape"]), dtype=np.float32)
            showers.reshape(-1)[data["index"]] = data["values"]
    except (OSError, ValueError, KeyError) as exc:
        raise RunError(f"{_chunk_path(work, k)} cannot be read ({exc}); delete {work} and start the run again") from None
    return showers


def _open_work_dir(work: Path, run: dict[str, Any], resume: bool) -> int:
    """Create or check the work directory; returns the number of chunks already completed."""
    manifest_path = work / "manifest.json"
    if work.exists() and not resume:
        raise RunError(f"{work} holds an unfinished run; pass --resume (resume=True) to continue it, or delete it")
    if not work.exists():
        if resume:
            log.info("no unfinished run at %s; starting a new one", work)
        try:
            work.mkdir()
        except OSError as exc:
            raise RunError(f"cannot create {work}: {exc.strerror}; choose a writable output path") from None
        _save_manifest(work, run, 0)
        return 0
    try:
        manifest = json.loads(manifest_path.read_text())
        old_run, completed = manifest["run"], int(manifest["completed_chunks"])
        if manifest["format"] != MANIFEST_FORMAT:
            raise ValueError(f"format {manifest['format']!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{manifest_path} is missing or unreadable ({exc}); delete {work} and start the run again") from None
    if old_run != run:
        diff = ", ".join(
            f"{key}: {old_run.get(key)!r} there, {run.get(key)!r} now" for key in sorted(set(old_run) | set(run))
            if old_run.get(key) != run.get(key)
        )
        raise RunError(f"{work} belongs to a different run ({diff}); rerun with its settings or delete it")
    return completed


# --- simulating chunks -------------------------------------------------------------------------
def _as_showers(result: Any, n: int, n_voxels: int) -> np.ndarray:
    """The float32 ``(n, n_voxels)`` showers of an engine's ``simulate`` result."""
    showers = np.asarray(getattr(result, "showers", result), dtype=np.float32)
    if showers.shape != (n, n_voxels):
        raise RuntimeError(f"engine returned showers of shape {showers.shape}; expected {(n, n_voxels)}")
    return showers


def _simulate(engine: Any, energies: np.ndarray, seed: int, first_index: int, n_voxels: int) -> np.ndarray:
    """Chunk ``energies`` (showers ``first_index, ...``) from ``engine``, checked and float32."""
    return _as_showers(engine.simulate(energies, seed=seed, first_index=first_index), energies.size, n_voxels)


def _simulate_in_pieces(engine: Any, energies: np.ndarray, seed: int, first_index: int, n_voxels: int) -> np.ndarray:
    """:func:`_simulate` in pieces of about :data:`PIECE_SECONDS`, so a Ctrl-C in this process (whose
    compiled engine code does not look at signals) is acted on within one piece. Shower ``i`` is
    seeded from ``(seed, first_index + i)``, so the result does not depend on the pieces."""
    out = np.empty((energies.size, n_voxels), dtype=np.float32)
    start, piece = 0, 1
    while start < energies.size:
        stop = min(start + piece, energies.size)
        t0 = time.perf_counter()
        out[start:stop] = _simulate(engine, energies[start:stop], seed, first_index + start, n_voxels)
        elapsed = time.perf_counter() - t0
        piece = max(1, min(4 * piece, int(piece * PIECE_SECONDS / max(elapsed, 1e-6))))
        start = stop
    return out


_engines = threading.local()  # per thread: (spec description, engine), the last engine built


def _engine(spec: EngineSpec) -> Any:
    """``spec.build()``, kept for the next task of the same spec in this thread (workers build once)."""
    key = json.dumps(spec.describe(), sort_keys=True)
    cached = getattr(_engines, "last", None)
    if cached is None or cached[0] != key:
        _engines.last = None  # free the previous engine before building the next
        _engines.last = cached = (key, spec.build())
    return cached[1]


def _chunk_task(task: tuple[EngineSpec, np.ndarray, int, int]) -> np.ndarray:
    """Simulate one chunk ``(spec, energies, seed, first_index)`` with this thread's engine."""
    spec, energies, seed, first_index = task
    return _simulate_in_pieces(_engine(spec), energies, seed, first_index, spec.geometry.n_voxels)


def _chunk_results(
    spec: EngineSpec, energies: np.ndarray, seed: int, chunk_size: int, first_chunk: int, executor: Executor, offset: int = 0
) -> Iterator[np.ndarray]:
    """Showers of chunks ``first_chunk, first_chunk + 1, ...`` of ``energies`` in order; row ``j`` of
    ``energies`` is shower ``offset + j`` of the run (its seed)."""
    starts = range(first_chunk * chunk_size, energies.size, chunk_size)
    tasks = [(spec, energies[s : s + chunk_size], seed, offset + s) for s in starts]
    return executor.map(_chunk_task, tasks)


@contextlib.contextmanager
def _progress(enabled: bool, total: int, done: int, desc: str) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, initial=done, unit="shower", desc=desc, dynamic_ncols=True) as bar:
        yield bar


def _metadata(engine: EngineSpec, energy_text: str, n: int, seed: int, chunk_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's identity (compared on resume) and the HDF5 attributes of its output file."""
    version = _calogen_version()
    run = {**engine.describe(), "energy": energy_text, "n": n, "seed": seed, "chunk_size": chunk_size, "calogen_version": version}
    attrs = {
        "engine": engine.name,
        "engine_options": engine.options_json(),
        "geometry": engine.geometry.name,
        "particle": engine.particle,
        "energy": energy_text,
        "seed": np.int64(seed),
        "calogen_version": version,
    }
    incidence = engine.options.get("incidence")
    if incidence is not None and not incidence.is_normal:  # absent: normal incidence through the origin
        attrs.update(incident_theta=incidence.theta, incident_phi=incidence.phi, entry_point=np.array(incidence.entry))
    return run, attrs


def _directions(engine: EngineSpec, n: int) -> np.ndarray | None:
    """``(n, 2)`` (theta, phi) rows for ``incident_directions``, or None at normal incidence (no dataset)."""
    incidence = engine.options.get("incidence")
    if incidence is None or incidence.is_normal:
        return None
    return np.tile(np.array([incidence.theta, incidence.phi], dtype=np.float32), (n, 1))


def _publish(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the permissions of a newly created file (umask applied) and rename it onto ``path``."""
    set_new_file_mode(tmp)
    os.replace(tmp, check_destination(path))


# --- shards ------------------------------------------------------------------------------------
def _shard_manifest(run: dict[str, Any], engine: EngineSpec, seed: int, shard: tuple[int, int]) -> Manifest:
    """The manifest of shard ``shard = (index, count)``: the run without its chunk size (it changes no byte)."""
    identity = {"command": "simulate", **{k: v for k, v in run.items() if k not in ("chunk_size", "shard")}}
    return Manifest.for_shard("simulate", identity, seed=seed, geometry=engine.geometry.name, total=run["n"], index=shard[0], count=shard[1])


def _shard_task(task: tuple[EngineSpec, Any, int, int, Path, int, tuple[int, int], float]) -> Path:
    """Write one shard file (a Dask task): ``(spec, energies, n, seed, path, chunk_size, shard, max_energy)``.

    A rerun after a lost worker resumes the shard's own work directory."""
    from calogen.sim.engines import configure_numba_cache

    spec, energies, n, seed, path, chunk_size, shard, max_energy = task
    configure_numba_cache()
    return simulate_to_file(spec, energies, n, seed, path, chunk_size=chunk_size, shard=shard, resume=True, max_energy=max_energy)


def _simulate_as_shards(
    engine: EngineSpec, energies: Any, n: int, seed: int, path: Path, *, chunk_size: int, executor: Executor,
    retries: int, max_energy: float, progress: bool,
) -> Path:  # fmt: skip
    """One shard file per chunk, each written by a task in a temporary directory beside ``path``, then merged."""
    count = -(-n // chunk_size)
    with shard_directory(path) as work, _progress(progress, n, 0, f"simulate {engine.name} ({executor.kind})") as bar:
        tasks = [(engine, energies, n, seed, work / f"shard-{i:06d}.h5", chunk_size, (i, count), max_energy) for i in range(count)]
        shards = []
        for i, shard in enumerate(executor.map(_shard_task, tasks, retries=retries)):
            shards.append(shard)
            if bar is not None:
                bar.update(-np.subtract(*shard_rows(n, i, count)))
        return merge_shards(shards, path)


# --- the driver --------------------------------------------------------------------------------
def simulate_to_file(
    engine: EngineSpec,
    spec_or_energies: EnergySpec | str | np.ndarray,
    n: int | None,
    seed: int,
    path: str | os.PathLike[str],
    *,
    chunk_size: int = 1000,
    workers: int = 1,
    executor: Executor | None = None,
    retries: int = 2,
    shard: tuple[int, int] | None = None,
    progress: bool = False,
    resume: bool = False,
    max_energy: float = DEFAULT_MAX_ENERGY_MEV,
) -> Path:
    """Simulate ``n`` showers into the CaloChallenge file ``path`` (see the module docstring).

    Args:
        engine: the engine recipe (:func:`calogen.sim.engines.engine_spec`); each worker builds its own.
        spec_or_energies: an energy specification (``EnergySpec`` or its text, drawn with ``seed``),
            or explicit incident energies ``(n,)`` in MeV.
        n: number of showers (``None`` with explicit energies).
        seed: run seed in ``[0, 2**63)``; shower ``i`` uses ``derive_seed(seed, i)``.
        path: output HDF5 file; written only when complete.
        chunk_size: showers per chunk, the unit of work, of checkpointing and of resumption.
        workers: number of processes of the default executor (a process pool when > 1).
        executor: runs the chunks (:mod:`calogen.executor`); a Dask executor runs one shard file per
            chunk as a task (retried ``retries`` times) and merges them. The output does not depend on it.
        retries: reruns of a failed Dask task.
        shard: ``(index, count)``: write only rows :func:`calogen.shards.shard_rows` of the run, with
            their manifest (a shard file for ``calogen merge``).
        progress: show a progress bar (showers/s) on stderr.
        resume: continue the unfinished run in ``work_dir(path)`` when its settings match.
        max_energy: highest incident energy accepted (MeV); a run above it is refused before it starts.

    Returns:
        ``path``. Raises :class:`RunError` (a CalogenError) for bad settings before simulating anything.
    """
    path = Path(path)
    _check_settings(seed, chunk_size, workers)
    energies, energy_text = _draw_energies(spec_or_energies, n, seed, max_energy)
    check_destination(path)
    run, attrs = _metadata(engine, energy_text, energies.size, int(seed), chunk_size)
    manifest = None if shard is None else _shard_manifest(run, engine, int(seed), shard)
    if executor is None:
        executor = make_executor(None, workers)
    if executor.kind == "dask" and shard is None:
        if resume:
            raise RunError("--resume applies to the serial and pool executors; a Dask run reruns failed shards itself")
        task_energies = spec_or_energies if isinstance(spec_or_energies, (str, EnergySpec)) else energies
        return _simulate_as_shards(engine, task_energies, energies.size, int(seed), path, chunk_size=chunk_size,
                                   executor=executor, retries=retries, max_energy=max_energy, progress=progress)  # fmt: skip
    if manifest is not None:
        run["shard"] = [manifest.index, manifest.count]
        energies = energies[manifest.start : manifest.stop]
    offset = 0 if manifest is None else manifest.start
    n_showers, n_chunks = energies.size, -(-energies.size // chunk_size)
    work = work_dir(path)
    completed = _open_work_dir(work, run, resume)
    writer = ShowerWriter(work / "showers.h5", engine.geometry.n_voxels, attrs=attrs, directions=_directions(engine, 0) is not None)
    content = ContentHash()
    try:
        for k in range(completed):
            chunk = energies[k * chunk_size : (k + 1) * chunk_size]
            showers = _load_chunk(work, k)
            writer.append(chunk, showers, _directions(engine, chunk.size))
            content.update(chunk, showers)
        with (
            _progress(progress, n_showers, completed * chunk_size, f"simulate {engine.name}") as bar,
            contextlib.closing(_chunk_results(engine, energies, int(seed), chunk_size, completed, executor, offset)) as results,
        ):
            for k, showers in enumerate(results, start=completed):
                _save_chunk(work, k, showers)
                _save_manifest(work, run, k + 1)
                completed = k + 1
                chunk = energies[k * chunk_size : (k + 1) * chunk_size]
                writer.append(chunk, showers, _directions(engine, chunk.size))
                content.update(chunk, showers)
                if bar is not None:
                    bar.update(showers.shape[0])
        writer.close()
        if manifest is not None:
            write_manifest(work / "showers.h5", replace(manifest, content_sha256=content.hexdigests()))
    except BaseException as exc:
        if not writer.closed:
            writer.__exit__(type(exc), exc, exc.__traceback__)
        if completed == 0:  # nothing worth keeping
            shutil.rmtree(work, ignore_errors=True)
            raise
        log.warning(
            "run stopped after %d of %d chunks; %s keeps them: rerun the same command with --resume to continue",
            completed, n_chunks, work,
        )  # fmt: skip
        raise
    _publish(work / "showers.h5", path)
    shutil.rmtree(work)
    return path
