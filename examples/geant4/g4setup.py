"""Import geant4_pybind without Geant4's data sets, and the minimal physics list this example needs.

geant4_pybind asks on stdin to download Geant4's data sets at import unless ``GEANT4_DATA_DIR`` names an
existing folder, and Geant4 reads ``ENSDFSTATE.dat`` from ``G4ENSDFSTATEDATA`` at start-up. Neither data set
is used here: the physics list constructs only e-, e+, gamma and geantino with transportation (the
default ``ConstructProcess`` of ``G4VModularPhysicsList`` with no physics constructors), because the
calorimeter's physics is the generated shower. :func:`geant4` points both variables at an empty folder
(unless they are set already) and imports the module.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import ModuleType

__all__ = ["geant4", "minimal_physics"]


def geant4() -> ModuleType:
    """``geant4_pybind``, imported with empty data-set folders unless the environment names real ones."""
    if "GEANT4_DATA_DIR" not in os.environ or "G4ENSDFSTATEDATA" not in os.environ:
        folder = Path(tempfile.gettempdir()) / "calogen-geant4-data"
        (folder / "ensdfstate").mkdir(parents=True, exist_ok=True)
        (folder / "ensdfstate" / "ENSDFSTATE.dat").touch()
        os.environ.setdefault("GEANT4_DATA_DIR", str(folder))
        os.environ.setdefault("G4ENSDFSTATEDATA", str(folder / "ensdfstate"))
    try:
        import geant4_pybind
    except ImportError:
        raise SystemExit("this example needs Geant4's Python bindings: pip install 'calogen[geant4]' (or geant4_pybind)") from None
    return geant4_pybind


def minimal_physics(g4: ModuleType):  # type: ignore[no-untyped-def]
    """A ``G4VModularPhysicsList`` of e-, e+, gamma and geantino with transportation only (no data sets)."""

    class MinimalPhysics(g4.G4VModularPhysicsList):  # type: ignore[misc,name-defined]
        def ConstructParticle(self) -> None:  # noqa: N802 (Geant4's name)
            g4.G4Electron.ElectronDefinition()
            g4.G4Positron.PositronDefinition()
            g4.G4Gamma.GammaDefinition()
            g4.G4Geantino.GeantinoDefinition()

        def SetCuts(self) -> None:  # noqa: N802 (no production cuts: no physics processes)
            pass

    return MinimalPhysics()
