"""The value check of small target distributions runs as one Numba pass
(``_accel.distribution_ranges``).

``_validate.check_distribution`` (kl_divergence's targets, cross-entropy's probability targets)
reads the range of the entries and of the row sums of a small target (NumPy, or a plain CPU
torch tensor through a NumPy view) in one jitted pass. Checked here against NumPy's float64
min/max/sum on both sides of ``DISTRIBUTION_MAX``, for both libraries and dtypes; that inputs
it must not read (NaN entries, non-contiguous, other dtypes, masks, log targets) go to the
general path; and that an invalid target raises the same error with the pass and without it.
Without Numba these tests skip.
"""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from losskit import _accel, _validate

pytest.importorskip("numba", reason="the accel extra (Numba) is not installed")

LIBS = ("numpy", "torch")
DTYPES = (np.float32, np.float64)
EDGE = _accel.DISTRIBUTION_MAX


def _lib(a, lib):
    if lib == "torch":
        torch = pytest.importorskip("torch")
        return torch.from_numpy(np.ascontiguousarray(a))
    return a


def _distribution(rng, rows, classes, dtype):
    t = rng.random((rows, classes)) ** 3
    return (t / t.sum(-1, keepdims=True)).astype(dtype)


@pytest.fixture
def passes(monkeypatch):
    """Counts the answers of the Numba pass (not None)."""
    count = [0]
    ranges = _accel.distribution_ranges

    def counting(t):
        out = ranges(t)
        count[0] += out is not None
        return out

    monkeypatch.setattr(_accel, "distribution_ranges", counting)
    return count


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("lib", LIBS)
def test_ranges_against_numpy_float64(lib, dtype, rng):
    """Up to the threshold (one row of 16 classes less, exactly at it) the pass answers with
    NumPy's float64 bounds; one element more and it declines."""
    for shape in ((EDGE // 16 - 1, 16), (EDGE // 16, 16), (7,), (2, 3, 5)):
        t = _distribution(rng, int(np.prod(shape[:-1])), shape[-1], dtype).reshape(shape)
        t.reshape(-1)[3] = 0.0
        got = _accel.distribution_ranges(_lib(t, lib))
        t64 = t.astype(np.float64)
        sums = t64.sum(-1)
        assert got is not None
        assert got[0] == t64.min() and got[1] == t64.max()
        np.testing.assert_allclose(got[2:], (sums.min(), sums.max()), rtol=1e-15)
    over = np.full(EDGE + 1, 1.0 / (EDGE + 1), dtype)
    assert _accel.distribution_ranges(_lib(over, lib)) is None


def test_inputs_it_must_not_read_are_left_to_the_general_path(rng):
    torch = pytest.importorskip("torch")
    t = _distribution(rng, 8, 5, np.float32)
    with_nan = t.copy()
    with_nan[2, 1] = np.nan
    assert _accel.distribution_ranges(with_nan) is None
    assert _accel.distribution_ranges(np.asfortranarray(t)) is None
    assert _accel.distribution_ranges(t.astype(np.float16)) is None
    assert _accel.distribution_ranges(np.empty((0, 5), np.float32)) is None
    assert _accel.distribution_ranges(torch.from_numpy(t).t()) is None  # not contiguous
    assert _accel.distribution_ranges(torch.from_numpy(t).requires_grad_(True)) is not None  # read only
    with _accel.disabled():
        assert _accel.distribution_ranges(t) is None


@pytest.mark.parametrize("lib", LIBS)
def test_the_pass_answers_the_losses_happy_path(lib, rng, passes):
    """A small valid target is checked by the pass; a masked call, log targets and a target
    above the threshold are not."""
    z = rng.standard_normal((6, 4)).astype(np.float32)
    t = _distribution(rng, 6, 4, np.float32)
    lk.kl_divergence(_lib(z, lib), _lib(t, lib))
    lk.cross_entropy(_lib(z, lib), _lib(t, lib))
    assert passes[0] == 2
    lk.kl_divergence(_lib(z, lib), _lib(t, lib), mask=_lib(np.ones(6, bool), lib))
    lk.kl_divergence(_lib(z, lib), _lib(np.log(t), lib), log_target=True)
    big_z = rng.standard_normal((EDGE // 4 + 1, 4)).astype(np.float32)
    lk.kl_divergence(_lib(big_z, lib), _lib(_distribution(rng, EDGE // 4 + 1, 4, np.float32), lib))
    assert passes[0] == 2


BAD = [
    ("negative", lambda t: t.__setitem__((2, 1), -0.25), r"must hold probabilities \(in \[0, 1\]\); found -0.25 at target\[2, 1\]"),
    ("above one", lambda t: t.__setitem__((4, 0), 1.5), r"found 1.5 at target\[4, 0\]"),
    ("row sum", lambda t: t.__setitem__(3, t[3] * 1.01), r"the row at target\[3\] sums to"),
]


@pytest.mark.parametrize("what, spoil, message", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("rows", [6, EDGE // 4 + 1], ids=["small", "above the threshold"])
@pytest.mark.parametrize("lib", LIBS)
def test_invalid_targets_raise_the_same_error_with_and_without_the_pass(what, spoil, message, rows, lib, rng):
    z = rng.standard_normal((rows, 4)).astype(np.float32)
    t = _distribution(rng, rows, 4, np.float32)
    spoil(t)
    for off in (False, True):
        with pytest.raises(ValueError, match=message):
            if off:
                with _accel.disabled():
                    lk.kl_divergence(_lib(z, lib), _lib(t, lib))
            else:
                lk.kl_divergence(_lib(z, lib), _lib(t, lib))


def test_a_row_sum_at_the_tolerance_is_decided_the_same_way(rng):
    """Rows off by just inside and just outside √ε: pass and reject, with and without the pass."""
    tol = float(np.finfo(np.float32).eps) ** 0.5
    for factor, ok in ((1 + 0.5 * tol, True), (1 + 2 * tol, False)):
        t = _distribution(rng, 5, 8, np.float64)
        t[2] *= factor
        t = t.astype(np.float32)
        xp = np
        for off in (False, True):
            ctx = _accel.disabled() if off else _nullcontext()
            with ctx:
                if ok:
                    _validate.check_distribution(t, "target", "kl", xp, log=False, tol=tol, flag=None)
                else:
                    with pytest.raises(ValueError, match=r"the row at target\[2\] sums to"):
                        _validate.check_distribution(t, "target", "kl", xp, log=False, tol=tol, flag=None)


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()
