"""Latency of single-shower generation: where one ``FlowModel.sample`` call spends its time.

A Geant4 application calls the model once per shower, so the cost of ``sample(np.array([e]), seed=k)``
at batch 1 is what it pays. For every batch size and NFE this prints the median cost of one whole
``sample`` call and of its stages, each timed on its own with the same inputs: ``noise``
(:meth:`~calogen.models.generator.FlowModel.draw_noise`), the energy, radial and shape ODE solves, and
``finish`` (the occupancy stage, or the threshold cut and rescale); ``overhead`` is the whole call less
the stages: argument checks, the pipeline lookup, the preprocessing inverses between the stages, the
finiteness check, and what the stages lose to one another's use of the caches when run in one call. With
onnxruntime installed it also times the exported ONNX graph (:mod:`calogen.serve.export`) at batch 1
with one intra-op thread (``session.run`` only; the noise is drawn outside it).

Times are medians over ``--repeats`` calls of process CPU time (``--clock cpu``, the default: robust on a
shared machine) or of wall time (``--clock wall``); run with one thread (``--threads``).

Usage:
    python benchmarks/bench_latency.py --batch 1 100 1000 --nfe 1 2
    python benchmarks/bench_latency.py --model runs/ds2-small --batch 1 --repeats 200 --no-onnx
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "calogen" / "data" / "pretrained" / "cpu-small-ds2"
STAGES = ("noise", "energy", "radial", "shape", "finish")


def median_ms(fn: Callable[[int], object], repeats: int, clock: Callable[[], float]) -> float:
    """Median milliseconds of ``fn(k)`` over ``repeats`` calls (``k`` the call index), after one warm-up call."""
    fn(repeats)
    times = []
    for k in range(repeats):
        start = clock()
        fn(k)
        times.append(clock() - start)
    return 1e3 * float(np.median(times))


def _stage_calls(model, energies: np.ndarray, nfe: int, sampler: str) -> dict[str, Callable[[int], object]]:  # type: ignore[no-untyped-def]
    """One callable per stage of ``model.sample(energies, seed=k, nfe=nfe)``, each on precomputed inputs."""
    from calogen.models.generator import EVALUATION_CHUNK
    from calogen.models.samplers import solve

    module = model.export_module(nfe, sampler)
    pair, pre = module.pair, module.preprocessor
    chunks = []
    with torch.inference_mode():
        noise_energy, noise_shape = model.draw_noise(energies.size, seed=0)
        for s in range(0, energies.size, EVALUATION_CHUNK):
            e = torch.from_numpy(energies[s : s + EVALUATION_CHUNK].astype(np.float32).reshape(-1, 1))
            ne, ns = torch.from_numpy(noise_energy[s : s + EVALUATION_CHUNK]), torch.from_numpy(noise_shape[s : s + EVALUATION_CHUNK])
            cond = pre.energy_forward(e)
            layers = solve(pair.energy, pair.energy.prior(ne[:, : pre.layer_dim]), module.energy_schedule, cond=cond,
                           sampler=module.energy_sampler, nfe=module.energy_nfe)  # fmt: skip
            chunks.append((e, ne, ns, cond, layers, torch.cat([cond, layers], dim=1), module.stages(e, ne, ns)))

    def energy(_: int) -> None:  # the pipeline's own solves: traced under inference mode (calogen.models.traced_solve)
        with torch.inference_mode():
            for e, ne, _ns, cond, *_ in chunks:
                module.solve_energy(pair.energy.prior(ne[:, : pre.layer_dim]), cond)

    def radial(_: int) -> None:
        with torch.inference_mode():
            for _e, ne, _ns, _cond, _layers, shape_cond, _ in chunks:
                if module.solve_radial is not None:
                    module.solve_radial(pair.radial.prior(ne[:, pre.layer_dim : module.count_offset]), shape_cond)

    def shape(_: int) -> None:
        for _e, _ne, ns, _cond, _layers, shape_cond, _ in chunks:
            solve(pair.shape, pair.shape.prior(ns), module.shape_schedule, cond=shape_cond, sampler=module.sampler, nfe=module.nfe)

    def finish(_: int) -> None:
        for e, ne, *_, (targets, raw, logits) in chunks:
            module.finish(targets, raw, logits, e, ne)

    return {
        "noise": lambda k: model.draw_noise(energies.size, seed=k), "energy": energy, "radial": radial, "shape": shape, "finish": finish,
    }  # fmt: skip


def onnx_runner(model, nfe: int, sampler: str, path: Path) -> Callable[[np.ndarray], Callable[[], object]]:  # type: ignore[no-untyped-def]
    """Export the graph to ``path`` and open it in onnxruntime with one intra-op thread; returns a function that,
    given energies ``(B,)`` MeV, draws their noise and returns one ``session.run`` on them (what gets timed)."""
    import onnxruntime as ort

    from calogen.serve.export import export_onnx, noise_input_name
    from calogen.serve.protocol import ENERGY_INPUT, SHOWER_OUTPUT

    export_onnx(model.export_module(nfe, sampler), model.noise_shapes(), path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [ENERGY_INPUT, *(noise_input_name(k) for k in model.noise_shapes())]

    def prepare(energies: np.ndarray) -> Callable[[], object]:
        e = energies.astype(np.float32).reshape(-1, 1)
        feed = dict(zip(names, [e, *model.draw_noise(e.shape[0], seed=0)], strict=True))
        return lambda: session.run([SHOWER_OUTPUT], feed)

    return prepare


def _onnx_ms(model, nfe: int, sampler: str, energy: float, repeats: int, clock: Callable[[], float]) -> float | None:  # type: ignore[no-untyped-def]
    """Median ms of one batch-1 ``session.run`` of the exported graph with one intra-op thread (None without onnxruntime)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        run = onnx_runner(model, nfe, sampler, Path(tmp) / "model.onnx")(np.full(1, energy))
    return median_ms(lambda _: run(), repeats, clock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=SHIPPED, help="model directory (default: the shipped cpu-small-ds2)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--nfe", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sampler", default=None, help="shape sampler (default: the model's)")
    parser.add_argument("--repeats", type=int, default=None, help="calls per median (default: max(3, 200 // batch))")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--energy", type=float, default=1e4, help="incident energy of every shower, MeV")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX graph")
    args = parser.parse_args()

    from calogen.models.generator import load

    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    model = load(args.model)
    sampler = args.sampler or model.sampler
    print(f"model {args.model.name}, shape sampler {sampler}, energy {args.energy:g} MeV, {args.threads} thread(s), {args.clock} time medians")
    print(f"{'batch':>6} {'nfe':>4} {'total ms':>9} {'ms/shower':>10} " + " ".join(f"{s:>8}" for s in (*STAGES, "overhead")))
    for batch in args.batch:
        repeats = args.repeats or max(3, 200 // batch)
        energies = np.full(batch, args.energy)
        for nfe in args.nfe:
            total = median_ms(lambda k: model.sample(energies, seed=k, nfe=nfe, sampler=sampler), repeats, clock)
            with torch.inference_mode():
                stages = {name: median_ms(fn, repeats, clock) for name, fn in _stage_calls(model, energies, nfe, sampler).items()}
            cells = " ".join(f"{stages[s]:8.2f}" for s in STAGES)
            print(f"{batch:6d} {nfe:4d} {total:9.2f} {total / batch:10.3f} {cells} {total - sum(stages.values()):8.2f}")
    if not args.no_onnx:
        for nfe in args.nfe:
            ms = _onnx_ms(model, nfe, sampler, args.energy, args.repeats or 200, clock)
            print(f"onnxruntime, batch 1, nfe {nfe}: " + ("not installed" if ms is None else f"{ms:.2f} ms/shower (session.run)"))


if __name__ == "__main__":
    main()
