"""Helpers for the registry-driven test suites: everything they know about a loss comes from its
declaration, ``lk.registry[name].spec`` (``spec.checks`` holds how to draw inputs, option sets,
edges, kinks, the known minimum, flags and peers). No loss is named here.

* :func:`params` lists ``(name, option-set index)`` pairs (optionally with a peer index) as
  ``pytest.param`` objects with readable ids, marked ``xfail(strict=True)`` where
  ``tests/losses/known_failures.py`` records a known bug for that test and case;
* :func:`draw` draws valid inputs for one case (:class:`Drawn`), moved off the kinks;
* :func:`sample_shape` is the shape of the per-sample loss (that of ``weight`` and ``mask``);
* :func:`on_backend` converts arrays and options to a backend of ``conftest.Backend``.

Losses may have several differentiable inputs (``spec.inputs``), no target (``spec.target is
None``) or be set-level (``spec.kind == "set"``): gradients are handled as tuples (one per
input) through :func:`as_tuple`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import losskit as lk

REDUCTIONS = ("mean", "sum", "none")
ELEMENTWISE, CLASS_AXIS, SET, SEQUENCE = "elementwise", "class_axis", "set", "sequence"


def _load_known_failures() -> dict:
    path = Path(__file__).parent / "losses" / "known_failures.py"
    if not path.exists():
        return {}
    spec = importlib.util.spec_from_file_location("_losskit_known_failures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.KNOWN


KNOWN = _load_known_failures()


# --- the registry ----------------------------------------------------------------------------


def names(where=None) -> list[str]:
    """Registered losses with test metadata (``spec.checks``), sorted; ``where(spec)`` filters."""
    return sorted(n for n, loss in lk.registry.items() if loss.spec.checks is not None and (where is None or where(loss.spec)))


def spec(name):
    return lk.registry[name].spec


def option_set(name: str, i: int) -> dict:
    return dict(spec(name).checks.option_sets[i])


def strip(o: dict) -> dict:
    """Options as the loss takes them: keys starting with ``_`` are for ``sample`` only."""
    return {k: v for k, v in o.items() if not k.startswith("_")}


def _short(v) -> str:
    if isinstance(v, np.ndarray):
        return "array" if v.ndim else repr(float(v))
    return repr(v) if not isinstance(v, str) else v


def case_id(name: str, i: int, peer: int | None = None) -> str:
    o = option_set(name, i)
    out = name + ("[" + ",".join(k if v is True else f"{k}={_short(v)}" for k, v in o.items()) + "]" if o else "")
    if peer is not None:
        out += "~" + spec(name).checks.peers[peer].name
    return out


def _marks(test: str | None, name: str, i: int | None):
    if test is None:
        return ()
    known = KNOWN.get(name, {}).get(test)
    if known is None:
        return ()
    if isinstance(known, str):
        return (pytest.mark.xfail(strict=True, reason=known),)
    reason = known.get(i)
    return () if reason is None else (pytest.mark.xfail(strict=True, reason=reason),)


def params(test: str | None = None, where=None, case=None) -> list:
    """``pytest.param((name, i))`` for every declared loss (``where(spec)``) and option set
    (``case(spec, raw_options)``), with its id and any known-failure mark of ``test``."""
    out = []
    for name in names(where):
        for i, o in enumerate(spec(name).checks.option_sets):
            if case is None or case(spec(name), o):
                out.append(pytest.param((name, i), id=case_id(name, i), marks=_marks(test, name, i)))
    return out


def shares_options(peer, o: dict) -> bool:
    """A peer is compared on an option set only if it shares every option the set uses."""
    return all(k in peer.options for k in strip(o))


def peer_params(test: str | None = None, where=None, peer_filter=None) -> list:
    """``pytest.param((name, i, j))`` for every loss, option set and peer ``j`` sharing its options."""
    out = []
    for name in names(where):
        s = spec(name)
        for i, o in enumerate(s.checks.option_sets):
            for j, peer in enumerate(s.checks.peers):
                if shares_options(peer, o) and (peer_filter is None or peer_filter(peer)):
                    out.append(pytest.param((name, i, j), id=case_id(name, i, j), marks=_marks(test, name, i)))
    return out


def loss_params(test: str | None = None, where=None) -> list:
    """``pytest.param(name)`` for every declared loss (``where(spec)``)."""
    return [pytest.param(n, id=n, marks=_marks(test, n, None)) for n in names(where)]


def require(peer) -> None:
    """Skip unless the peer's library is installed. Found, not imported: a peer may load just
    the part of a package it needs (a package's ``__init__`` can import much more)."""
    if peer.requires and importlib.util.find_spec(peer.requires) is None:
        pytest.skip(f"peer {peer.name} needs {peer.requires}")


# --- drawing inputs ----------------------------------------------------------------------------


def class_axis(s, o: dict, ndim: int) -> int | None:
    """The class (reduced) axis of a class-axis loss, normalised; None for other kinds."""
    if s.kind != CLASS_AXIS and not (s.reduces_axis is not None and s.reduces_axis(strip(o))):
        return None
    axis = o.get("axis", s.options.get("axis", -1))
    return axis % ndim


def sample_shape(s, first, o: dict) -> tuple:
    """Shape of the per-sample loss, i.e. of ``weight`` and ``mask``: the first input's shape,
    without the class axis for class-axis losses (set-level losses weight each element)."""
    shape = tuple(np.shape(first))
    if s.kind == SEQUENCE:  # one value per sequence: the time and class axes are reduced
        return shape[:-2]
    axis = class_axis(s, o, len(shape))
    return shape if axis is None else shape[:axis] + shape[axis + 1 :]


@dataclass
class Drawn:
    """One drawn case: ``arrays`` are the positional inputs in call order (float64 NumPy, class
    ids as integers), ``options`` the loss's options (``raw`` keeps the ``_`` keys)."""

    name: str
    index: int
    raw: dict
    arrays: tuple

    @property
    def loss(self):
        return lk.registry[self.name]

    @property
    def spec(self):
        return self.loss.spec

    @property
    def options(self) -> dict:
        return strip(self.raw)

    @property
    def n_inputs(self) -> int:
        return len(self.spec.inputs)

    @property
    def inputs(self) -> tuple:
        return self.arrays[: self.n_inputs]

    @property
    def target(self):
        return self.arrays[self.n_inputs] if self.spec.target else None

    @property
    def sample_shape(self) -> tuple:
        return sample_shape(self.spec, self.arrays[0], self.raw)

    @property
    def axis(self) -> int | None:
        return class_axis(self.spec, self.raw, np.ndim(self.arrays[0]))

    def with_inputs(self, *inputs) -> tuple:
        """The positional arrays with the differentiable inputs replaced."""
        return tuple(inputs) + self.arrays[self.n_inputs :]

    def with_input(self, k: int, x) -> tuple:
        inputs = list(self.inputs)
        inputs[k] = x
        return self.with_inputs(*inputs)


def sample(name: str, i: int, rng, shape=None) -> tuple:
    """Valid inputs for option set ``i`` (float64 NumPy, ids as integers), moved off the kinks
    by +0.1 on the first input (finite differences would straddle them)."""
    s = spec(name)
    raw = option_set(name, i)
    arrays = tuple(np.asarray(a) for a in s.checks.sample(rng, s.checks.shape if shape is None else shape, raw))
    assert len(arrays) == len(s.positional), (name, len(arrays), s.positional)
    if s.checks.kinks is not None:
        near = np.asarray(s.checks.kinks(*arrays, **strip(raw)))
        arrays = (np.where(near, arrays[0] + 0.1, arrays[0]),) + arrays[1:]
    return arrays


def draw(name: str, i: int, rng, shape=None) -> Drawn:
    return Drawn(name, i, option_set(name, i), sample(name, i, rng, shape))


def is_float(a) -> bool:
    return np.issubdtype(np.asarray(a).dtype, np.floating)


def as_tuple(g, n: int) -> tuple:
    """A gradient (or Hessian) as one array per differentiable input."""
    if n == 1:
        return (g[0],) if isinstance(g, tuple) and len(g) == 1 else (g,)
    assert isinstance(g, tuple) and len(g) == n, type(g)
    return g


def grads(d: Drawn, out) -> tuple:
    return as_tuple(out, d.n_inputs)


def call(loss, need: str, *arrays, **kw):
    """``need`` is 'value', 'grad', 'value_and_grad' or 'grad_hess'."""
    return loss(*arrays, **kw) if need == "value" else getattr(loss, need)(*arrays, **kw)


def needs(s) -> tuple:
    """The outputs a loss has: grad_hess only where it declares a Hessian."""
    return ("value", "grad", "value_and_grad") + (("grad_hess",) if s.hessian_kind != "none" else ())


def flat_outputs(out) -> list:
    """Every array in a (possibly nested) tuple of outputs."""
    if isinstance(out, tuple):
        return [a for x in out for a in flat_outputs(x)]
    return [out]


# --- backends ----------------------------------------------------------------------------------


def on_backend(backend, value):
    """NumPy arrays to ``backend`` (a ``conftest.Backend``); other values unchanged."""
    return backend.asarray(value) if isinstance(value, np.ndarray) else value


def options_on(backend, o: dict) -> dict:
    return {k: on_backend(backend, v) for k, v in strip(o).items()}


def arrays_on(backend, arrays) -> tuple:
    return tuple(backend.asarray(a) for a in arrays)


def torch_options(o: dict) -> dict:
    import torch

    return {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v) for k, v in strip(o).items()}


def jax_options(o: dict) -> dict:
    import jax.numpy as jnp

    return {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in strip(o).items()}


# --- peers -------------------------------------------------------------------------------------


def peer_value(peer, arrays, reduction: str, o: dict):
    """The peer's value as a float64 NumPy array."""
    return np.asarray(peer.fn(*arrays, reduction=reduction, **strip(o)), dtype=np.float64)


class torch_autograd_peer:
    """Calls a torch peer on tensors and returns the tensor its ``.numpy()`` would convert, so
    that autograd runs through the peer (a peer returns NumPy by contract). Only for peers with
    ``requires == "torch"``."""

    def __init__(self, peer):
        assert peer.requires == "torch", peer
        self.peer = peer

    def __call__(self, *tensors, reduction: str, **o):
        import torch

        original = torch.Tensor.numpy
        torch.Tensor.numpy = lambda self, *a, **k: self  # noqa: E731
        try:
            out = self.peer.fn(*tensors, reduction=reduction, **strip(o))
        finally:
            torch.Tensor.numpy = original
        assert isinstance(out, torch.Tensor), type(out)
        return out


def torch_peers(s) -> list:
    return [p for p in s.checks.peers if p.requires == "torch"]


# --- derivatives -------------------------------------------------------------------------------


def finite_difference_grad(f, x, h=1e-4):
    """4th-order central differences of scalar f at x (float64)."""
    g = np.zeros_like(x, dtype=np.float64)
    for idx in np.ndindex(x.shape):

        def at(delta):
            xx = x.copy()
            xx[idx] += delta
            return f(xx)

        g[idx] = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
    return g


def finite_difference_diagonal(f, x, h=1e-4):
    """4th-order central differences of the diagonal of the Jacobian of array-valued f at x."""
    g = np.zeros_like(x, dtype=np.float64)
    for idx in np.ndindex(x.shape):

        def at(delta):
            xx = x.copy()
            xx[idx] += delta
            return np.asarray(f(xx))[idx]

        g[idx] = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
    return g


def weight_and_mask(rng, shape, keep=0.7, low=0.1, high=2.0):
    w = rng.uniform(low, high, shape)
    m = rng.random(shape) < keep
    m.flat[0] = True
    return w, m


def masked_part(g, mask, axis):
    """The entries of a gradient that belong to masked-out samples (``mask`` has the sample
    shape; ``axis`` is the class axis or None)."""
    if axis is not None:
        g = np.moveaxis(g, axis, -1)
    return g[~mask]


def set_where_masked(a, b, mask, axis):
    """``a`` with the masked-out samples' entries taken from ``b``."""
    if axis is None:
        return np.where(mask, a, b)
    m = np.expand_dims(mask, axis)
    return np.where(m, a, b)


def finite_difference_grad_relative(f, x, h=1e-4):
    """Like :func:`finite_difference_grad` with the step cut to each entry (min(h, |x|/64)), for
    inputs with a domain boundary at 0 (probabilities): the stencil never crosses it.
    Entries equal to 0 sit on the boundary and come back as NaN (not compared)."""
    g = np.full(x.shape, np.nan)
    for idx in np.ndindex(x.shape):
        step = min(h, abs(float(x[idx])) / 64)
        if step == 0:
            continue

        def at(delta):
            xx = x.copy()
            xx[idx] += delta
            return f(xx)

        g[idx] = (-at(2 * step) + 8 * at(step) - 8 * at(-step) + at(-2 * step)) / (12 * step)
    return g
