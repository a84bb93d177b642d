"""Classes of failure from the hostile review, each tested over every registered loss and
backend rather than per reported instance: option types and values whatever their form,
zero denominators, NaN propagation through every output, arguments that are not arrays or
come from another library, and JAX calls with NumPy inputs."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from registry_cases import call as _call
from registry_cases import SET, draw, flat_outputs, is_float, loss_params, names, needs, sample_shape, spec

NAMES = names()


def _inputs(name, rng, i=0):
    """(positional arrays as a list, options) of option set ``i``."""
    d = draw(name, i, rng)
    return list(d.arrays), d.options


def _sample_shape(name, arrays):
    return sample_shape(spec(name), arrays[0], spec(name).checks.option_sets[0])


def _second(name) -> str:
    """The name of the second positional array (the target, or the second input)."""
    return spec(name).positional[1]


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
    arrays, o = _inputs(name, rng)
    o[opt] = bad
    with pytest.raises(TypeError, match=f"`{opt}`"):
        lk.registry[name](*arrays, **o)


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
    arrays, o = _inputs(name, rng)
    for bad in (rule.low - 1.0, float("nan")) + ((rule.high + 1.0,) if rule.high is not None else ()):
        for form in _zero_d_forms(bad):
            if rule.kind == "number" or isinstance(form, (float, np.ndarray, np.generic)):
                o[opt] = form
                with pytest.raises((ValueError, TypeError), match=f"`{opt}`"):
                    lk.registry[name](*arrays, **o)


def _on(backend, arrays, o):
    return [backend.asarray(a) for a in arrays], {k: backend.asarray(v) if isinstance(v, np.ndarray) else v for k, v in o.items()}


@pytest.mark.parametrize("name", NAMES)
def test_normalizer_follows_one_rule_in_every_form(name, rng, backend):
    arrays, o = _on(backend, *_inputs(name, rng))
    loss = lk.registry[name]
    for bad in (-1.0, backend.asarray(np.array(-1.0)), float("nan")):
        with pytest.raises(ValueError, match="`normalizer`"):
            loss(*arrays, normalizer=bad, **o)
    for bad in (True, "4", [4.0]):
        with pytest.raises(TypeError, match="`normalizer`"):
            loss(*arrays, normalizer=bad, **o)
    with pytest.raises(ValueError, match="`normalizer` must have shape"):
        loss(*arrays, normalizer=backend.asarray(np.array([4.0, 4.0])), **o)
    if spec(name).kind == SET:  # a well-formed normalizer is still an error for per-set values
        with pytest.raises(ValueError, match="`normalizer` does not apply to a set-level loss"):
            loss(*arrays, normalizer=4.0, **o)
        return
    a = backend.to_numpy(loss(*arrays, normalizer=4.0, **o))
    b = backend.to_numpy(loss(*arrays, normalizer=backend.asarray(np.array(4.0)), **o))
    np.testing.assert_allclose(a, b, rtol=1e-12)


# --- zero denominators: an error with valid samples, 0 only for an empty selection -----------


@pytest.mark.parametrize("name", names(lambda s: s.kind != SET))
def test_zero_weight_sum_with_valid_samples_is_an_error(name, rng, backend):
    """Per-sample losses (set-level "mean" averages sets, not weights)."""
    arrays, o = _inputs(name, rng)
    shape = _sample_shape(name, arrays)
    arrays, o = _on(backend, arrays, o)
    with pytest.raises(ValueError, match="sum to 0"):
        lk.registry[name](*arrays, weight=backend.asarray(np.zeros(shape)), **o)


@pytest.mark.parametrize("name", loss_params("test_zero_normalizer_with_valid_samples_is_an_error"))
def test_zero_normalizer_with_valid_samples_is_an_error(name, rng, backend):
    arrays, o = _on(backend, *_inputs(name, rng))
    # set-level losses refuse any normalizer (their values are per-set ratios)
    message = "`normalizer` does not apply" if spec(name).kind == SET else "`normalizer` is 0"
    with pytest.raises(ValueError, match=message):
        lk.registry[name](*arrays, normalizer=0, **o)


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_selection_is_zero_with_zero_gradient(name, rng, backend):
    """The documented 0 with zero gradient, for every output; "sum" of zero weights is an
    ordinary 0."""
    arrays, o = _inputs(name, rng)
    shape = _sample_shape(name, arrays)
    loss = lk.registry[name]
    arrays, o = _on(backend, arrays, o)
    none = backend.asarray(np.zeros(shape, dtype=bool))
    for need in needs(spec(name)):
        out = _call(loss, need, *arrays, mask=none, weight=backend.asarray(np.zeros(shape)), **o)
        for a in flat_outputs(out):
            assert np.all(backend.to_numpy(a) == 0)
    assert float(backend.to_numpy(loss(*arrays, weight=backend.asarray(np.zeros(shape)), reduction="sum", **o))) == 0


# --- NaN propagates through every output -----------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_nan_in_the_first_input_reaches_every_output(name, rng, backend):
    arrays, o = _inputs(name, rng)
    arrays[0] = arrays[0].copy()
    arrays[0].flat[0] = np.nan
    loss = lk.registry[name]
    arrays, o = _on(backend, arrays, o)
    for need in needs(spec(name)):
        for reduction in ("mean", "sum", "none"):
            out = _call(loss, need, *arrays, reduction=reduction, validate=False, **o)
            for a in flat_outputs(out):
                a = backend.to_numpy(a)
                assert np.isnan(a.flat[0]), (need, reduction, a)


def _soft_target(name) -> bool:
    s = spec(name)
    return s.target is not None and is_float(draw(name, 0, np.random.default_rng(0)).target)


@pytest.mark.parametrize("name", loss_params("test_nan_in_soft_target_reaches_every_output", where=lambda s: _soft_target(s.name)))
def test_nan_in_soft_target_reaches_every_output(name, rng):
    arrays, o = _inputs(name, rng)
    k = len(spec(name).inputs)
    arrays[k] = arrays[k].copy()
    arrays[k].flat[0] = np.nan
    loss = lk.registry[name]
    for need in needs(spec(name)):
        out = _call(loss, need, *arrays, reduction="none", **o)
        for a in flat_outputs(out):
            assert np.isnan(a.flat[0]), need


# --- arguments that are not arrays, or arrays of another library -----------------------------


def _not_arrays():
    import torch

    return [[0.0, 1.0], "abc", 3, torch.zeros(2)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("arg", ["second", "weight", "mask"])
def test_non_array_arguments_are_type_errors_naming_the_argument(name, arg, rng):
    pytest.importorskip("torch")
    arrays, o = _inputs(name, rng)
    label = _second(name) if arg == "second" else arg
    for bad in _not_arrays():
        kw = dict(o)
        args = list(arrays)
        if arg == "second":
            args[1] = bad
        else:
            kw[arg] = bad
        with pytest.raises(TypeError, match=f"`{label}`"):
            lk.registry[name](*args, **kw)


@pytest.mark.parametrize("name,opt", [(n, k) for n in NAMES for k, r in _rules(n).items() if r.kind == "array"])
def test_array_options_of_another_type_name_the_option(name, opt, rng):
    torch = pytest.importorskip("torch")
    arrays, o = _inputs(name, rng)
    for bad in ([0.5, 1.0], "abc", torch.ones(2), np.ones(3) * 1j):
        o[opt] = bad
        with pytest.raises(TypeError, match=f"`{opt}`"):
            lk.registry[name](*arrays, **o)


@pytest.mark.parametrize("name", NAMES)
def test_torch_never_mixes_with_numpy(name, rng):
    torch = pytest.importorskip("torch")
    arrays, o = _inputs(name, rng)
    with pytest.raises(TypeError, match=f"`{_second(name)}` is a numpy.ndarray"):
        lk.registry[name](torch.as_tensor(arrays[0]), *arrays[1:], **o)


@pytest.mark.parametrize("name", NAMES)
def test_complex_second_arrays_are_rejected(name, rng):
    arrays, o = _inputs(name, rng)
    arrays[1] = np.asarray(arrays[1]) * (1 + 0j)
    with pytest.raises(TypeError, match=f"`{_second(name)}`"):
        lk.registry[name](*arrays, **o)


# --- JAX takes NumPy inputs as every JAX function does ----------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_jax_first_input_with_numpy_inputs(name, rng):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    arrays, o = _inputs(name, rng)
    first, rest = arrays[0], arrays[1:]
    shape = _sample_shape(name, arrays)
    w = rng.uniform(0.5, 2.0, shape)
    mask = rng.random(shape) < 0.8
    mask.flat[0] = True
    loss = lk.registry[name]
    n = len(spec(name).inputs)
    expected = loss(*arrays, weight=w, mask=mask, **o)
    jo = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in o.items()}
    eager = loss(jnp.asarray(first), *rest, weight=w, mask=mask, **o)  # NumPy other arrays, weight, mask, options
    np.testing.assert_allclose(np.asarray(eager), expected, rtol=1e-10)
    g = jax.grad(lambda z: loss(z, *rest, weight=w, mask=mask, **o))(jnp.asarray(first))
    g_expected = loss.grad(*arrays, weight=w, mask=mask, **o)
    g_expected = g_expected[0] if n > 1 else g_expected
    np.testing.assert_allclose(np.asarray(g), g_expected, rtol=1e-8, atol=1e-14)
    jitted = jax.jit(lambda z: loss(z, *rest, weight=w, mask=mask, **jo))(jnp.asarray(first))  # closes over NumPy
    np.testing.assert_allclose(np.asarray(jitted), expected, rtol=1e-10)


# --- distribution targets in another float dtype than the logits ------------------------------


def _distribution_target_losses():
    """Losses that check a target distribution with ``prepare_dense_target`` (cross-entropy's
    probability targets: tests/losses/test_cross_entropy.py)."""
    from losskit.losses import _softmax

    return [lk.registry[n] for n in NAMES if spec(n).prepare is _softmax.prepare_dense_target]


@pytest.mark.parametrize("loss", _distribution_target_losses(), ids=lambda loss: loss.spec.name)
@pytest.mark.parametrize("logits, given", [(np.float32, np.float64), (np.float64, np.float32)])
def test_a_normalised_target_of_another_float_dtype_passes_the_check(loss, logits, given, rng):
    """A distribution normalised in float64 and checked in the float32 of the logits sums to 1
    within float32's rounding (it was rejected against float64's √ε), and the other way round;
    a row 1 % off is still rejected in both."""
    t = rng.random((64, 1000))
    t = (t / t.sum(-1, keepdims=True)).astype(given)
    if given == np.float32:
        t = t / t.sum(-1, keepdims=True, dtype=np.float32)
    z = rng.standard_normal((64, 1000)).astype(logits)
    value = loss(z, t)
    exact = loss(z.astype(np.float64), t.astype(np.float64), validate=False)
    assert np.isfinite(value) and abs(float(value) - float(exact)) <= 1e-4 * abs(float(exact))
    bad = t.copy()
    bad[3] *= 1.01
    with pytest.raises(ValueError, match=r"the row at target\[3\] sums to"):
        loss(z, bad)
