"""Counter-based randomness for the simulator (pure, vectorised, machine-independent).

Every random number is a hash of (stream key, counter, lane): no generator state is shared
between nodes, so an answer never depends on what was asked before. Only integer
arithmetic, + - * / and sqrt are used on the way to prices, because those are exact or
correctly rounded everywhere; numpy's exp/log/pow may differ in the last bit between CPUs,
so ``exp`` here is a fixed polynomial.
"""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.typing import NDArray

__all__ = ["F64", "I64", "exp", "stream_key", "uniform", "uniforms", "value_noise"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
U64 = NDArray[np.uint64]

_MASK = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_LANE = 0xD6E8FEB86659FD93
_TO_UNIT = 2.0**-53


_S11, _S27, _S30, _S31 = (np.uint64(n) for n in (11, 27, 30, 31))


def _mix(x: U64) -> U64:
    """splitmix64's finaliser over an array (uint64 arithmetic wraps, as intended), in
    place: ``x`` must be a fresh array the caller does not keep."""
    x += _GOLDEN
    x ^= x >> _S30
    x *= _MIX1
    x ^= x >> _S27
    x *= _MIX2
    x ^= x >> _S31
    return x


def _to_unit(x: U64) -> F64:
    """The top 53 bits of each hash as a float in [0, 1)."""
    x >>= _S11
    result: F64 = x.astype(np.float64)
    result *= _TO_UNIT
    return result


def stream_key(*parts: int | str) -> int:
    """A 64-bit key naming one random stream, e.g. (seed, market key, level, purpose)."""
    text = "\x1f".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & _MASK


def uniform(key: int, counter: I64, lane: int = 0) -> F64:
    """Uniform floats in [0, 1), one per ``counter`` element, from stream ``key``.

    ``lane`` picks an independent sub-stream for the same counters. Counter and lane are
    spread by odd multipliers before one splitmix64 round, so distinct (counter, lane)
    pairs of realistic size never meet.
    """
    offset = np.uint64((key + lane * _LANE) & _MASK)
    x = np.asarray(counter, dtype=np.int64).astype(np.uint64) * _GOLDEN
    x += offset
    return _to_unit(_mix(x))


def uniforms(key: int, counter: I64, lanes: tuple[int, ...]) -> F64:
    """``uniform(key, counter, lane)`` for several lanes at once: row i is lane i."""
    offsets = np.array([(key + lane * _LANE) & _MASK for lane in lanes], np.uint64)
    spread = np.asarray(counter, dtype=np.int64).astype(np.uint64) * _GOLDEN
    return _to_unit(_mix(spread[None, :] + offsets[:, None]))


_LN2 = 0.6931471805599453
# 1/k! for the Taylor series of exp on |r| <= ln2/2 (error below 1e-15 relative).
_INV_FACT = tuple(1.0 / float(np.prod(np.arange(1, k + 1, dtype=np.float64))) for k in range(14))


def exp(x: F64) -> F64:
    """e**x with a fixed polynomial, so every machine gets the same bits."""
    k = np.rint(x / _LN2)
    r = x - k * _LN2
    acc = np.full_like(r, _INV_FACT[13])
    for coef in _INV_FACT[12::-1]:
        acc = acc * r + coef
    return np.ldexp(acc, k.astype(np.int32))


def value_noise(key: int, x: I64, period: int) -> F64:
    """Smooth noise in [-1, 1] over integer positions ``x``: random values on a lattice of
    spacing ``period``, joined by smoothstep interpolation. Continuous, no state."""
    lattice = x // period
    frac = (x - lattice * period).astype(np.float64) / period
    lo, hi = (int(lattice.min()), int(lattice.max())) if len(lattice) else (0, -1)
    if hi - lo < len(lattice):
        # Far fewer lattice points than positions (days on a 1,024-day lattice): hash each
        # point once, the same hash as below.
        points = uniform(key, np.arange(lo, hi + 2, dtype=np.int64)) * 2.0 - 1.0
        left, right = points[lattice - lo], points[lattice - lo + 1]
    else:
        left = uniform(key, lattice) * 2.0 - 1.0
        right = uniform(key, lattice + 1) * 2.0 - 1.0
    ease = frac * frac * (3.0 - 2.0 * frac)
    result: F64 = left + (right - left) * ease
    return result
