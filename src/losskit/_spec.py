"""What a loss declaration holds: its math, its metadata and what the generic tests need.

A loss is declared once (``_loss.declare``) with a :class:`LossSpec`. The spec is the single
source of everything about the loss:

* the kernels (per-sample value, gradient, Hessian diagonal, written with ``xp.*`` calls);
* the formula, gradient and Hessian in LaTeX, from which the docstring's math, the docs page
  and the CLI are generated (:func:`docstring`);
* its options, each with the one rule that checks it (:class:`Option`);
* the facts the registry-driven test suites read (:class:`Checks`): how to draw valid inputs,
  option sets, edge points, kinks, the known minimum and minimiser, flags, and the **peers**
  (:class:`Peer`) whose values it must equal.

Nothing here imports a framework; peers import theirs when called.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

ELEMENTWISE = "elementwise"
CLASS_AXIS = "class_axis"
SET = "set"
SEQUENCE = "sequence"  # one value per sequence over (time, class): CTC; integer inputs (lengths) as array options
KINDS = (ELEMENTWISE, CLASS_AXIS, SET, SEQUENCE)
HESSIAN_KINDS = ("exact", "piecewise", "zero", "none")


@dataclass(frozen=True)
class Option:
    """A loss option's default and the one rule that checks it, whatever form it comes in.

    ``kind``: ``"number"`` (a real number or a 0-d array, read once to a float), ``"array"``
    (a real number or a real array, passed to the kernels and framework hooks as an input),
    ``"bool"``, ``"int"``, ``"choice"`` (one of ``choices``) or ``"any"`` (checked by the
    loss's own ``check``). ``low``/``high`` bound numbers and every entry of arrays; ``None``
    is allowed when it is the default."""

    default: Any = None
    kind: str = "any"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple = ()
    doc: str = ""


@dataclass(frozen=True)
class Peer:
    """An independent reference a loss's value must equal (float64, rtol ``rtol``).

    ``fn(*arrays, reduction=..., **options)`` takes the loss's positional inputs as float64
    NumPy arrays (class ids as integers) and the shared options (array options as NumPy
    arrays), imports its own library, and returns a NumPy value for ``reduction`` in
    ``reductions``. ``options`` lists the losskit options the peer shares: option sets using
    any other option are not compared. ``less_accurate(*arrays, **options)`` marks (per
    sample, as a bool array) inputs where the peer is known to lose digits that losskit keeps;
    the edge comparison skips them."""

    name: str
    fn: Callable
    requires: str = ""
    options: tuple = ()
    reductions: tuple = ("none", "sum", "mean")
    less_accurate: Callable | None = None
    rtol: float = 1e-6


def peer_reduction(per_sample, reduction: str):
    """A peer's per-sample NumPy values reduced as ``reduction`` says (for peers written as a
    formula per sample, e.g. at high precision with mpmath)."""
    return {"none": per_sample, "sum": per_sample.sum(), "mean": per_sample.mean()}[reduction]


@dataclass(frozen=True)
class Checks:
    """What the generic test suites need to know about a loss.

    * ``sample(rng, shape, o)``: valid inputs for option set ``o`` as a tuple of float64 NumPy
      arrays in call order (class ids as integers); ``shape`` is the shape of the first input.
      Option keys starting with ``_`` are for ``sample`` only (e.g. ``_probs``).
    * ``option_sets``: options to test, each a dict (NumPy arrays for array options).
    * ``edges(o)``: extreme but valid inputs (same tuple form) whose value and gradient must be
      finite in every float dtype: logits ±1e4 or ±inf, p ∈ {0, 1}, huge residuals...
    * ``kinks(*arrays, **o)``: bool mask (shape of the first input) of points too close to a
      non-smooth point for finite differences; ``sample``'s points there are moved off.
    * ``minimum(target, o)``: ``(pred, value)``, a minimiser for ``target`` and the per-sample
      minimum value there (None where the option set has no closed form).
    * ``shift_invariant``: adding a constant to the first input along the reduced axis changes
      nothing (softmax losses).
    * ``compiles`` / ``vmaps``: run under ``torch.compile(fullgraph=True)`` / ``torch.func.vmap``.
    * ``peers``: the independent references, see :class:`Peer`.
    """

    sample: Callable
    option_sets: tuple = ({},)
    shape: tuple = (6, 4)
    edges: Callable | None = None
    kinks: Callable | None = None
    minimum: Callable | None = None
    shift_invariant: bool = False
    compiles: bool = True
    vmaps: bool = True
    peers: tuple = ()


@dataclass(frozen=True, eq=False)
class LossSpec:
    """Declaration of one loss.

    Kernels take the positional inputs in kernel layout followed by ``(o, xp)``: for a
    ``(pred, target)`` loss ``f(pred, target, o, xp)``, for a loss over several differentiable
    inputs ``f(a, b, c, o, xp)``. ``o`` is the dict of bound options. ``value`` returns
    per-sample values; ``grad`` (and ``hess``) the derivative of the per-sample loss with
    respect to each differentiable input: an array for one input, a tuple for several.
    Set-level losses (``kind=SET``) have a ``set_kernel`` instead, see ``_loss``."""

    name: str
    family: str
    kind: str
    title: str
    formula: str
    gradient: str
    hessian: str
    domain: str
    reference: str
    use_when: str
    value: Callable | None = None
    grad: Callable | None = None
    hess: Callable | None = None
    value_and_grad: Callable | None = None
    grad_and_hess: Callable | None = None
    set_kernel: Callable | None = None
    # several inputs whose samples are coupled (InfoNCE: every key enters every query's value):
    # vjp_kernel(*inputs, [target], o, xp) -> (per-sample values, vjp(u) -> one gradient per
    # input of Σ u_i ℓ_i); used instead of value/grad, so weights and masks stay per sample
    vjp_kernel: Callable | None = None
    hessian_kind: str = "exact"
    inputs: tuple = ("pred",)  # differentiable positional inputs, in call order
    target: str | None = "target"  # non-differentiable positional input after them, or None
    options: Mapping = field(default_factory=dict)  # name -> default (rules in option_rules)
    option_rules: Mapping = field(default_factory=dict)  # name -> Option
    array_options: tuple = ()  # options that may be arrays (passed to hooks as inputs)
    check: Callable | None = None  # check(o, loss) -> None, raises on bad option combinations
    prepare: Callable | None = None  # prepare(pred, target, o, xp, validate, loss, mask) -> Prepared; kind=SEQUENCE: prepare(pred, target, o, xp, validate, loss) -> o with its integer array options (lengths) converted and checked
    check_values: Callable | None = None  # check_values(pred, target, o, xp, loss, valid), when validate
    baseline: Callable | None = None  # baseline(target, weight, o, xp) -> optimal constant prediction
    reduces_axis: Callable | None = None  # reduces_axis(o) -> bool: an elementwise loss whose options add a trailing axis reduced per sample (multi-quantile)
    hessian_kind_for: Callable | None = None  # hessian_kind_for(o) -> the Hessian kind for these options (smooth_l1: "zero" at beta=0)
    value_override: Callable | None = None  # value_override(arrays, weight, mask, reduction, normalizer, validate, options) -> value or NotImplemented, tried first by __call__ (cross_entropy: one opaque torch operator under torch.compile)
    details: str = ""  # prose for the docstring: conventions, peers, caveats
    example: str = ""  # doctest lines for the docstring
    checks: Checks | None = None

    @property
    def pred_name(self) -> str:
        return self.inputs[0]

    @property
    def positional(self) -> tuple:
        return self.inputs + ((self.target,) if self.target else ())


def has_class_axis(spec: LossSpec, o: Mapping) -> bool:
    """Whether a call with bound options ``o`` reduces a trailing axis per sample: class-axis
    losses always, an elementwise loss where its ``reduces_axis(o)`` says so."""
    return spec.kind == CLASS_AXIS or (spec.reduces_axis is not None and bool(spec.reduces_axis(o)))


def kind_words(spec: LossSpec) -> str:
    """How the loss reduces, in words (for the CLI and the docs pages)."""
    if spec.kind == SET:
        return "set-level: a ratio of sums over a set of elements"
    if spec.kind == SEQUENCE:
        return "per sequence: one value for each sequence, over its time and class axes"
    if len(spec.inputs) > 1:
        return f"{len(spec.inputs)} differentiable inputs, " + ("one value per sample along the last axis" if spec.kind == CLASS_AXIS else "elementwise")
    return "per sample, summed over the class axis" if spec.kind == CLASS_AXIS else "elementwise"


def docstring(spec: LossSpec) -> str:
    """The loss's docstring, generated from its declaration: title, the formula / gradient /
    Hessian math (the same LaTeX the docs page and the CLI show), when to use it, the prose,
    the reference and the example."""
    math = [f".. math:: {spec.formula}", "", f".. math:: {spec.gradient}"]
    if spec.hessian_kind != "none":
        math += ["", f".. math:: {spec.hessian}"]
    parts = [
        spec.title,
        "\n".join(math),
        f"Use it for: {spec.use_when}",
        textwrap.dedent(spec.details).strip(),
        f"Hessian: {_HESSIAN_WORDS[spec.hessian_kind]}",
        f"Reference: {spec.reference}.",
        "Example:\n" + textwrap.indent(textwrap.dedent(spec.example).strip(), "    "),
    ]
    return "\n\n".join(p for p in parts if p.strip()) + "\n"


_HESSIAN_WORDS = {
    "exact": "exact closed form (``grad_hess``).",
    "piecewise": "closed form, piecewise constant or with jumps at the kinks (``grad_hess``).",
    "zero": "zero almost everywhere; ``grad_hess`` returns it, but Newton-type solvers need a surrogate.",
    "none": "not available; ``grad_hess`` raises.",
}
