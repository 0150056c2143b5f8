"""The compiled transport loop of the detailed electromagnetic cascade (condensed history, class II).

The loop only moves particles and dispatches: it interpolates the per-material tables of
:mod:`calogen.sim.physics.tables`, asks :mod:`calogen.sim.detector` for distances to planes, calls one
physics module per interaction, and hands silicon deposits to :func:`calogen.sim.readout.point_voxel`.
Particles wait on a fixed-capacity stack (last in, first out), so nothing is allocated per particle;
secondaries are always queued and meet the tracking cuts when they are taken off the stack.

Speed: the tracking functions and the small helpers are inlined into :func:`run_showers`
(``inline="always"``). A compiled call that receives arrays increments and decrements their reference
counts with atomic instructions, and with the tables, detector, readout and stack passed to every particle
that cost about half of the run time; inside one function numba removes those pairs.

Charged step: the step is the shortest of the distance to the next discrete interaction (delta ray or
bremsstrahlung, at the inverse mean free path of the start of the step), a fraction of the
residual range, and the distance to the next plane. The mean continuous loss comes from the range table,
R(T_end) = R(T) - s, Gamma-fluctuated in media chosen by the configuration, and is deposited at the
middle of the step. Multiple scattering then deflects the direction; a step that ends on a plane
enters the next slab according to the direction *before* the deflection, and only displaces the
particle within that plane. Electrons below the tracking cut, and those below the range-rejection
energy that cannot reach either face of their slab, deposit their kinetic energy on the spot.

Energy accounting per shower, ``acc`` ``(M + 3,)``: deposits per material (everything that ends up in the
medium, cut energies included), then leaked energy (kinetic energy, plus 2 m_e for positrons, of particles
leaving the front or back), then the part of the deposits made by particles stopped at a cut, then the
sensitive-material energy that fell outside the readout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numba as nb
import numpy as np

from calogen.errors import CalogenError
from calogen.sim.detector import distance_to_boundary, distance_to_nearest_boundary
from calogen.sim.physics import annihilation, brems, compton, fluctuations, ionisation, msc, pair, photoelectric
from calogen.sim.physics.kinematics import combine, rotate, tsai_cos_theta
from calogen.sim.physics.rng import exponential, random_azimuth, seed_state, uniform
from calogen.sim.physics.tables import BREMS, COMPTON, DELTA, PAIR, PHOTO, PhysicsTables
from calogen.sim.readout import ReadoutArrays, point_voxel

__all__ = ["ELECTRON", "PHOTON", "POSITRON", "CascadeConfig", "CascadeConfigError", "Cuts", "DetectorArrays", "run_showers"]

PHOTON, ELECTRON, POSITRON = 0, 1, 2
"""Particle codes on the stack."""

_TWO_PI = 2.0 * math.pi
_MASS = annihilation.PHOTON_ENERGY  # lepton rest energy, the pair threshold is twice it


class CascadeConfigError(CalogenError):
    """An invalid cascade setting."""


@dataclass(frozen=True)
class CascadeConfig:
    """Cuts and step settings of the detailed simulation (MeV, mm).

    Args:
        delta_cut: production threshold of explicit delta rays.
        brems_cut: production threshold of explicit bremsstrahlung photons.
        electron_cut: tracking cut of electrons and positrons (kinetic energy).
        photon_cut: tracking cut of photons (>= 5 keV, where the photoabsorption tables start).
        range_rejection_below: electrons below this energy that cannot leave their slab stop on the spot.
        max_step_fraction: a charged step is at most this fraction of the residual range.
        msc_log_clamp: smallest s/X0 in the logarithm of the Highland formula.
        fluctuations: materials in which the continuous loss fluctuates (Gamma distributed).
        stack_capacity: particles waiting at most (a full stack is an error).
    """

    delta_cut: float = 0.5
    brems_cut: float = 0.1
    electron_cut: float = 0.05
    photon_cut: float = 0.005
    range_rejection_below: float = 3.0
    max_step_fraction: float = 0.2
    msc_log_clamp: float = 0.05
    fluctuations: tuple[str, ...] = ("Si",)
    stack_capacity: int = 4096

    def __post_init__(self) -> None:
        for name in ("delta_cut", "brems_cut", "electron_cut", "photon_cut", "msc_log_clamp"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise CascadeConfigError(f"{name} must be a number > 0 (MeV), got {value!r}")
        if self.photon_cut < photoelectric.TABLE_MIN_ENERGY:
            raise CascadeConfigError(f"photon_cut must be >= 0.005 MeV (start of the photoabsorption tables), got {self.photon_cut}")
        if not 0 < self.max_step_fraction <= 1:
            raise CascadeConfigError(f"max_step_fraction must lie in (0, 1], got {self.max_step_fraction}")
        if not self.range_rejection_below >= 0:
            raise CascadeConfigError(f"range_rejection_below must be >= 0 MeV (0 disables it), got {self.range_rejection_below}")
        if not isinstance(self.stack_capacity, int) or self.stack_capacity < 16:
            raise CascadeConfigError(f"stack_capacity must be an integer >= 16, got {self.stack_capacity!r}")
        object.__setattr__(self, "fluctuations", tuple(self.fluctuations))

    def cuts(self) -> Cuts:
        """The numeric settings as the loop takes them."""
        return Cuts(
            float(self.delta_cut), float(self.brems_cut), float(self.electron_cut), float(self.photon_cut),
            float(self.range_rejection_below), float(self.max_step_fraction), float(self.msc_log_clamp),
        )  # fmt: skip


class Cuts(NamedTuple):
    """Numeric settings of :class:`CascadeConfig` for compiled code (MeV, mm)."""

    delta: float
    brems: float
    electron: float
    photon: float
    range_rejection: float
    step_fraction: float
    msc_log_clamp: float


class DetectorArrays(NamedTuple):
    """The layer stack for compiled code: ``z_edges (S+1,)`` mm, ``slab_material (S,)``, per-material
    ``sensitive (M,)`` and ``fluctuate (M,)`` flags (int64)."""

    z_edges: np.ndarray
    slab_material: np.ndarray
    sensitive: np.ndarray
    fluctuate: np.ndarray


@nb.njit(cache=True, nogil=True, inline="always")
def _push(sf, si, n, x, y, z, ux, uy, uz, energy, kind, slab):  # type: ignore[no-untyped-def]
    """Put a particle on the stack; returns the new stack size."""
    if n >= sf.shape[0]:
        raise RuntimeError("particle stack full: raise CascadeConfig.stack_capacity")
    sf[n, 0], sf[n, 1], sf[n, 2] = x, y, z
    sf[n, 3], sf[n, 4], sf[n, 5] = ux, uy, uz
    sf[n, 6] = energy
    si[n, 0], si[n, 1] = kind, slab
    return n + 1


@nb.njit(cache=True, nogil=True)
def _score(acc, row, ro, x, y, z, energy, scale):  # type: ignore[no-untyped-def]
    """Add a sensitive-material deposit to the voxel at (x, y, z), or to the outside-readout account."""
    v, _ = point_voxel(ro, x, y, z)
    if v >= 0:
        row[v] += energy * scale
    else:
        acc[acc.shape[0] - 1] += energy


@nb.njit(cache=True, nogil=True, inline="always")
def _deposit(acc, row, det, ro, slab, x, y, z, energy, scale):  # type: ignore[no-untyped-def]
    """Add ``energy`` to the material of ``slab`` and, if it is sensitive, to the voxel at (x, y, z)."""
    m = det.slab_material[slab]
    acc[m] += energy
    if det.sensitive[m]:
        _score(acc, row, ro, x, y, z, energy, scale)


@nb.njit(cache=True, nogil=True, inline="always")
def _stop(acc, row, det, ro, slab, x, y, z, energy, scale):  # type: ignore[no-untyped-def]
    """Deposit the energy of a particle stopped at a cut, and count it as below-cut energy."""
    _deposit(acc, row, det, ro, slab, x, y, z, energy, scale)
    acc[acc.shape[0] - 2] += energy


@nb.njit(cache=True, nogil=True, inline="always")
def _annihilate(sf, si, n, x, y, z, slab, state):  # type: ignore[no-untyped-def]
    """A positron at rest: queue two back-to-back photons."""
    ux, uy, uz = annihilation.isotropic_direction(state)
    e = annihilation.PHOTON_ENERGY
    n = _push(sf, si, n, x, y, z, ux, uy, uz, e, PHOTON, slab)
    return _push(sf, si, n, x, y, z, -ux, -uy, -uz, e, PHOTON, slab)


@nb.njit(cache=True, nogil=True, inline="always")
def _grid(log_e_min, inv_dlog, last, log_energy):  # type: ignore[no-untyped-def]
    """Grid index i <= ``last`` and weight w of an energy given by its logarithm, for linear interpolation in ln E."""
    f = (log_energy - log_e_min) * inv_dlog
    i = min(max(int(f), 0), last)
    return i, f - i


@nb.njit(cache=True, nogil=True, inline="always")
def _lerp(table, m, i, w, column):  # type: ignore[no-untyped-def]
    """``table[m, i, column]`` interpolated with weight ``w`` towards grid point i + 1."""
    return table[m, i, column] + w * (table[m, i + 1, column] - table[m, i, column])


@nb.njit(cache=True, nogil=True, inline="always")
def _log_energy_from_range(log_range, log_energy, m, c, log_r, hi):  # type: ignore[no-untyped-def]
    """ln of the kinetic energy whose range is exp(log_r) <= the range at grid point ``hi``.

    The search walks down from ``hi``: a step covers at most ``max_step_fraction`` of the residual range,
    so the answer is usually one or two grid points below.
    """
    if log_r <= log_range[m, c, 0]:
        return log_energy[0] + 0.5 * (log_r - log_range[m, c, 0])  # R ~ T^2 below the grid
    lo = hi - 1
    while log_range[m, c, lo] > log_r:
        lo -= 1
    w = (log_r - log_range[m, c, lo]) / (log_range[m, c, lo + 1] - log_range[m, c, lo])
    return log_energy[lo] + w * (log_energy[lo + 1] - log_energy[lo])


@nb.njit(cache=True, nogil=True, inline="always")
def _track_photon(sf, si, n, x, y, z, ux, uy, uz, k, slab, tab, det, ro, cuts, acc, row, scale, state):  # type: ignore[no-untyped-def]
    """Follow a photon until it is absorbed, converts, leaks or falls below the cut.

    The distance to the next interaction is drawn once as a number of mean free paths and used up slab by
    slab, so crossing a plane costs no random number and no table lookup in ln E.
    """
    z_edges, slab_material, photon_mu = det.z_edges, det.slab_material, tab.photon_mu
    n_slabs, last = slab_material.shape[0], tab.log_energy.shape[0] - 2
    while True:
        if k < cuts.photon:
            _stop(acc, row, det, ro, slab, x, y, z, k, scale)
            return n
        i, w = _grid(tab.log_e_min, tab.inv_dlog, last, math.log(k))
        can_pair = k > 2.0 * _MASS
        n_mfp = exponential(state)
        while True:  # to the interaction point, plane by plane
            m = slab_material[slab]
            mu_photo = _lerp(photon_mu, m, i, w, PHOTO)
            mu_compton = _lerp(photon_mu, m, i, w, COMPTON)
            mu_pair = _lerp(photon_mu, m, i, w, PAIR) if can_pair else 0.0
            mu = mu_photo + mu_compton + mu_pair
            d = distance_to_boundary(z_edges, slab, z, uz)
            if n_mfp < d * mu:
                break
            n_mfp -= d * mu
            x += d * ux
            y += d * uy
            if uz > 0.0:
                slab += 1
                z = z_edges[slab]
            else:
                z = z_edges[slab]
                slab -= 1
            if slab < 0 or slab >= n_slabs:
                acc[acc.shape[0] - 3] += k
                return n
        s = n_mfp / mu
        x += s * ux
        y += s * uy
        z += s * uz
        r = uniform(state) * mu
        if r < mu_photo:
            b = photoelectric.binding_energy(tab.edges[m], k)
            _deposit(acc, row, det, ro, slab, x, y, z, b, scale)
            return _push(sf, si, n, x, y, z, ux, uy, uz, k - b, ELECTRON, slab)
        if r < mu_photo + mu_compton:
            eps, cos_t = compton.sample_scattering(k, state)
            cos_phi, sin_phi = random_azimuth(state)
            nx, ny, nz = rotate(ux, uy, uz, cos_t, cos_phi, sin_phi)
            kp = eps * k
            ex, ey, ez = combine(k * ux, k * uy, k * uz, kp * nx, kp * ny, kp * nz, uz)
            n = _push(sf, si, n, x, y, z, ex, ey, ez, k - kp, ELECTRON, slab)
            k = kp
            ux, uy, uz = nx, ny, nz
            continue
        frac = pair.sample_energy_fraction(k, state)
        t1 = frac * k - _MASS
        t2 = max(k - 2.0 * _MASS - t1, 0.0)
        cos_phi, sin_phi = random_azimuth(state)
        ax, ay, az = rotate(ux, uy, uz, tsai_cos_theta(t1, state), cos_phi, sin_phi)
        bx, by, bz = rotate(ux, uy, uz, tsai_cos_theta(t2, state), -cos_phi, -sin_phi)
        n = _push(sf, si, n, x, y, z, ax, ay, az, t1, ELECTRON, slab)
        return _push(sf, si, n, x, y, z, bx, by, bz, t2, POSITRON, slab)


@nb.njit(cache=True, nogil=True, inline="always")
def _track_lepton(sf, si, n, x, y, z, ux, uy, uz, t, kind, slab, tab, det, ro, cuts, acc, row, scale, state):  # type: ignore[no-untyped-def]
    """Follow an electron or positron in condensed-history steps until it stops or leaks.

    The distance to the next discrete interaction is a number of mean free paths drawn after each
    interaction and used up step by step at the inverse mean free path of the step's start, which is the
    same law as drawing it afresh every step. ln T is carried over from the range table between steps.
    """
    z_edges, slab_material, sensitive, fluctuate = det.z_edges, det.slab_material, det.sensitive, det.fluctuate
    log_range, log_energy, sigma_table = tab.log_range, tab.log_energy, tab.lepton_sigma
    n_slabs, last = slab_material.shape[0], log_energy.shape[0] - 2
    c = 1 if kind == POSITRON else 0
    t_max_fraction = 1.0 if kind == POSITRON else 0.5
    n_mfp = exponential(state)
    log_t = math.log(t)
    while True:
        m = slab_material[slab]
        if t < cuts.electron:
            _stop(acc, row, det, ro, slab, x, y, z, t, scale)
            if kind == POSITRON:
                n = _annihilate(sf, si, n, x, y, z, slab, state)
            return n
        i, w = _grid(tab.log_e_min, tab.inv_dlog, last, log_t)
        log_r = log_range[m, c, i] + w * (log_range[m, c, i + 1] - log_range[m, c, i])
        r = math.exp(log_r)
        if t < cuts.range_rejection and r < distance_to_nearest_boundary(z_edges, slab, z):
            _stop(acc, row, det, ro, slab, x, y, z, t, scale)
            if kind == POSITRON:
                n = _annihilate(sf, si, n, x, y, z, slab, state)
            return n
        sig_delta = sigma_table[m, c, i, DELTA] + w * (sigma_table[m, c, i + 1, DELTA] - sigma_table[m, c, i, DELTA])
        sig_brems = sigma_table[m, c, i, BREMS] + w * (sigma_table[m, c, i + 1, BREMS] - sigma_table[m, c, i, BREMS])
        sig = sig_delta + sig_brems
        # true step: discrete interaction (1), range limit (0) or boundary (2); g is its geometric advance
        event = 1
        s = n_mfp / sig if sig > 0.0 else math.inf
        if cuts.step_fraction * r < s:
            s = cuts.step_fraction * r
            event = 0
        x0 = tab.radiation_length[m]
        path = msc.highland_path_factor(s, x0, cuts.msc_log_clamp)
        lambda1 = msc.transport_mean_free_path(msc.highland_momentum_factor(t) * path, s)
        g = msc.geometric_length(s, lambda1)
        reached = event == 1  # the step ends at the interaction point (dropped if that is on a plane)
        d = distance_to_boundary(z_edges, slab, z, uz)
        if d <= g:
            g = d
            s_boundary = msc.true_length(d, lambda1)
            if s_boundary < s:
                s = s_boundary
                path = msc.highland_path_factor(s, x0, cuts.msc_log_clamp)
                reached = False
            event = 2
        n_mfp = exponential(state) if reached else n_mfp - s * sig
        # continuous loss over the true path, deposited at the middle of the advance
        if s < r:
            log_t_end = _log_energy_from_range(log_range, log_energy, m, c, math.log(r - s), i + 1)
            t_end = math.exp(log_t_end)
        else:
            log_t_end, t_end = -math.inf, 0.0
        loss = t - t_end
        if fluctuate[m] and loss > 0.0:
            variance = fluctuations.bohr_variance(t, tab.electron_density[m], min(cuts.delta, t_max_fraction * t), s)
            loss = min(fluctuations.sample_loss(loss, variance, state), t)
            t_end = t - loss
            log_t_end = math.log(t_end) if t_end > 0.0 else -math.inf
        acc[m] += loss
        if sensitive[m]:
            _score(acc, row, ro, x + 0.5 * g * ux, y + 0.5 * g * uy, z + 0.5 * g * uz, loss, scale)
        theta0 = msc.highland_momentum_factor(t - 0.5 * loss) * path
        t, log_t = t_end, log_t_end
        x += g * ux
        y += g * uy
        z += g * uz
        dx, dy, dz, nx, ny, nz = msc.scatter(ux, uy, uz, theta0, s, state)
        x += dx
        y += dy
        if event == 2:  # the next slab follows the direction before the deflection ...
            if uz > 0.0:
                slab += 1
                z = z_edges[slab]
            else:
                z = z_edges[slab]
                slab -= 1
            if nz * uz < 0.0:  # ... and a lepton on a plane is crossing it: mirror a backward deflection
                nz = -nz
            ux, uy, uz = nx, ny, nz
            if slab < 0 or slab >= n_slabs:
                acc[acc.shape[0] - 3] += t + (annihilation.ANNIHILATION_ENERGY if kind == POSITRON else 0.0)
                return n
            continue
        z = min(max(z + dz, z_edges[slab]), z_edges[slab + 1])  # displacement stays in the slab
        ux, uy, uz = nx, ny, nz
        if event != 1:
            continue
        if uniform(state) * sig < sig_delta:
            if t_max_fraction * t > cuts.delta:
                td = ionisation.sample_delta_fraction(t, cuts.delta, kind == POSITRON, state) * t
                cos_phi, sin_phi = random_azimuth(state)
                ax, ay, az = rotate(ux, uy, uz, ionisation.delta_cos_theta(t, td), cos_phi, sin_phi)
                p = math.sqrt(t * (t + 2.0 * _MASS))
                pd = math.sqrt(td * (td + 2.0 * _MASS))
                ux, uy, uz = combine(p * ux, p * uy, p * uz, pd * ax, pd * ay, pd * az, uz)
                t -= td
                log_t = math.log(t) if t > 0.0 else -math.inf
                n = _push(sf, si, n, x, y, z, ax, ay, az, td, ELECTRON, slab)
        elif t > cuts.brems:
            k = brems.sample_photon_energy(t, cuts.brems, state)
            cos_phi, sin_phi = random_azimuth(state)
            gx, gy, gz = rotate(ux, uy, uz, tsai_cos_theta(t, state), cos_phi, sin_phi)
            t -= k
            log_t = math.log(t) if t > 0.0 else -math.inf
            n = _push(sf, si, n, x, y, z, gx, gy, gz, k, PHOTON, slab)


@nb.njit(cache=True, nogil=True)
def run_showers(
    kinetic: np.ndarray,
    seeds: np.ndarray,
    kind: int,
    start: np.ndarray,
    tab: PhysicsTables,
    det: DetectorArrays,
    ro: ReadoutArrays,
    cuts: Cuts,
    capacity: int,
    scale: float,
    showers: np.ndarray,
    accounts: np.ndarray,
) -> None:
    """Simulate one shower per entry of ``kinetic`` (MeV), shower i seeded from ``seeds[i]``.

    Args:
        kinetic, seeds: ``(N,)`` float64 kinetic energies and int64 per-shower seeds.
        kind: primary particle code (:data:`PHOTON`, :data:`ELECTRON`, :data:`POSITRON`).
        start: ``(6,)`` entry point (x, y, z) mm in the first slab and unit direction.
        tab, det, cuts: physics tables, layer stack and settings.
        ro: the readout, centred on the primary's trajectory.
        capacity: stack capacity.
        scale: factor applied to scored deposits.
        showers: ``(N, V)`` float64 zeros, filled with scored energies.
        accounts: ``(N, M + 3)`` float64 zeros, filled with the energy accounting (module docstring).
    """
    state = np.zeros(4, dtype=np.uint64)
    sf = np.empty((capacity, 7), dtype=np.float64)
    si = np.empty((capacity, 2), dtype=np.int64)
    for e in range(kinetic.shape[0]):
        seed_state(state, seeds[e])
        acc = accounts[e]
        row = showers[e]
        n = _push(sf, si, 0, start[0], start[1], start[2], start[3], start[4], start[5], kinetic[e], kind, 0)
        while n > 0:
            n -= 1
            x, y, z, ux, uy, uz, energy = sf[n, 0], sf[n, 1], sf[n, 2], sf[n, 3], sf[n, 4], sf[n, 5], sf[n, 6]
            particle, slab = si[n, 0], si[n, 1]
            if particle == PHOTON:
                n = _track_photon(sf, si, n, x, y, z, ux, uy, uz, energy, slab, tab, det, ro, cuts, acc, row, scale, state)
            else:
                n = _track_lepton(sf, si, n, x, y, z, ux, uy, uz, energy, particle, slab, tab, det, ro, cuts, acc, row, scale, state)
