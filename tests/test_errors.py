"""Clear errors that name the argument, for every kind of bad input, over every registered loss
(argument names come from the declaration). Messages special to one loss (class ids,
probabilities, per-class weights) are in that loss's own test file."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

import losskit as lk
from registry_cases import CLASS_AXIS, ELEMENTWISE, draw, names, sample_shape, spec


def _inputs(name, rng):
    d = draw(name, 0, rng)
    return list(d.arrays), d.options


@pytest.mark.parametrize("name", names(lambda s: s.kind == ELEMENTWISE))
def test_shape_mismatch_names_both_shapes_with_trailing_axis_hint(name):
    s = spec(name)
    a, b = s.positional[:2]
    loss = lk.registry[name]
    rest = [np.zeros(4)] * (len(s.positional) - 2)
    with pytest.raises(ValueError, match=rf"`{a}` and `{b}` must have the same shape, got {a} \(4, 1\) and {b} \(4,\).*trailing axis of size 1"):
        loss(np.zeros((4, 1)), np.zeros(4), *rest)
    with pytest.raises(ValueError, match=rf"{b} \(4, 1\).*`{b}` has a trailing axis"):
        loss(np.zeros(4), np.zeros((4, 1)), *rest)
    with pytest.raises(ValueError, match=rf"\(3,\) and {b} \(4,\)"):
        loss(np.zeros(3), np.zeros(4), *rest)


@pytest.mark.parametrize("name", names())
def test_non_floating_first_input_is_rejected(name, rng):
    arrays, o = _inputs(name, rng)
    first = spec(name).positional[0]
    arrays[0] = np.round(arrays[0]).astype(np.int64)
    with pytest.raises(TypeError, match=rf"`{first}` must be a floating-point array, got dtype int64"):
        lk.registry[name](*arrays, **o)


@pytest.mark.parametrize("name", names())
def test_bad_reduction_and_normalizer(name, rng):
    arrays, o = _inputs(name, rng)
    loss = lk.registry[name]
    with pytest.raises(ValueError, match=r"`reduction` must be one of \('mean', 'sum', 'none'\), got 'avg'"):
        loss(*arrays, reduction="avg", **o)
    with pytest.raises(ValueError, match="`normalizer` only applies to reduction='mean'"):
        loss(*arrays, reduction="sum", normalizer=4, **o)


def _misspelt(option: str) -> str:
    """The option with two neighbouring letters swapped (a typo difflib still recognises)."""
    k = 1 if len(option) > 2 else 0
    return option[:k] + option[k + 1] + option[k] + option[k + 2 :]


@pytest.mark.parametrize("name", names(lambda s: any(len(k) > 2 for k in s.options)))
def test_unknown_options_suggest_the_closest(name, rng):
    arrays, o = _inputs(name, rng)
    option = next(k for k in spec(name).options if len(k) > 2)
    typo = _misspelt(option)
    with pytest.raises(TypeError, match=f"unexpected keyword argument `{typo}`. Did you mean `{option}`"):
        lk.registry[name](*arrays, **{typo: spec(name).options[option]})


def _bounded_numbers():
    return [(n, k) for n in names() for k, r in spec(n).option_rules.items() if r.kind == "number" and r.low is not None]


@pytest.mark.parametrize("name,opt", _bounded_numbers())
def test_out_of_range_numbers_state_the_interval(name, opt, rng):
    rule = spec(name).option_rules[opt]
    arrays, o = _inputs(name, rng)
    interval = f"{'(' if rule.low_open else '['}{rule.low}, {rule.high if rule.high is not None else 'inf'}]"
    bad = [rule.low - 1.0] + ([rule.low] if rule.low_open else []) + ([rule.high + 1.0] if rule.high is not None else [])
    for value in bad:
        with pytest.raises(ValueError, match=re.escape(f"`{opt}` must be in {interval}, got {float(value)!r}")):
            lk.registry[name](*arrays, **{**o, opt: value})


@pytest.mark.parametrize("name", names())
def test_weight_and_mask_shapes(name, rng):
    arrays, o = _inputs(name, rng)
    s = spec(name)
    loss = lk.registry[name]
    want = sample_shape(s, arrays[0], s.checks.option_sets[0])
    shown = re.escape(str(tuple(want)))
    short = want[:-1]
    with pytest.raises(ValueError, match=rf"`weight` must have the shape of the per-sample loss {shown}, got {re.escape(str(short))}"):
        loss(*arrays, weight=np.ones(short), **o)
    if s.kind == CLASS_AXIS:
        full = np.shape(arrays[0])
        with pytest.raises(ValueError, match=rf"`weight` must have the shape of the per-sample loss {shown}, got {re.escape(str(tuple(full)))}.*omits the class axis"):
            loss(*arrays, weight=np.ones(full), **o)
    with pytest.raises(TypeError, match="`mask` must be a boolean array"):
        loss(*arrays, mask=np.ones(want), **o)


@pytest.mark.parametrize("name", names())
def test_mixed_libraries_are_rejected(name, rng):
    torch = pytest.importorskip("torch")
    arrays, o = _inputs(name, rng)
    with pytest.raises(TypeError, match="arrays of one library"):
        lk.registry[name](torch.as_tensor(arrays[0]), *arrays[1:], **o)


def test_import_does_not_import_frameworks():
    code = "import sys, losskit; bad = [m for m in ('torch', 'jax', 'matplotlib', 'rich') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_registry_metadata_is_complete():
    for name, loss in lk.registry.items():
        spec_ = loss.spec
        for field in ("formula", "gradient", "hessian", "domain", "reference", "use_when", "family"):
            assert getattr(spec_, field), (name, field)
        doc = loss.__doc__
        assert ">>>" in doc and "Reference" in doc, name
        assert loss is getattr(lk, name)
