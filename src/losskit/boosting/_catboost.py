"""CatBoost: ``loss_function=`` and ``eval_metric=`` objects.

CatBoost *maximises*: a custom objective returns the first and second derivatives of the
negated loss, ``(-grad, -hess)``. It calls

* ``calc_ders_range(approxes, targets, weights)`` for one score per row, with every row of a
  block at once: the adapter returns an (n, 2) float64 array, which CatBoost reads without a
  Python loop (one vectorised pass);
* ``calc_ders_multi(approx, target, weight)`` for K scores per row (multiclass: ``target`` is
  the class id; multi-target, a subclass of ``catboost.MultiTargetCustomObjective``: the label
  vector). CatBoost has no block form of this call: it calls it once per row, so a multiclass
  custom objective is Python-bound whatever the loss (the built-in ``MultiClass`` is not).

The metric's ``evaluate(approxes, target, weight)`` returns ``(Σ wᵢℓᵢ, D)`` and
``get_final_error`` divides, so blocks combine into the loss's weighted mean.
"""

from __future__ import annotations

import numpy as np

from .._spec import CLASS_AXIS
from ._core import Objective


class _RangeObjective:
    """One score per row: ``calc_ders_range``."""

    no_jit = True  # CatBoost would try to numba-compile the methods: they call losskit

    def __init__(self, core: Objective):
        self._core = core

    def calc_ders_multi(self, approx, target, weight):
        raise ValueError(
            f"{self._core._who}: CatBoost asks for {len(approx)} scores per row; {self._core.name} as built here has one. "
            "For K label columns per row (multi-output regression) build the adapter with multi_target=True."
        )

    def calc_ders_range(self, approxes, targets, weights):
        g, h = self._core.block_derivatives(np.asarray(approxes), np.asarray(targets), None if weights is None else np.asarray(weights))
        out = np.empty((g.shape[0], 2))
        np.negative(g, out=out[:, 0])
        np.negative(h, out=out[:, 1])
        return out

    def __repr__(self):
        return f"<losskit CatBoost objective {self._core.describe()}>"


class _MultiClassObjective:
    """K scores per row and a class id: ``calc_ders_multi`` (called once per row by CatBoost)."""

    no_jit = True

    def __init__(self, core: Objective):
        self._core = core

    def calc_ders_range(self, approxes, targets, weights):
        raise ValueError(
            f"{self._core._who}: CatBoost asks for one score per row, but {self._core.name} is a softmax over K >= 2 "
            "scores: pass classes_count=K to CatBoostClassifier."
        )

    def calc_ders_multi(self, approx, target, weight):
        pred = np.asarray(approx, dtype=np.float64)[None, :]
        w = None if weight is None else np.array([weight], dtype=np.float64)
        g, h = self._core.derivatives(pred, np.array([target], dtype=np.float64), w)
        return -g[0], np.diag(-h[0])

    def __repr__(self):
        return f"<losskit CatBoost multiclass objective {self._core.describe()}>"


class _Metric:
    """``eval_metric``: the loss's weighted mean, lower is better."""

    no_jit = True

    def __init__(self, core: Objective):
        self._core = core

    def is_max_optimal(self):
        return False

    def get_final_error(self, error, weight):
        return error / weight if weight else 0.0

    def _pred(self, approxes):
        cols = [np.asarray(a, dtype=np.float64) for a in approxes]
        return cols[0] if len(cols) == 1 else np.stack(cols, axis=1)

    def evaluate(self, approxes, target, weight):
        pred = self._pred(approxes)
        if isinstance(target, (list, tuple)):  # multi-target: one array per output
            target = np.stack([np.asarray(t, dtype=np.float64) for t in target], axis=1)
        return self._core.sum_and_denominator(pred, np.asarray(target), None if weight is None else np.asarray(weight))

    def __repr__(self):
        return f"<losskit CatBoost metric {self._core.describe()}>"


def _multi_target_classes():
    from catboost import MultiTargetCustomMetric, MultiTargetCustomObjective

    class _MultiTargetObjective(MultiTargetCustomObjective):
        """K scores and K labels per row (CatBoostRegressor with K label columns)."""

        no_jit = True

        def __init__(self, core: Objective):
            self._core = core

        def calc_ders_multi(self, approx, target, weight):
            pred = np.asarray(approx, dtype=np.float64)[None, :]
            w = None if weight is None else np.array([weight], dtype=np.float64)
            g, h = self._core.derivatives(pred, np.asarray(target, dtype=np.float64)[None, :], w)
            return -g[0], np.diag(-h[0])

        def __repr__(self):
            return f"<losskit CatBoost multi-target objective {self._core.describe()}>"

    class _MultiTargetMetric(_Metric, MultiTargetCustomMetric):
        pass

    return _MultiTargetObjective, _MultiTargetMetric


class CatBoostAdapter:
    """A loss as a CatBoost ``loss_function`` (``.objective``), ``eval_metric`` (``.metric``)
    and starting score (``.init_score``). Made by :func:`losskit.boosting.catboost`."""

    library = "catboost"

    def __init__(self, loss, *, scale=1.0, hessian=None, hessian_floor=1e-3, multi_target=False, **options):
        core = Objective(loss, "catboost", scale=scale, hessian=hessian, hessian_floor=hessian_floor, options=options)
        if not isinstance(multi_target, bool):
            raise TypeError(f"losskit.boosting.catboost({core.name}): `multi_target` must be True or False, got {multi_target!r}.")
        self._core = core
        self.loss = core.loss
        self.multi_target = multi_target
        if multi_target:
            objective_cls, metric_cls = _multi_target_classes()
            self.objective = objective_cls(core)
            self.metric = metric_cls(core)
        else:
            self.objective = _MultiClassObjective(core) if core.loss.spec.kind == CLASS_AXIS else _RangeObjective(core)
            self.metric = _Metric(core)

    @property
    def hessian(self) -> str:
        """The Hessian policy in use."""
        return self._core.hessian

    def init_score(self, y, weight=None, *, num_class=None, per_row=False):
        """The loss's optimal constant score for labels ``y`` (``loss.baseline``): a float, or one
        value per class / output. ``per_row=True`` gives the (n,) or (n, K) array for
        ``Pool(baseline=)`` / ``fit(baseline=)``, which the model does not keep; to make the
        model start from it, call ``model.set_scale_and_bias(1.0, score)`` after fitting
        (``score`` a float, or a list with one value per output)."""
        s = self._core.init_score(y, weight, num_class=num_class)
        return self._core.per_row(s, np.shape(y)[0]) if per_row else s

    def __repr__(self):
        extra = ", multi_target=True" if self.multi_target else ""
        return f"losskit.boosting.catboost({self._core.describe()}{extra})"
