"""``_array.clip``, ``positive_part`` and torch's ``logsumexp_split``: backend calls that skip
array-api-compat's wrappers must give exactly what the plain NumPy formulas give, NaN, ±inf
and signed zeros included, in the input's dtype."""

import numpy as np
import pytest

import losskit._array as A

SPECIAL = [np.nan, -np.inf, np.inf, -3.0, -1.0, -0.0, 0.0, 0.25, 1.0, 2.5, 1e30, -1e30]
BOUNDS = [(-1.0, 1.0), (None, 1.0), (-1.0, None), (0.0, None), (-2.0, -2.0)]


def _backends():
    out = [("numpy", np.asarray, lambda a: a)]
    try:
        import torch

        out.append(("torch", torch.as_tensor, lambda a: a.numpy()))
    except ImportError:
        pass
    return out


def _reference_clip(x, low, high):
    out = x.copy()
    if low is not None:
        out = np.where(out < low, low, out)  # NaN compares False: stays NaN
    if high is not None:
        out = np.where(out > high, high, out)
    return out.astype(x.dtype)


@pytest.mark.parametrize("name,make,back", _backends(), ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(12,), (3, 4)])
def test_clip_and_positive_part_match_the_plain_formula(name, make, back, dtype, shape):
    x = np.array(SPECIAL, dtype=dtype).reshape(shape)
    xp = A.namespace(make(x))
    for low, high in BOUNDS:
        got = A.clip(make(x), low, high, xp=xp)
        assert str(got.dtype).endswith(np.dtype(dtype).name)
        np.testing.assert_array_equal(back(got), _reference_clip(x, low, high))
    got = back(A.positive_part(make(x), xp=xp))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, _reference_clip(x, 0.0, None))


def test_clip_leaves_its_input_alone_and_takes_0d():
    x = np.array([-2.0, 0.5, 3.0])
    xp = A.namespace(x)
    A.clip(x, -1.0, 1.0, xp=xp)
    np.testing.assert_array_equal(x, [-2.0, 0.5, 3.0])
    np.testing.assert_array_equal(A.clip(np.asarray(3.0), -1.0, 1.0, xp=xp), 1.0)
    np.testing.assert_array_equal(A.positive_part(np.asarray(-3.0), xp=xp), 0.0)


def test_torch_logsumexp_split_matches_numpy_bit_for_bit():
    torch = pytest.importorskip("torch")
    inf, nan = np.inf, np.nan
    rng = np.random.default_rng(0)
    rows = [[1e4, -1e4, 0.0], [0.0, -inf, 2.0], [-inf, -inf, -inf], [inf, 1.0, 0.0], [nan, 1.0, 0.0], [2.0, 2.0, 1.0], [3.0, 3.0, 3.0]]
    for dtype in (np.float32, np.float64):
        x = np.concatenate([np.array(rows), rng.standard_normal((5, 3)) * 4]).astype(dtype)
        for keepdims in (False, True):
            m_np, r_np = A.logsumexp_split(x, xp=A.namespace(x), keepdims=keepdims)
            m_t, r_t = A.logsumexp_split(torch.as_tensor(x), xp=A.namespace(torch.as_tensor(x)), keepdims=keepdims)
            np.testing.assert_array_equal(m_t.numpy(), m_np)
            # exp and log1p are each correctly rounded to within an ulp on both backends
            np.testing.assert_allclose(r_t.numpy(), r_np, rtol=4 * np.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("name,make,back", _backends(), ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_where_matches_the_plain_select(name, make, back, dtype):
    x = np.array(SPECIAL, dtype=dtype)
    cond = np.arange(x.size) % 3 == 0
    got = back(A.zero_where(make(cond), make(x), xp=A.namespace(make(x))))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, np.where(cond, dtype(0), x))


@pytest.mark.parametrize("name,make,back", _backends(), ids=lambda v: v if isinstance(v, str) else "")
def test_is_integral_is_isdtype_integral_per_dtype(name, make, back):
    """The cached dtype test says what the array API's isdtype says: signed and unsigned ints
    yes, bool and floats no, the same on a second (cached) call."""
    for dtype in [np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_, np.float16, np.float32, np.float64]:
        x = make(np.zeros(3, dtype=dtype))
        xp = A.namespace(x)
        want = np.issubdtype(dtype, np.integer)
        assert A.is_integral(x, xp) is want and A.is_integral(x, xp) is want, dtype


def test_xlogx_agrees_with_xlogy_on_every_backend():
    """x·log x with 0·log 0 = 0 and NaN for negative x or NaN: NumPy (a select around log)
    equals torch's and JAX's xlogy(x, x) on the special values, and the float64 formula."""
    torch = pytest.importorskip("torch")
    x = np.array(SPECIAL + [1e-30, 1e-300, 5e-324])
    got_np = A.xlogx(x, xp=A.namespace(x))
    got_torch = A.xlogx(torch.from_numpy(x), xp=A.namespace(torch.from_numpy(x))).numpy()
    with np.errstate(all="ignore"):
        expected = np.where(x == 0, 0.0, x * np.log(x))
    for got in (got_np, got_torch):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        ok = ~np.isnan(expected)
        np.testing.assert_allclose(got[ok], expected[ok], rtol=1e-15, atol=0)
    assert np.isnan(got_np[x < 0]).all()
