"""LightGBM: ``params["objective"]`` / ``feval`` of ``lightgbm.train`` and ``objective=`` /
``eval_metric=`` of the scikit-learn estimators, from one object each.

LightGBM calls a native objective as ``fobj(preds, train_set)`` and a scikit-learn one as
``objective(y_true, y_pred, weight)`` (it counts the parameters: three here); metrics likewise,
returning ``(name, value, is_higher_better)``. Scores are raw (before any sigmoid / softmax)
and already include the Dataset's ``init_score``; multiclass scores are (n, K) in LightGBM >= 4
and flat class-major (K·n,) before (handled both ways). LightGBM does not apply weights to a
custom objective's derivatives: the adapter does, exactly as the loss's ``weight=``.
"""

from __future__ import annotations

import numpy as np

from ._core import Objective


def _is_dataset(x) -> bool:
    mod = type(x).__module__ or ""
    return mod.startswith("lightgbm") and hasattr(x, "get_label")


def _unflatten(preds, n):
    """LightGBM < 4: multiclass scores come flat (K·n,), class-major."""
    preds = np.asarray(preds)
    if preds.ndim == 1 and n and preds.size != n and preds.size % n == 0:
        # row-major (n, K), as the kernels read it: the same numbers as the (n, K) layout
        # (a strided view would take the reference path, rounded differently)
        return np.ascontiguousarray(preds.reshape(preds.size // n, n).T), True
    return preds, False


def _scores_labels_weight(a, b, weight):
    """(scores as (n,) or (n, K), whether they came flat, labels, weights) from either calling
    convention: ``(preds, Dataset)`` of ``lightgbm.train`` or ``(y_true, y_pred, weight)`` of
    the scikit-learn estimators."""
    if _is_dataset(b):
        preds, label, weight = a, b.get_label(), b.get_weight()
    else:
        label, preds = a, b
    pred, flat = _unflatten(preds, np.shape(label)[0])
    return pred, flat, label, weight


class LightGBMObjective:
    """``fobj(preds, train_set)`` for ``lightgbm.train`` (``params["objective"]``) and
    ``objective(y_true, y_pred, weight)`` for ``LGBMRegressor`` / ``LGBMClassifier``."""

    def __init__(self, core: Objective):
        self._core = core
        self.__name__ = core.name

    def __call__(self, a, b, weight=None):
        pred, flat, label, weight = _scores_labels_weight(a, b, weight)
        g, h = self._core.derivatives(pred, label, weight)
        if flat:
            g, h = g.T.reshape(-1), h.T.reshape(-1)
        return g, h

    def __repr__(self):
        return f"<losskit LightGBM objective {self._core.describe()}>"


class LightGBMMetric:
    """``feval(preds, eval_set) -> (name, value, False)`` for ``lightgbm.train`` and
    ``eval_metric(y_true, y_pred, weight)`` for the scikit-learn estimators: the loss's
    weighted mean on raw scores (use it with the adapter's objective: with a built-in objective
    LightGBM hands a metric transformed scores, e.g. probabilities)."""

    def __init__(self, core: Objective):
        self._core = core
        self.__name__ = core.name

    def __call__(self, a, b, weight=None):
        pred, _, label, weight = _scores_labels_weight(a, b, weight)
        return self.__name__, self._core.value(pred, label, weight), False

    def __repr__(self):
        return f"<losskit LightGBM metric {self._core.describe()}>"


class LightGBMAdapter:
    """A loss as a LightGBM objective (``.objective``), metric (``.metric``) and starting score
    (``.init_score``). Made by :func:`losskit.boosting.lightgbm`."""

    library = "lightgbm"

    def __init__(self, loss, *, scale=1.0, hessian=None, hessian_floor=1e-3, **options):
        self._core = Objective(loss, "lightgbm", scale=scale, hessian=hessian, hessian_floor=hessian_floor, options=options)
        self.loss = self._core.loss
        self.objective = LightGBMObjective(self._core)
        self.metric = LightGBMMetric(self._core)

    @property
    def hessian(self) -> str:
        """The Hessian policy in use."""
        return self._core.hessian

    def init_score(self, y, weight=None, *, num_class=None, per_row=False):
        """The loss's optimal constant score for labels ``y`` (``loss.baseline``): a float, or one
        value per class. LightGBM takes a starting score per row — ``per_row=True`` gives the
        (n,) or (n, K) array for ``Dataset(init_score=)`` / ``fit(init_score=)``. A custom
        objective's model does not keep it (LightGBM's ``boost_from_average`` works for built-in
        objectives only): add the scalar / per-class value to ``predict(raw_score=True)``."""
        s = self._core.init_score(y, weight, num_class=num_class)
        return self._core.per_row(s, np.shape(y)[0]) if per_row else s

    def __repr__(self):
        return f"losskit.boosting.lightgbm({self._core.describe()})"
