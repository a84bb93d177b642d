"""Classes of failure from the hostile review, each tested over every registered loss and
backend rather than per reported instance: option types and values whatever their form,
zero denominators, NaN propagation through every output, arguments that are not arrays or
come from another library, and JAX calls with NumPy inputs."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from cases import CASES, draw, losskit_options

NAMES = sorted(lk.registry)
NEEDS = ("value", "grad", "value_and_grad", "grad_hess")


def _call(loss, need, *args, **kw):
    return loss(*args, **kw) if need == "value" else getattr(loss, need)(*args, **kw)


def _sample_shape(name, pred):
    return pred.shape[:-1] if CASES[name].sample_axis_dropped else pred.shape


def _inputs(name, rng, i=0):
    case, o, pred, target = draw(name, i, rng)
    return pred, target, losskit_options(o)


def _rules(name):
    return lk.registry[name]._rules


# --- option types: the same rule for a Python number, a 0-d array of any backend, an array ----

BAD_TYPES = [True, "0.5", 1j, [0.5], None.__class__]


def _numeric_options():
    out = []
    for name in NAMES:
        for opt, rule in _rules(name).items():
            if rule.kind in ("number", "array"):
                out.append((name, opt))
    return out


@pytest.mark.parametrize("name,opt", _numeric_options())
@pytest.mark.parametrize("bad", BAD_TYPES, ids=["bool", "str", "complex", "list", "type"])
def test_numeric_options_reject_non_numbers(name, opt, bad, rng):
    pred, target, o = _inputs(name, rng)
    o[opt] = bad
    with pytest.raises(TypeError, match=f"`{opt}`"):
        lk.registry[name](pred, target, **o)


def _zero_d_forms(value):
    """A number as every backend's 0-d array."""
    import torch

    forms = [value, np.float64(value), np.array(value), torch.tensor(value, dtype=torch.float64)]
    try:
        import jax.numpy as jnp

        forms.append(jnp.asarray(value))
    except ImportError:
        pass
    return forms


@pytest.mark.parametrize("name,opt", [p for p in _numeric_options() if _rules(p[0])[p[1]].low is not None])
def test_out_of_range_values_are_rejected_in_every_form(name, opt, rng):
    pytest.importorskip("torch")
    rule = _rules(name)[opt]
    pred, target, o = _inputs(name, rng)
    for bad in (rule.low - 1.0, float("nan")) + ((rule.high + 1.0,) if rule.high is not None else ()):
        for form in _zero_d_forms(bad):
            if rule.kind == "number" or isinstance(form, (float, np.ndarray, np.generic)):
                o[opt] = form
                with pytest.raises((ValueError, TypeError), match=f"`{opt}`"):
                    lk.registry[name](pred, target, **o)


@pytest.mark.parametrize("name", NAMES)
def test_normalizer_follows_one_rule_in_every_form(name, rng, backend):
    pred, target, o = _inputs(name, rng)
    p, t = backend.asarray(pred), backend.asarray(target)
    o = {k: backend.asarray(v) if isinstance(v, np.ndarray) else v for k, v in o.items()}
    loss = lk.registry[name]
    for bad in (-1.0, backend.asarray(np.array(-1.0)), float("nan")):
        with pytest.raises(ValueError, match="`normalizer`"):
            loss(p, t, normalizer=bad, **o)
    for bad in (True, "4", [4.0]):
        with pytest.raises(TypeError, match="`normalizer`"):
            loss(p, t, normalizer=bad, **o)
    with pytest.raises(ValueError, match="`normalizer` must have shape"):
        loss(p, t, normalizer=backend.asarray(np.array([4.0, 4.0])), **o)
    a = backend.to_numpy(loss(p, t, normalizer=4.0, **o))
    b = backend.to_numpy(loss(p, t, normalizer=backend.asarray(np.array(4.0)), **o))
    np.testing.assert_allclose(a, b, rtol=1e-12)


# --- zero denominators: an error with valid samples, 0 only for an empty selection -----------


@pytest.mark.parametrize("name", NAMES)
def test_zero_weight_sum_with_valid_samples_is_an_error(name, rng, backend):
    pred, target, o = _inputs(name, rng)
    shape = _sample_shape(name, pred)
    loss = lk.registry[name]
    p, t = backend.asarray(pred), backend.asarray(target)
    o = {k: backend.asarray(v) if isinstance(v, np.ndarray) else v for k, v in o.items()}
    with pytest.raises(ValueError, match="sum to 0"):
        loss(p, t, weight=backend.asarray(np.zeros(shape)), **o)
    with pytest.raises(ValueError, match="`normalizer` is 0"):
        loss(p, t, normalizer=0, **o)
    # an empty selection is the documented 0 with zero gradient, for every output
    none = backend.asarray(np.zeros(shape, dtype=bool))
    for need in NEEDS:
        out = _call(loss, need, p, t, mask=none, weight=backend.asarray(np.zeros(shape)), **o)
        for a in out if isinstance(out, tuple) else (out,):
            assert np.all(backend.to_numpy(a) == 0)
    # and "sum" of zero weights is an ordinary 0
    assert float(backend.to_numpy(loss(p, t, weight=backend.asarray(np.zeros(shape)), reduction="sum", **o))) == 0


# --- NaN propagates through every output -----------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_nan_in_pred_reaches_every_output(name, rng, backend):
    pred, target, o = _inputs(name, rng)
    pred = pred.copy()
    pred.flat[0] = np.nan
    loss = lk.registry[name]
    p, t = backend.asarray(pred), backend.asarray(target)
    o = {k: backend.asarray(v) if isinstance(v, np.ndarray) else v for k, v in o.items()}
    for need in NEEDS:
        for reduction in ("mean", "sum", "none"):
            out = _call(loss, need, p, t, reduction=reduction, validate=False, **o)
            for a in out if isinstance(out, tuple) else (out,):
                a = backend.to_numpy(a)
                assert np.isnan(a.flat[0]), (need, reduction, a)


@pytest.mark.parametrize("name", [n for n in NAMES if not np.issubdtype(np.asarray(draw(n, 0, np.random.default_rng(0))[3]).dtype, np.integer)])
def test_nan_in_soft_target_reaches_every_output(name, rng):
    pred, target, o = _inputs(name, rng)
    target = target.copy()
    target.flat[0] = np.nan
    loss = lk.registry[name]
    for need in NEEDS:
        out = _call(loss, need, pred, target, reduction="none", **o)
        for a in out if isinstance(out, tuple) else (out,):
            assert np.isnan(a.flat[0]), need


# --- arguments that are not arrays, or arrays of another library -----------------------------


def _not_arrays():
    import torch

    return [[0.0, 1.0], "abc", 3, torch.zeros(2)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("arg", ["target", "weight", "mask"])
def test_non_array_arguments_are_type_errors_naming_the_argument(name, arg, rng):
    pytest.importorskip("torch")
    pred, target, o = _inputs(name, rng)
    for bad in _not_arrays():
        kw = dict(o)
        args = [pred, target]
        if arg == "target":
            args[1] = bad
        else:
            kw[arg] = bad
        with pytest.raises(TypeError, match=f"`{arg}`"):
            lk.registry[name](*args, **kw)


@pytest.mark.parametrize("name,opt", [(n, k) for n in NAMES for k, r in _rules(n).items() if r.kind == "array"])
def test_array_options_of_another_type_name_the_option(name, opt, rng):
    torch = pytest.importorskip("torch")
    pred, target, o = _inputs(name, rng)
    for bad in ([0.5, 1.0], "abc", torch.ones(2), np.ones(3) * 1j):
        o[opt] = bad
        with pytest.raises(TypeError, match=f"`{opt}`"):
            lk.registry[name](pred, target, **o)


@pytest.mark.parametrize("name", NAMES)
def test_torch_never_mixes_with_numpy(name, rng):
    torch = pytest.importorskip("torch")
    pred, target, o = _inputs(name, rng)
    with pytest.raises(TypeError, match="`target` is a numpy.ndarray"):
        lk.registry[name](torch.as_tensor(pred), target, **o)


@pytest.mark.parametrize("name", NAMES)
def test_complex_targets_are_rejected(name, rng):
    pred, target, o = _inputs(name, rng)
    with pytest.raises(TypeError, match="`target`"):
        lk.registry[name](pred, np.asarray(target) * (1 + 0j), **o)


# --- JAX takes NumPy inputs as every JAX function does ----------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_jax_pred_with_numpy_inputs(name, rng):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    pred, target, o = _inputs(name, rng)
    shape = _sample_shape(name, pred)
    w = rng.uniform(0.5, 2.0, shape)
    mask = rng.random(shape) < 0.8
    mask.flat[0] = True
    loss = lk.registry[name]
    expected = loss(pred, target, weight=w, mask=mask, **o)
    jo = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in o.items()}
    eager = loss(jnp.asarray(pred), target, weight=w, mask=mask, **o)  # NumPy target, weight, mask, options
    np.testing.assert_allclose(np.asarray(eager), expected, rtol=1e-10)
    g = jax.grad(lambda z: loss(z, target, weight=w, mask=mask, **o))(jnp.asarray(pred))
    np.testing.assert_allclose(np.asarray(g), loss.grad(pred, target, weight=w, mask=mask, **o), rtol=1e-8, atol=1e-14)
    jitted = jax.jit(lambda z: loss(z, target, weight=w, mask=mask, **jo))(jnp.asarray(pred))  # closes over NumPy
    np.testing.assert_allclose(np.asarray(jitted), expected, rtol=1e-10)
