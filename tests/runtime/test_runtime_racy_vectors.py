"""HOGWILD!'s whole-vector racy copy and update (runtime/_atomics.h: lsh_copy_f32_racy, lsh_axpy_f32_racy).

On x86-64 they run an SSE2 body between a scalar head (up to the first 16-byte boundary) and a scalar
tail; every offset and length combination below crosses those seams. The update must round exactly as
the scalar float32 loop and runtime/reference.py do: theta - (a * g), multiplication then subtraction.
"""

from __future__ import annotations

import numpy as np
import pytest

from leashed.runtime import _workers


def _misaligned(n: int, offset: int, rng: np.random.Generator) -> np.ndarray:
    """A float32 view of length n starting `offset` floats after a 64-byte boundary."""
    raw = np.empty(n + offset + 16, dtype=np.float32)
    start = (-raw.ctypes.data % 64) // 4 + offset
    view = raw[start:start + n]
    view[:] = rng.standard_normal(n).astype(np.float32)
    return view


@pytest.mark.parametrize("offset", [0, 1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 33, 1000, 101_770])
def test_racy_copy_equals_the_source(n: int, offset: int) -> None:
    rng = np.random.default_rng(n * 4 + offset)
    src = _misaligned(n, offset, rng)
    dst = np.full(n, np.nan, dtype=np.float32)
    _workers.racy_copy(dst, src)
    assert np.array_equal(dst, src)


@pytest.mark.parametrize("offset", [0, 1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 33, 1000, 101_770])
def test_racy_axpy_rounds_like_the_scalar_float32_loop(n: int, offset: int) -> None:
    rng = np.random.default_rng(1000 + n * 4 + offset)
    theta = _misaligned(n, offset, rng)
    g = _misaligned(n, (offset + 1) % 4, rng)
    a = np.float32(0.0371)
    expected = theta - a * g  # float32 throughout: a * g rounded, then the subtraction rounded
    assert expected.dtype == np.float32
    _workers.racy_axpy(theta, float(a), g)
    assert np.array_equal(theta, expected)


def test_racy_vectors_refuse_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        _workers.racy_copy(np.zeros(3, np.float32), np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="differ in length"):
        _workers.racy_axpy(np.zeros(3, np.float32), 1.0, np.zeros(4, np.float32))
