"""The main job: detailed MC vs GFLASH, GFLASH + DCTR weights, the shipped model and the hybrid, evaluated,
timed and reported on one page.

Steps: simulate ``n`` held-out DS2 electron showers with the detailed Monte Carlo (the reference);
generate the same incident energies with the pretrained flow-matching model shipped in the package (when
present) and with calibrated GFLASH; fit DCTR weights of the GFLASH showers against the MC
(:func:`calogen.eval.reweight.reweight_files`, cross-fitted on the demo's own two files, so the weighted
figures share the MC sample the weights were fitted to); refine the GFLASH showers with the shipped hybrid
refiner (when present); time the generators (the hybrid's time includes GFLASH's own); evaluate every fast
sample against the MC; write ``metrics.json`` and one ``report.html`` with the speed-ups.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calogen.energies import EnergySpec
from calogen.errors import CalogenError
from calogen.generator import Generator, generate_to_file
from calogen.geometry import Geometry

__all__ = ["DCTR_NAME", "DemoSettings", "HYBRID_DIR", "PRETRAINED_DIR", "run_demo"]

log = logging.getLogger(__name__)

PRETRAINED_DIR = Path(__file__).with_name("data") / "pretrained" / "cpu-small-ds2-student"
"""The default shipped model: the one-step student of ``cpu-small-ds2`` (the flow-matching model trained on
detailed-MC DS2 showers), tuned on the high-level vector; best at <= 2 NFE in its README's table."""

HYBRID_DIR = PRETRAINED_DIR.with_name("cpu-small-ds2-hybrid")
"""The hybrid refiner (GFLASH DS2 electrons toward the detailed MC) that ships with calogen."""

DCTR_NAME = "GFLASH+DCTR"
"""The demo's row of GFLASH showers with DCTR weights."""


@dataclass(frozen=True)
class DemoSettings:
    """Size of the demo.

    Attributes:
        n: held-out MC showers (and generated showers per fast generator).
        energies: incident-energy specification.
        seed: run seed; MC, model and GFLASH use derived seeds.
        nfe: network evaluations of the model's sampler (None: the model's default).
        timing_batch_sizes: batch sizes of the timing harness.
        timing_seconds: wall-time budget per generator and batch size.
        metrics: evaluation metrics.
    """

    n: int = 2000
    energies: str = "loguniform:1GeV:100GeV"
    seed: int = 2026
    nfe: int | None = None
    timing_batch_sizes: tuple[int, ...] = (1, 100, 1000)
    timing_seconds: float = 8.0
    metrics: tuple[str, ...] = ("hist", "cls-low", "cls-high", "fpd", "kpd", "prdc", "families")


def _fast_generators(geometry: Geometry, nfe: int | None) -> dict[str, Generator]:
    from calogen.sim.engines import make_engine

    generators: dict[str, Generator] = {}
    if (PRETRAINED_DIR / "config.json").is_file():
        from calogen.models import load

        model = load(PRETRAINED_DIR)
        if nfe is not None:
            model = model.using(nfe=nfe)
        generators["model"] = model
    else:
        log.warning("no pretrained model at %s; the demo compares GFLASH only", PRETRAINED_DIR)
    generators["GFLASH"] = make_engine("gflash", geometry, "e-")
    return generators


def _refine(gflash: Path, out: Path, energies: np.ndarray, *, nfe: int | None, seed: int, progress: bool) -> Generator | None:
    """Refine the GFLASH showers (incident ``energies`` MeV) into ``out`` with the shipped hybrid refiner; returns
    it as a Generator (GFLASH + refiner, for the timing), or None when the package holds no refiner or the
    energies leave its training range."""
    if not (HYBRID_DIR / "config.json").is_file():
        log.warning("no pretrained refiner at %s; the demo has no hybrid row", HYBRID_DIR)
        return None
    from calogen.hybrid import load_refiner, refine_file

    hybrid = load_refiner(HYBRID_DIR).using(nfe=nfe)
    pre = hybrid.preprocessor
    if pre.out_of_range(np.asarray(energies, np.float32).reshape(-1, 1)).any():
        log.warning("energies outside the refiner's training range %.4g-%.4g MeV; the demo has no hybrid row", pre.e_min, pre.e_max)
        return None
    log.info("refining the GFLASH showers with the shipped hybrid refiner (NFE %d)", hybrid.nfe)
    refine_file(HYBRID_DIR, gflash, out, seed=seed, nfe=hybrid.nfe, progress=progress)
    return hybrid


def _dctr_weights(mc: Path, gflash: Path, out: Path, seed: int, progress: bool) -> Path:
    """DCTR weights of the GFLASH showers against the MC showers (``calogen reweight``), written to ``out``."""
    from calogen.eval.reweight import ReweightSettings, reweight_files

    log.info("fitting DCTR weights of the GFLASH showers against the detailed MC")
    reweight_files(mc, gflash, out, Geometry.builtin("ds2"), settings=ReweightSettings(seed=seed), progress=progress)
    return out


def _timing(generator: Generator, spec: str, settings: DemoSettings) -> dict[int, float]:
    from calogen.eval.timing import time_generator

    result = time_generator(
        generator,
        energies=spec,
        batch_sizes=settings.timing_batch_sizes,
        min_showers=settings.timing_batch_sizes[-1],
        min_seconds=1.0,
        max_seconds=settings.timing_seconds,
        seed=settings.seed,
    )
    return {b.batch_size: b.ms_per_shower_median for b in result.batches}


def run_demo(out_dir: str | os.PathLike[str], settings: DemoSettings = DemoSettings(), *, progress: bool = True) -> dict[str, Any]:
    """Run the demo into ``out_dir`` and return the metrics record (see the module docstring)."""
    from calogen.eval.evaluate import evaluate
    from calogen.eval.settings import EvaluationSettings
    from calogen.sim.engines import configure_numba_cache, engine_spec, make_engine
    from calogen.sim.run import simulate_to_file

    if settings.n < 50:
        raise CalogenError(f"the demo needs at least 50 showers, got {settings.n}")
    configure_numba_cache()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CalogenError(f"cannot create {out}: {exc.strerror}") from None
    geometry = Geometry.builtin("ds2")
    spec = EnergySpec.parse(settings.energies)
    energies = spec.sample(settings.n, seed=settings.seed)

    log.info("compiling the detailed MC (cached after the first run)")
    make_engine("full", geometry, "e-").sample(np.array([1000.0]), seed=0)
    log.info("simulating %d detailed-MC showers (%s)", settings.n, settings.energies)
    started = time.perf_counter()
    mc_path = out / "mc.h5"
    simulate_to_file(engine_spec("full", geometry, "e-"), energies, None, settings.seed, mc_path, progress=progress)
    mc_seconds = time.perf_counter() - started

    generators = _fast_generators(geometry, settings.nfe)
    generated: dict[str, Path] = {}
    for k, (name, generator) in enumerate(generators.items(), start=1):
        path = out / f"{name.lower()}.h5"
        log.info("generating %d showers with %s", settings.n, name)
        generate_to_file(generator, energies, path, seed=settings.seed + k, batch_size=1000, progress=progress)
        generated[name] = path
    weights = _dctr_weights(mc_path, generated["GFLASH"], out / "gflash_dctr_weights.h5", settings.seed, progress)
    hybrid = _refine(generated["GFLASH"], out / "hybrid.h5", energies, nfe=settings.nfe, seed=settings.seed + len(generators) + 1, progress=progress)
    if hybrid is not None:
        generators["hybrid"], generated["hybrid"] = hybrid, out / "hybrid.h5"
    rows = {"GFLASH": generated["GFLASH"], DCTR_NAME: generated["GFLASH"], **{n: generated[n] for n in ("model", "hybrid") if n in generated}}

    # The detailed MC simulates one shower at a time, so its cost per shower does not depend on the
    # batch size: the wall time of the reference run above is its timing.
    mc_ms = 1000.0 * mc_seconds / settings.n
    log.info("timing the fast generators (detailed MC: %.1f ms/shower)", mc_ms)
    timings = {name: _timing(generator, settings.energies, settings) for name, generator in generators.items()}
    sample_timing: dict[str, dict[str, float]] = {}
    for name, by_batch in timings.items():
        row = {f"ms/shower b{b}": ms for b, ms in by_batch.items()}
        largest = max(by_batch)
        row[f"speed-up vs MC (b{largest})"] = mc_ms / by_batch[largest]
        sample_timing[name] = row
    record = evaluate(
        mc_path,
        {name: str(path) for name, path in rows.items()},
        geometry,
        out,
        # The fast classifier keeps the demo within minutes; metrics.json and the report name the deviation.
        settings=EvaluationSettings(
            metrics=settings.metrics, seed=settings.seed, max_showers_per_side=settings.n, official_classifier=False
        ),
        reference_name="detailed MC",
        timing=sample_timing,
        title=f"calogen demo — {', '.join(rows)} vs the detailed MC ({mc_ms:.1f} ms/shower), DS2 electrons {settings.energies}",
        weights={DCTR_NAME: str(weights)},
        extra={
            "demo": {
                "settings": {**settings.__dict__, "timing_batch_sizes": list(settings.timing_batch_sizes), "metrics": list(settings.metrics)},
                "detailed_mc_ms_per_shower": mc_ms,
                "detailed_mc_simulation_seconds": round(mc_seconds, 2),
                "timings_ms_per_shower": {n: {str(b): ms for b, ms in t.items()} for n, t in timings.items()},
                "mean_incident_energy_mev": float(np.mean(energies)),
                "dctr": {"weights": str(weights), "sample": DCTR_NAME,
                         "note": "cross-fitted on the demo's own MC and GFLASH files: the weighted figures share the MC sample the weights were fitted to"},
                "hybrid": None if hybrid is None else {"directory": str(HYBRID_DIR), "nfe": hybrid.nfe, "refines": str(generated["GFLASH"]),
                                                       "timing": "HybridGenerator.sample: GFLASH's own simulation included"},
            }
        },
        progress=progress,
    )
    return record
