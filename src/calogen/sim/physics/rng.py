"""Compiled random numbers: xoshiro256** seeded by SplitMix64, plus the few distributions the physics uses.

The state is a ``(4,)`` uint64 array owned by the caller and reseeded for every shower from a 63-bit
seed, so a shower depends only on its own seed (Blackman & Vigna, "Scrambled linear pseudorandom
number generators", ACM TOMS 47 (2021) 36).

Example:
    >>> import numpy as np
    >>> s = np.zeros(4, dtype=np.uint64)
    >>> seed_state(s, 42)
    >>> 0.0 <= uniform(s) < 1.0
    True
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = ["exponential", "gamma", "normal_pair", "random_azimuth", "seed_state", "uniform", "uniform_open"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S5 = np.uint64(5)
_S9 = np.uint64(9)
_U7 = np.uint64(7)
_U11 = np.uint64(11)
_U17 = np.uint64(17)
_U27 = np.uint64(27)
_U30 = np.uint64(30)
_U31 = np.uint64(31)
_U45 = np.uint64(45)
_U57 = np.uint64(57)
_U19 = np.uint64(19)
_ONE = np.uint64(1)
_TWO_M53 = 1.0 / 9007199254740992.0


@nb.njit(cache=True, nogil=True)
def seed_state(state: np.ndarray, seed: int) -> None:
    """Fill the ``(4,)`` uint64 ``state`` from ``seed`` with SplitMix64."""
    z = np.uint64(seed)
    for i in range(4):
        z = z + _GOLDEN
        x = z
        x = (x ^ (x >> _U30)) * _MIX1
        x = (x ^ (x >> _U27)) * _MIX2
        state[i] = x ^ (x >> _U31)


@nb.njit(cache=True, nogil=True)
def _next(state: np.ndarray) -> np.uint64:
    """Next 64 random bits (xoshiro256**)."""
    s1 = state[1]
    x = s1 * _S5
    result = ((x << _U7) | (x >> _U57)) * _S9
    t = s1 << _U17
    state[2] ^= state[0]
    state[3] ^= s1
    state[1] = s1 ^ state[2]
    state[0] ^= state[3]
    state[2] ^= t
    s3 = state[3]
    state[3] = (s3 << _U45) | (s3 >> _U19)
    return result


@nb.njit(cache=True, nogil=True)
def uniform(state: np.ndarray) -> float:
    """Uniform on [0, 1) with 53 random bits."""
    return float(_next(state) >> _U11) * _TWO_M53


@nb.njit(cache=True, nogil=True)
def uniform_open(state: np.ndarray) -> float:
    """Uniform on (0, 1], safe under a logarithm."""
    return float((_next(state) >> _U11) + _ONE) * _TWO_M53


@nb.njit(cache=True, nogil=True)
def exponential(state: np.ndarray) -> float:
    """Exponential with unit mean: -ln u."""
    return -math.log(uniform_open(state))


@nb.njit(cache=True, nogil=True)
def _unit_disc(state: np.ndarray) -> tuple[float, float, float]:
    """A point (a, b) uniform in the unit disc minus its centre, and q = a^2 + b^2."""
    while True:
        a = 2.0 * uniform(state) - 1.0
        b = 2.0 * uniform(state) - 1.0
        q = a * a + b * b
        if 0.0 < q < 1.0:
            return a, b, q


@nb.njit(cache=True, nogil=True)
def normal_pair(state: np.ndarray) -> tuple[float, float]:
    """Two independent standard normals (Marsaglia's polar method: a point in the unit disc, no trigonometry)."""
    a, b, q = _unit_disc(state)
    f = math.sqrt(-2.0 * math.log(q) / q)
    return a * f, b * f


@nb.njit(cache=True, nogil=True)
def random_azimuth(state: np.ndarray) -> tuple[float, float]:
    """(cos phi, sin phi) of an azimuth phi uniform on [0, 2 pi): the doubled angle of a point in the unit disc,
    cos 2 theta = (a^2 - b^2) / q, sin 2 theta = 2 a b / q (von Neumann), no trigonometry."""
    a, b, q = _unit_disc(state)
    return (a * a - b * b) / q, 2.0 * a * b / q


@nb.njit(cache=True, nogil=True)
def gamma(state: np.ndarray, shape: float) -> float:
    """Gamma(shape, scale=1) by Marsaglia & Tsang (ACM TOMS 26 (2000) 363); shape < 1 via u^(1/shape) boost."""
    boost = 1.0
    if shape < 1.0:
        boost = uniform_open(state) ** (1.0 / shape)
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x, _ = normal_pair(state)
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        u = uniform_open(state)
        if math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v * boost
