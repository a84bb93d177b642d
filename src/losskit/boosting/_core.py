"""What every boosting adapter shares, independent of the library: which losses can be
objectives, the options bound once, the target layout, the Hessian policy, the eval metric and
the starting score.

The libraries differ only in how they hand the prediction, labels and weights over and what
they want back (sign, layout); that lives in ``_xgboost``, ``_lightgbm`` and ``_catboost``.
Everything here works on NumPy arrays in float64 and calls the loss's own ``grad_hess`` (one
vectorised pass over all rows; no Python loop over rows).
"""

from __future__ import annotations

import difflib
import math
import warnings

import numpy as np
from array_api_compat import array_namespace

from .._loss import REGISTRY, Loss, check_option
from .._spec import CLASS_AXIS, ELEMENTWISE, SET

HESSIAN_POLICIES = ("exact", "floor", "constant", "xgboost", "lightgbm")

# Keyword arguments of a plain loss call that the library's data supplies instead.
_DATA_ARGS = {
    "weight": "per-sample weights come from the library's data: DMatrix(weight=) / sample_weight= (XGBoost), Dataset(weight=) / sample_weight= (LightGBM), Pool(weight=) / sample_weight= (CatBoost)",
    "mask": "drop the rows from the training data, or give them weight 0",
    "reduction": "an objective hands over per-sample derivatives; the metric is the weighted mean (reduction='mean')",
    "normalizer": "the metric is the weighted mean over the evaluated rows",
    "validate": "the labels are checked on every call; that costs one pass over them",
}
# input names that mean the loss takes probabilities, not an unbounded margin
_PROBABILITY_INPUTS = ("probs", "prob", "probabilities", "p")


_NUMPY = array_namespace(np.zeros(0))  # the array-API namespace of NumPy arrays, as losskit's calls use


class BoostingWarning(UserWarning):
    """A boosting objective works but is likely to train badly (e.g. negative Hessians)."""


def resolve_loss(loss, library: str) -> Loss:
    """A registered loss from a :class:`~losskit.Loss` or its registry name, checked to be
    usable as a per-sample objective."""
    if isinstance(loss, str):
        if loss not in REGISTRY:
            close = difflib.get_close_matches(loss, REGISTRY, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"losskit.boosting.{library}: no loss named {loss!r}.{hint} Registered: {', '.join(sorted(REGISTRY))}.")
        loss = REGISTRY[loss]
    if not isinstance(loss, Loss):
        raise TypeError(
            f"losskit.boosting.{library}: `loss` must be a losskit loss (e.g. lk.huber) or its name (e.g. 'huber'), got {type(loss).__name__}."
        )
    spec = loss.spec
    if len(spec.inputs) != 1 or spec.target is None:
        raise ValueError(
            f"losskit.boosting.{library}: {spec.name} takes {len(spec.inputs)} differentiable inputs "
            f"({', '.join(spec.positional)}); a boosting objective needs a (prediction, target) loss whose "
            "prediction is the model's raw score."
        )
    if spec.kind == SET:
        raise ValueError(
            f"losskit.boosting.{library}: {spec.name} is a set-level loss (a ratio of sums over a set): its gradient "
            "couples every row, so it has no per-sample gradient and Hessian to hand to a tree booster."
        )
    if spec.inputs[0] in _PROBABILITY_INPUTS:
        alt = spec.name.replace("_from_probs", "") if spec.name.endswith("_from_probs") else None
        hint = f" Use {alt!r}, the same loss on logits." if alt in REGISTRY else " Use the loss's logit form."
        raise ValueError(
            f"losskit.boosting.{library}: {spec.name} takes probabilities (`{spec.inputs[0]}` in [0, 1]), but a "
            f"booster's raw score is an unbounded margin.{hint}"
        )
    return loss


class Objective:
    """The library-independent part of an adapter: the loss, its bound options, ``scale`` and
    the Hessian policy. ``derivatives(pred, label, weight)`` returns the gradient and Hessian
    the library takes (before its sign / layout conventions)."""

    def __init__(self, loss, library: str, *, scale=1.0, hessian=None, hessian_floor=1e-3, options=None):
        self.library = library
        self.loss = loss = resolve_loss(loss, library)
        self.name = loss.spec.name
        self.options = self._check_options(dict(options or {}))
        self.scale = self._positive(scale, "scale")
        self.hessian_floor = self._positive(hessian_floor, "hessian_floor")
        kind = loss.hessian_kind_for(**self.options)  # smooth_l1(beta=0): zero, as mae
        if hessian is None:
            hessian = "exact" if kind == "exact" else "constant"
        if not isinstance(hessian, str) or hessian not in HESSIAN_POLICIES:
            raise ValueError(f"{self._who}: `hessian` must be one of {HESSIAN_POLICIES}, got {hessian!r}.")
        if hessian != "constant" and kind == "none":
            raise ValueError(f"{self._who}: {self.name} has no Hessian (hessian_kind='none'); use hessian='constant'.")
        if hessian in ("xgboost", "lightgbm") and loss.spec.kind != CLASS_AXIS:
            raise ValueError(
                f"{self._who}: hessian={hessian!r} is the factor of a multiclass softmax objective "
                f"(XGBoost multi:softprob: 2·p(1-p); LightGBM multiclass: K/(K-1)·p(1-p)); {self.name} is elementwise."
            )
        self.hessian = hessian
        self._warned = False
        spec = loss.spec
        self._bound = {**spec.options, **self.options}
        if spec.check is not None:
            spec.check(dict(self._bound), self.name)
        # CatBoost calls a single-score objective on blocks of <= 1000 rows, hundreds of times a
        # round: there the public call's fixed cost (checks, dispatch) would dominate. Each
        # block's labels go through the public call (checked) once; later calls on the same
        # label block run the declared kernels directly (the same arithmetic; tested equal).
        self._direct = spec.kind == ELEMENTWISE and spec.set_kernel is None and spec.grad is not None
        self._checked_blocks = set()

    def __deepcopy__(self, memo):
        # The libraries deep-copy their parameters (LightGBM's scikit-learn API, CatBoost):
        # the configuration is immutable, so copies share it (and its record of checked blocks).
        return self

    # -- construction ---------------------------------------------------------------------
    @property
    def _who(self) -> str:
        return f"losskit.boosting.{self.library}({self.name})"

    def _positive(self, value, arg):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise TypeError(f"{self._who}: `{arg}` must be a positive number, got {value!r}.")
        value = float(value)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{self._who}: `{arg}` must be a positive finite number, got {value!r}.")
        return value

    def _check_options(self, options: dict) -> dict:
        spec = self.loss.spec
        for k in options:
            if k in _DATA_ARGS:
                raise TypeError(f"{self._who}: `{k}` is not an option here: {_DATA_ARGS[k]}.")
            if k not in spec.options:
                known = ", ".join(spec.options) or "none"
                raise TypeError(f"{self._who}: unknown option `{k}`; {self.name} takes: {known}.")
        if spec.kind == CLASS_AXIS and options.get("axis", -1) not in (-1, 1):
            raise ValueError(f"{self._who}: boosters hand over scores of shape (rows, classes); the class axis is the last one, so `axis` must be -1.")
        probe = np.zeros(1)
        checked = {}
        for k, v in options.items():
            if v is None:
                checked[k] = v
                continue
            if hasattr(v, "__array__") and not isinstance(v, np.ndarray) and type(v).__module__.split(".")[0] in ("torch", "jax", "jaxlib", "cupy"):
                raise TypeError(f"{self._who}: `{k}` must be a number or a NumPy array (boosters work on NumPy), got {type(v).__module__}.{type(v).__name__}.")
            if isinstance(v, (list, tuple)) and spec.option_rules[k].kind == "array":
                v = np.asarray(v, dtype=np.float64)
            checked[k] = check_option(spec.option_rules[k], v, k, self.name, probe, np, True)
        return checked

    # -- the target in the loss's layout ----------------------------------------------------
    def target(self, pred: np.ndarray, label) -> np.ndarray:
        """The library's labels in the loss's layout for ``pred`` of shape (n,) or (n, K):
        one label per output → ``pred``'s shape; one label per row of a class-axis loss →
        integer class ids when they are whole numbers; anything else is left to the loss,
        whose own checks name the shapes."""
        label = np.asarray(label)
        n = pred.shape[0]
        if label.size == pred.size:
            return label.reshape(pred.shape)
        if pred.ndim == 2 and label.size == n:
            label = label.reshape(n)
            if self.loss.spec.kind == CLASS_AXIS and label.dtype.kind == "f":
                ids = label.astype(np.int64)
                if np.array_equal(ids, label):
                    return ids
            return label
        return label

    def _layout_error(self, exc, pred, label):
        k = pred.shape[1] if pred.ndim == 2 else 1
        raise ValueError(
            f"{self._who}: the booster hands over {k} score{'s' if k > 1 else ''} per row (scores {pred.shape}) and "
            f"labels of shape {np.shape(label)}, which {self.name} does not accept: {exc} "
            + _LAYOUT_HINT[self.loss.spec.kind]
        ) from exc

    # -- derivatives ----------------------------------------------------------------------
    def _inputs(self, pred, label, weight):
        """``pred`` in float64, the target in the loss's layout, and the row weights spread
        over the per-sample shape (each output of a multi-output elementwise loss is a sample)."""
        pred = np.asarray(pred, dtype=np.float64)
        if pred.ndim not in (1, 2):
            raise ValueError(f"{self._who}: scores must have shape (n,) or (n, K), got {pred.shape}.")
        weight = _weight(weight, pred.shape[0])
        if pred.ndim == 1 and self.loss.spec.kind == CLASS_AXIS:
            self._layout_error(ValueError(f"{self.name} is a softmax over K >= 2 scores per row."), pred, label)
        target = self.target(pred, label)
        if weight is not None and pred.ndim == 2 and self.loss.spec.kind != CLASS_AXIS and target.shape == pred.shape:
            weight = np.broadcast_to(weight[:, None], pred.shape)
        return pred, target, weight

    def derivatives(self, pred, label, weight=None):
        """``(grad, hess)`` of each row's weighted loss, float64, the shape of ``pred``."""
        pred, target, weight = self._inputs(pred, label, weight)
        loss, o = self.loss, self.options
        try:
            if self.hessian == "constant":
                g = loss.grad(pred, target, weight=weight, reduction="none", **o)
                h = None
            else:
                g, h = loss.grad_hess(pred, target, weight=weight, reduction="none", **o)
        except ValueError as exc:
            if "shape" in str(exc):
                self._layout_error(exc, pred, label)
            raise
        return self._policy(g, h, pred, weight)

    def block_derivatives(self, pred, label, weight=None):
        """:meth:`derivatives` for a library that calls the objective on many small blocks of
        one score per row (CatBoost): the first call on a label block is the public, checked
        call; later calls on the same block run the declared kernels directly."""
        key = None
        if self._direct and pred.ndim == 1 and isinstance(label, np.ndarray):
            key = (label.__array_interface__["data"][0], label.shape, label.dtype.str)
        if key is None or key not in self._checked_blocks:
            out = self.derivatives(pred, label, weight)
            if key is not None and len(self._checked_blocks) < 1_000_000:
                self._checked_blocks.add(key)
            return out
        spec = self.loss.spec
        xp = _NUMPY
        o = dict(self._bound)
        p = np.asarray(pred, dtype=np.float64)
        t = np.asarray(label, dtype=np.float64)
        if spec.prepare is not None:
            prep = spec.prepare(p, t, o, xp, False, self.name, None)
            p, t = prep.pred, prep.target
        w = _weight(weight, p.shape[0])
        if self.hessian == "constant":
            g, h = spec.grad(p, t, o, xp), None
        elif spec.grad_and_hess is not None:
            g, h = spec.grad_and_hess(p, t, o, xp)
        else:
            g, h = spec.grad(p, t, o, xp), spec.hess(p, t, o, xp)
        if w is not None:
            g = g * w
            h = None if h is None else h * w
        return self._policy(g, h, p, w)

    def _policy(self, g, h, pred, weight):
        """The Hessian policy and ``scale`` applied to the loss's weighted derivatives."""
        if h is None:  # "constant": the sample weight
            h = np.ones(pred.shape[0]) if weight is None else np.asarray(weight, dtype=np.float64)
            h = np.array(np.broadcast_to(h[:, None] if h.ndim < pred.ndim else h, pred.shape))
        if self.hessian == "floor":
            w = 1.0 if weight is None else (weight[:, None] if weight.ndim < pred.ndim else weight)
            h = np.maximum(h, self.hessian_floor * w)
        elif self.hessian == "xgboost":
            h = np.maximum(2.0 * h, 1e-16)
        elif self.hessian == "lightgbm":
            k = pred.shape[-1]
            h = h * (k / (k - 1.0))
        elif self.hessian == "exact" and not self._warned and bool(np.any(h < 0)):
            self._warned = True
            warnings.warn(
                f"{self._who}: the Hessian is negative at {int(np.sum(h < 0))} of {h.size} scores; Newton steps there go "
                "the wrong way. Use hessian='floor' (max(h, hessian_floor·weight)) or hessian='constant'.",
                BoostingWarning,
                stacklevel=4,
            )
        if self.scale != 1.0:
            g = g * self.scale
            h = h * self.scale
        return g, h

    # -- the eval metric --------------------------------------------------------------------
    def value(self, pred, label, weight=None) -> float:
        """The weighted mean of the loss over the rows (``reduction='mean'``), without ``scale``."""
        pred, target, weight = self._inputs(pred, label, weight)
        try:
            return float(self.loss(pred, target, weight=weight, **self.options))
        except ValueError as exc:
            if "shape" in str(exc):
                self._layout_error(exc, pred, label)
            raise

    def sum_and_denominator(self, pred, label, weight=None):
        """(Σ wᵢℓᵢ, D) with value = Σ wᵢℓᵢ / D, so that a library that evaluates a metric in
        blocks (CatBoost) combines them into the same weighted mean."""
        pred, target, weight = self._inputs(pred, label, weight)
        loss, o = self.loss, self.options
        total = float(loss(pred, target, weight=weight, reduction="sum", **o))
        try:
            mean = float(loss(pred, target, weight=weight, **o))
        except ValueError:  # the weights of this block sum to zero
            return total, 0.0
        if mean != 0.0 and math.isfinite(mean) and math.isfinite(total):
            return total, total / mean
        return total, float(np.prod(target.shape if self.loss.spec.kind != CLASS_AXIS else pred.shape[:1]) if weight is None else np.sum(weight))

    # -- the starting score -----------------------------------------------------------------
    def init_score(self, y, weight=None, *, num_class=None, center=False):
        """The loss's optimal constant prediction for labels ``y``: a float for one output per
        row, an array with one value per class / output otherwise. ``center``: shift the
        scores of a shift-invariant (softmax) loss to mean 0, as XGBoost's multi:softprob."""
        spec = self.loss.spec
        y = np.asarray(y)
        if y.ndim == 0 or y.shape[0] == 0:
            raise ValueError(f"{self._who}.init_score: `y` must hold at least one row, got shape {y.shape}.")
        weight = _weight(weight, y.shape[0])
        o = {k: v for k, v in self.options.items() if k != "axis"}
        if spec.kind == CLASS_AXIS and y.ndim == 1 and _whole(y):
            ids = y.astype(np.int64)
            if ids.min() < 0:
                raise ValueError(f"{self._who}.init_score: class ids must be >= 0, got {int(ids.min())}.")
            k = int(ids.max()) + 1 if num_class is None else int(num_class)
            if ids.max() >= k:
                raise ValueError(f"{self._who}.init_score: class id {int(ids.max())} is out of range for num_class={k}.")
            y = np.eye(k)[ids]
            missing = np.flatnonzero(np.bincount(ids if weight is None else ids[weight > 0], minlength=k) == 0)
            if missing.size:
                raise ValueError(
                    f"{self._who}.init_score: class {int(missing[0])} never occurs in `y` (with positive weight), so its optimal "
                    "constant score is -inf. Start from 0 for that class, or train on data where every class occurs."
                )
            o.pop("ignore_index", None)
        try:
            with np.errstate(divide="ignore", invalid="ignore"):
                if spec.kind != CLASS_AXIS and y.ndim == 2 and y.shape[1] > 1:  # one baseline per output
                    s = np.array([float(self.loss.baseline(np.ascontiguousarray(y[:, j]), weight=weight, **o)) for j in range(y.shape[1])])
                else:
                    s = np.asarray(self.loss.baseline(y if y.dtype.kind != "f" else y.astype(np.float64), weight=weight, **o), dtype=np.float64)
        except NotImplementedError:
            raise NotImplementedError(
                f"{self._who}.init_score: {self.name} declares no closed-form optimal constant (baseline); start from 0 "
                "(XGBoost: base_score=0; LightGBM/CatBoost: no init_score/baseline)."
            ) from None
        if center and s.ndim and spec.kind == CLASS_AXIS and spec.checks is not None and spec.checks.shift_invariant:
            s = s - s.mean()  # softmax losses: the centred log-frequencies, as XGBoost's multi:softprob
        if not np.all(np.isfinite(s)):
            raise ValueError(
                f"{self._who}.init_score: the optimal constant of {self.name} for these labels is not finite ({s}); "
                "e.g. every label is 0 or every label is 1 for a logit loss."
            )
        return float(s) if s.ndim == 0 else s

    @staticmethod
    def per_row(score, n: int):
        """A starting score repeated for ``n`` rows: shape (n,) or (n, K)."""
        s = np.asarray(score, dtype=np.float64)
        return np.full(n, float(s)) if s.ndim == 0 else np.tile(s, (n, 1))

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        extra = [f"hessian={self.hessian!r}"]
        if self.scale != 1.0:
            extra.append(f"scale={self.scale!r}")
        if self.hessian == "floor":
            extra.append(f"hessian_floor={self.hessian_floor!r}")
        return ", ".join([repr(self.name)] + ([opts] if opts else []) + extra)


_LAYOUT_HINT = {
    "elementwise": (
        "One score per row needs one label per row; K scores per row need K labels per row (XGBoost: a label "
        "matrix of shape (n, K); CatBoost: multi_target=True and K label columns; LightGBM has no multi-output regression)."
    ),
    "class_axis": (
        "A class-axis loss needs K scores per row: XGBoost num_class=K (or a label matrix (n, K) of probabilities), "
        "LightGBM num_class=K, CatBoost CatBoostClassifier (class ids) or multi_target=True (probabilities)."
    ),
}


def _weight(weight, n):
    if weight is None:
        return None
    w = np.asarray(weight, dtype=np.float64)
    if w.size == 0:  # XGBoost's get_weight() without weights
        return None
    if w.shape != (n,):
        raise ValueError(f"losskit.boosting: one weight per row expected ({n},), got shape {w.shape}.")
    return w


def _whole(y) -> bool:
    if y.dtype.kind in "iub":
        return True
    if y.dtype.kind != "f":
        return False
    return bool(np.all(np.isfinite(y)) and np.array_equal(y, np.round(y)))
