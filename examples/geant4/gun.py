"""The particle gun: several particles per event from one point, energies from a calogen energy spec, directions in a cone."""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np

from calogen.energies import EnergySpec
from calogen.generator import derive_seed
from placement import rotation

__all__ = ["cone_directions", "particle_gun"]


def cone_directions(axis: np.ndarray, half_angle_deg: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit directions ``(n, 3)`` uniform in solid angle within ``half_angle_deg`` of ``axis``."""
    cos_t = rng.uniform(math.cos(math.radians(half_angle_deg)), 1.0, n)
    phi = rng.uniform(-math.pi, math.pi, n)
    sin_t = np.sqrt(1.0 - cos_t**2)
    local = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)
    return local @ rotation(axis).T


def particle_gun(g4: ModuleType, *, particle: str, energy: EnergySpec, per_event: int, position: np.ndarray,
                 direction: np.ndarray, spread_deg: float, seed: int):  # type: ignore[no-untyped-def]  # fmt: skip
    """A ``G4VUserPrimaryGeneratorAction`` shooting ``per_event`` particles per event (event ``i`` from ``derive_seed(seed, i)``)."""

    class Gun(g4.G4VUserPrimaryGeneratorAction):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.gun = g4.G4ParticleGun(1)
            self.gun.SetParticleDefinition(g4.G4ParticleTable.GetParticleTable().FindParticle(particle))
            self.gun.SetParticlePosition(g4.G4ThreeVector(*map(float, position)))

        def GeneratePrimaries(self, event) -> None:  # type: ignore[no-untyped-def]  # noqa: N802 (Geant4's name)
            event_seed = derive_seed(seed, event.GetEventID())
            energies = energy.sample(per_event, seed=event_seed)
            directions = cone_directions(direction, spread_deg, per_event, np.random.default_rng(event_seed))
            for e, u in zip(energies, directions, strict=True):
                self.gun.SetParticleEnergy(float(e))
                self.gun.SetParticleMomentumDirection(g4.G4ThreeVector(*map(float, u)))
                self.gun.GeneratePrimaryVertex(event)

    return Gun()
