"""The hook: e-, e+ and gamma entering the calorimeter become calogen showers, one batched call per event.

A stepping action stops every e-, e+ or gamma whose step ends in the calorimeter envelope and records
its kinetic energy, entry point and direction (Geant4's fast-simulation classes have no Python
bindings, so this is the pure-Python route to what ``G4VFastSimulationModel`` does). At the end of the
event, the event action asks the backend for all the event's showers at once, places every shower's
voxels at its entry point and direction (:mod:`placement`) and sums them into the calorimeter's
readout (:class:`detector.Readout`). A model conditioned on the direction gets each particle's incidence
``(theta, phi)`` to the barrel's layer normal at its entry point (:meth:`detector.Barrel.normals`,
:func:`placement.incidence`) and its shower is placed in that layer-normal frame; any other model's
shower is the normal-incidence shower rotated onto the direction. It times the three parts of an event:
Geant4 transport (from the start of the event to the end of tracking), inference and placement.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from calogen.generator import derive_seed

__all__ = ["SHOWERING", "EventRecord", "actions", "shower_event"]

SHOWERING = ("e-", "e+", "gamma")
"""Particles whose showers are generated."""


@dataclass
class EventRecord:
    """One event: the particles that entered the calorimeter, their showers' totals, the readout and the timings.

    Attributes:
        event: Geant4's event id.
        energies: ``(N,)`` kinetic energies at entry, MeV.
        entries: ``(N, 3)`` entry points, mm.
        directions: ``(N, 3)`` unit directions at entry.
        generated: ``(N,)`` sum of each generated shower, MeV (float64).
        readout: the calorimeter cells hit (a :class:`detector.Readout`).
        mesh: ``(voxels,)`` the event binned in the calogen mesh of its first shower (Par04's virtual readout).
        seconds: ``transport``, ``inference`` and ``placement`` times.
        incidence: ``(N, 2)`` ``(theta, phi)`` rad the showers were generated at (a direction-conditioned model), else None.
    """

    event: int
    energies: np.ndarray
    entries: np.ndarray
    directions: np.ndarray
    generated: np.ndarray
    readout: object
    mesh: np.ndarray
    seconds: dict[str, float]
    incidence: np.ndarray | None = None


class Entries:
    """Particles recorded at the envelope during the current event."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float, float, float, float, float]] = []

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = np.asarray(self.rows, dtype=np.float64).reshape(-1, 7)
        return a[:, 0], a[:, 1:4], a[:, 4:7]


def actions(g4: ModuleType, envelope: str, finish: Callable[[int, Entries, float], None]) -> tuple[object, object]:
    """The stepping action that records and stops particles at ``envelope`` and the event action that calls ``finish``.

    ``finish(event_id, entries, transport_seconds)`` runs at the end of every event.
    """
    entries = Entries()

    class RecordAtEnvelope(g4.G4UserSteppingAction):  # type: ignore[misc,name-defined]
        def UserSteppingAction(self, step) -> None:  # type: ignore[no-untyped-def]  # noqa: N802 (Geant4's name)
            track = step.GetTrack()
            volume = track.GetNextVolume()
            if volume is None or volume.GetName() != envelope or track.GetDefinition().GetParticleName() not in SHOWERING:
                return
            post = step.GetPostStepPoint()
            p, u = post.GetPosition(), post.GetMomentumDirection()
            entries.rows.append((post.GetKineticEnergy(), p.x, p.y, p.z, u.x, u.y, u.z))
            track.SetTrackStatus(g4.G4TrackStatus.fStopAndKill)

    class ShowersAtEndOfEvent(g4.G4UserEventAction):  # type: ignore[misc,name-defined]
        def BeginOfEventAction(self, event) -> None:  # type: ignore[no-untyped-def]  # noqa: N802
            entries.rows.clear()
            self.start = time.perf_counter()

        def EndOfEventAction(self, event) -> None:  # type: ignore[no-untyped-def]  # noqa: N802
            finish(event.GetEventID(), entries, time.perf_counter() - self.start)

    return RecordAtEnvelope(), ShowersAtEndOfEvent()


def shower_event(backend, barrel, centres: np.ndarray, *, seed: int, per_particle: bool) -> Callable[[int, Entries, float], EventRecord]:  # type: ignore[no-untyped-def]
    """The end-of-event work: showers from ``backend`` (seed ``derive_seed(seed, event)``), placed and read out.

    A ``backend.directed`` model gets the particles' incidences to the barrel's layer normals and is placed in
    layer-normal frames; any other in rotated frames (:mod:`placement`)."""
    from detector import Readout
    from placement import incidence, mesh_row, place

    def finish(event: int, entries: Entries, transport: float) -> EventRecord:
        energies, points, directions = entries.arrays()
        t0 = time.perf_counter()
        normals = barrel.normals(points) if backend.directed else None
        angles = None if normals is None else incidence(directions, normals)
        showers = backend.showers(energies, derive_seed(seed, event), per_particle=per_particle, directions=angles)
        t1 = time.perf_counter()
        hits, deposits = place(showers, points, directions, centres, normals)
        readout = Readout.collect(barrel, hits, deposits)
        if len(energies):
            mesh = mesh_row(barrel.geometry, hits, deposits, points[0], directions[0], None if normals is None else normals[0])
        else:
            mesh = np.zeros(barrel.geometry.n_voxels, np.float32)
        t2 = time.perf_counter()
        generated = showers.sum(axis=1, dtype=np.float64)
        return EventRecord(event, energies, points, directions, generated, readout, mesh,
                           {"transport": transport, "inference": t1 - t0, "placement": t2 - t1}, angles)  # fmt: skip

    return finish
