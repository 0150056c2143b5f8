"""A Geant4 application whose calorimeter showers come from calogen, in process or from a server.

    python examples/geant4/run.py --events 20                                   # calogen in this process
    calogen serve src/calogen/data/pretrained/cpu-small-ds2 &                    # or a KServe-v2 server
    python examples/geant4/run.py --events 5 --backend triton --url grpc://127.0.0.1:8001
    python examples/geant4/run.py --particles 10 --spread-deg 20 --per-particle  # one call per shower

Geant4 (geant4_pybind) transports the gun's particles through a vacuum world to a barrel calorimeter
shaped after the model's geometry (DS2: Par04's, 800 mm inner radius). e-, e+ and gamma are stopped
where they enter it; at the end of the event calogen generates all their showers in one call, and the
voxels are placed at each entry point and direction and summed into the calorimeter's cells. A model
trained with ``model.directions: true`` generates each shower at the particle's incidence to the barrel's
layer normal (radial) at its entry point, with its layers parallel to the barrel's and centred on the
trajectory; any other model's shower is the normal-incidence shower rotated onto the direction. The
program prints per event the energy that entered, the generated and the deposited totals and the time
spent in transport, inference and placement; it writes the events to a CaloChallenge file (each event
binned in the calogen mesh of its first shower, in that shower's frame, with the entering energy as
incident energy) and, optionally, a JSON summary and the cells of the readout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calogen.energies import EnergySpec  # noqa: E402
from calogen.generator import derive_seed  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=10, help="events to simulate (default: 10)")
    p.add_argument("--particles", type=int, default=1, help="particles per event (default: 1)")
    p.add_argument("--particle", default="e-", help="gun particle: e-, e+ or gamma shower; others pass through (default: e-)")
    p.add_argument("--energy", default="loguniform:10GeV:100GeV", help="energy spec of the gun (default: loguniform:10GeV:100GeV)")
    p.add_argument("--position", default="0,0,0", help="gun position x,y,z in mm (default: the origin)")
    p.add_argument("--direction", default="0,1,0", help="gun direction x,y,z (default: 0,1,0)")
    p.add_argument("--spread-deg", type=float, default=0.0, help="half-angle of the cone of directions (default: 0)")
    p.add_argument("--backend", choices=["local", "triton"], default="local", help="calogen in process, or a KServe-v2 server")
    p.add_argument("--url", default="grpc://127.0.0.1:8001", help="server of --backend triton: grpc://HOST:PORT or http://HOST:PORT")
    p.add_argument("--model", help="local: model directory (default: the shipped cpu-small-ds2); triton: served model name")
    p.add_argument("--nfe", type=int, help="local: network evaluations per shower (default: the model's)")
    p.add_argument("--per-particle", action="store_true", help="one inference call per shower instead of one per event")
    p.add_argument("--seed", type=int, default=0, help="run seed (default: 0)")
    p.add_argument("-o", "--out", default="geant4_events.h5", help="CaloChallenge file of the events (default: geant4_events.h5)")
    p.add_argument("--summary", help="write per-event totals, positions and timings to this JSON file")
    p.add_argument("--readout", help="write the calorimeter cells hit in every event to this .npz file")
    p.add_argument("--quiet", action="store_true", help="no per-event lines")
    return p.parse_args(argv)


def vector(text: str) -> np.ndarray:
    values = [float(v) for v in text.split(",")]
    if len(values) != 3:
        raise SystemExit(f"{text!r}: give three comma-separated numbers")
    return np.asarray(values)


def make_backend(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from backends import LocalBackend, TritonBackend

    if args.backend == "local":
        return LocalBackend(args.model, nfe=args.nfe)
    return TritonBackend(args.url, model=args.model)


def simulate(args: argparse.Namespace, backend) -> tuple[list, object]:  # type: ignore[no-untyped-def,type-arg]
    """Run Geant4 for ``args.events`` events; returns the event records and the barrel."""
    from detector import ENVELOPE, Barrel, construct
    from g4setup import geant4, minimal_physics
    from gun import particle_gun
    from hook import actions, shower_event
    from placement import local_centres

    g4 = geant4()
    barrel = Barrel(backend.geometry)
    records: list = []  # type: ignore[type-arg]
    finish = shower_event(backend, barrel, local_centres(backend.geometry), seed=derive_seed(args.seed, 1), per_particle=args.per_particle)
    run_manager = g4.G4RunManagerFactory.CreateRunManager(g4.G4RunManagerType.Serial)
    detector, physics = construct(g4, barrel), minimal_physics(g4)
    run_manager.SetUserInitialization(detector)
    run_manager.SetUserInitialization(physics)  # before any user action exists, as Geant4 requires

    class Actions(g4.G4VUserActionInitialization):  # type: ignore[misc,name-defined]
        def Build(self) -> None:  # noqa: N802 (Geant4's name)
            self.parts = (  # kept alive: Geant4 holds only pointers
                particle_gun(
                    g4, particle=args.particle, energy=EnergySpec.parse(args.energy), per_event=args.particles, position=vector(args.position),
                    direction=vector(args.direction), spread_deg=args.spread_deg, seed=derive_seed(args.seed, 0),
                ),
                *actions(g4, ENVELOPE, lambda *a: records.append(finish(*a))),
            )  # fmt: skip
            for part in self.parts:
                self.SetUserAction(part)

    user_actions = Actions()
    run_manager.SetUserInitialization(user_actions)
    for command in ("/control/verbose 0", "/run/verbose 0", "/event/verbose 0", "/tracking/verbose 0"):
        g4.G4UImanager.GetUIpointer().ApplyCommand(command)
    run_manager.Initialize()
    run_manager.BeamOn(args.events)
    return records, barrel


def report(records: list, quiet: bool) -> None:  # type: ignore[type-arg]
    """Print one line per event and the mean times."""
    for r in records:
        if not quiet:
            t = r.seconds
            print(
                f"event {r.event:4d}: {len(r.energies):3d} showers, {r.energies.sum() / 1e3:8.3f} GeV entered, generated "
                f"{r.generated.sum() / 1e3:8.3f} GeV, deposited {r.readout.total / 1e3:8.3f} GeV; transport "
                f"{1e3 * t['transport']:7.2f} ms, inference {1e3 * t['inference']:7.2f} ms, placement {1e3 * t['placement']:7.2f} ms"
            )
    if records:
        means = {k: 1e3 * float(np.mean([r.seconds[k] for r in records])) for k in records[0].seconds}
        print("mean per event: " + ", ".join(f"{k} {v:.2f} ms" for k, v in means.items()))


def write(args: argparse.Namespace, records: list, barrel) -> None:  # type: ignore[no-untyped-def,type-arg]
    """The CaloChallenge file, and the optional summary and readout files."""
    from calogen.io import ShowerWriter

    attrs = {"source": "examples/geant4/run.py", "geometry": barrel.geometry.name, "backend": args.backend, "seed": args.seed}
    with ShowerWriter(args.out, barrel.geometry, attrs=attrs) as writer:
        for r in records:
            writer.append(np.array([r.energies.sum()]), r.mesh[None])
    if args.summary:
        Path(args.summary).write_text(json.dumps({"backend": args.backend, "per_particle": args.per_particle, "events": [summary(r, barrel) for r in records]}, indent=1))
    if args.readout:
        np.savez_compressed(
            args.readout, event=np.repeat([r.event for r in records], [r.readout.cells.size for r in records]),
            cell=np.concatenate([r.readout.cells for r in records]), energy=np.concatenate([r.readout.energies for r in records]),
            shape=np.array([barrel.geometry.n_layers, barrel.n_phi, barrel.n_z]),
        )  # fmt: skip


def summary(r, barrel) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """One event as JSON: energies, totals (MeV), entry points and directions, energy barycentre (mm), times (s) and,
    for a direction-conditioned model, the incidences ``(theta, phi)`` (rad) the showers were generated at."""
    centres = barrel.cell_centres(r.readout.cells)
    weights = r.readout.energies
    barycentre = (centres * weights[:, None]).sum(axis=0) / max(weights.sum(), 1e-300)
    return {
        "event": r.event, "energies": r.energies.tolist(), "entries": r.entries.tolist(), "directions": r.directions.tolist(),
        "generated": r.generated.tolist(), "generated_total": float(r.generated.sum()), "deposited_total": r.readout.total,
        "outside": r.readout.outside, "mesh_total": float(r.mesh.sum(dtype=np.float64)), "barycentre": barycentre.tolist(),
        "seconds": r.seconds, **({} if r.incidence is None else {"incidence": r.incidence.tolist()}),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backend = make_backend(args)
    start = time.perf_counter()
    try:
        records, barrel = simulate(args, backend)
    finally:
        backend.close()
    print(f"{len(records)} events in {time.perf_counter() - start:.2f} s ({args.backend} backend, {'per particle' if args.per_particle else 'batched per event'})")
    report(records, args.quiet)
    write(args, records, barrel)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
