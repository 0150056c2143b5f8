"""Materials and the layer stack of the detailed simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calogen.errors import CalogenError
from calogen.sim.detector import DetectorError, LayerStack, distance_to_boundary, distance_to_nearest_boundary
from calogen.sim.materials import MATERIALS, MaterialError, material


def test_tungsten_densities_by_hand() -> None:
    w = material("W")
    # 19.3 g/cm3 * 6.02214076e23 / 183.84 g/mol = 6.322e22 atoms/cm3 = 6.322e19 /mm3
    assert w.atom_density == pytest.approx(6.3221e19, rel=1e-4)
    assert w.electron_density == pytest.approx(74 * 6.3221e19, rel=1e-4)


@pytest.mark.parametrize("name", sorted(MATERIALS))
def test_density_correction_is_continuous(name: str) -> None:
    st = material(name).sternheimer
    assert st.delta(st.x1 - 1e-9) == pytest.approx(st.delta(st.x1 + 1e-9), abs=1e-6)
    assert st.delta(st.x0 - 1e-9) == pytest.approx(st.delta(st.x0 + 1e-9), abs=2e-3)  # published parameters are rounded


def test_unknown_material_names_the_choices() -> None:
    with pytest.raises(MaterialError, match="unknown material 'Ag'; choose one of W, Si, Pb, Cu"):
        material("Ag")
    assert issubclass(MaterialError, CalogenError)


@pytest.mark.parametrize(("name", "x0_mm", "moliere_mm"), [("W", 3.504, 9.33), ("Pb", 5.612, 16.02), ("Cu", 14.36, 15.68)])
def test_radiation_length_and_moliere_radius_pdg(name: str, x0_mm: float, moliere_mm: float) -> None:
    m = material(name)
    assert m.radiation_length == pytest.approx(x0_mm, rel=1e-3)
    assert m.moliere_radius == pytest.approx(moliere_mm, rel=3e-3)  # PDG: 9.327, 16.02, 15.68 mm


def test_par04_mixture_constants() -> None:
    stack = LayerStack.par04()
    assert stack.critical_energy() == pytest.approx(8.2, abs=0.05)  # PHYSICS.md
    assert stack.moliere_radius() == pytest.approx(10.9, abs=0.05)
    assert stack.z_eff() == pytest.approx(72.5, abs=0.05)


def test_par04_stack() -> None:
    stack = LayerStack.par04()
    assert stack.n_slabs == 180
    assert stack.depth == pytest.approx(153.0)
    assert stack.radiation_length() == pytest.approx(4.22, abs=0.01)
    edges = stack.z_edges()
    assert edges[:3].tolist() == pytest.approx([0.0, 1.4, 1.7])
    assert stack.sensitive_mask().tolist() == [0, 1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_pairs": 0}, "n_pairs must be >= 1"),
        ({"absorber_mm": -1.0}, "thicknesses must be > 0"),
        ({"absorber": "Ag"}, "unknown material"),
    ],
)
def test_invalid_stacks(kwargs: dict, match: str) -> None:
    with pytest.raises(CalogenError, match=match):
        LayerStack.par04(**kwargs)


def test_sensitive_material_must_be_in_stack() -> None:
    with pytest.raises(DetectorError, match=r"sensitive materials \['Si'\] are not in the stack"):
        LayerStack((material("W"),), (0,), (1.0,), ("Si",))


def test_distances_to_planes() -> None:
    edges = np.array([0.0, 1.4, 1.7])
    assert distance_to_boundary(edges, 0, 0.4, 0.5) == pytest.approx(2.0)
    assert distance_to_boundary(edges, 0, 0.4, -1.0) == pytest.approx(0.4)
    assert distance_to_boundary(edges, 1, 1.5, 0.0) == math.inf
    assert distance_to_nearest_boundary(edges, 1, 1.6) == pytest.approx(0.1)
