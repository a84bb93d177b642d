"""XGBoost: ``obj=`` / ``custom_metric=`` of ``xgboost.train`` and ``objective=`` /
``eval_metric=`` of the scikit-learn estimators, from one object each.

XGBoost calls the native objective as ``obj(predt, dtrain)`` and the scikit-learn one as
``objective(y_true, y_pred, sample_weight=...)``; the metric as ``custom_metric(predt, dtrain)
-> (name, value)`` and ``eval_metric(y_true, y_score, sample_weight=...) -> value``. The second
argument tells them apart. Scores are raw margins (XGBoost passes margins whenever the objective
is custom), of shape (n,) or (n, K) (XGBoost >= 2; 1.x hands multiclass scores flat, row-major,
and wants them back so: handled).
"""

from __future__ import annotations

import numpy as np

from ._core import Objective


def _is_dmatrix(x) -> bool:
    mod = type(x).__module__ or ""
    return mod.startswith("xgboost") and hasattr(x, "get_label")


def _unflatten(predt, n):
    """XGBoost 1.x: multiclass scores come flat (n·K,), row-major."""
    predt = np.asarray(predt)
    if predt.ndim == 1 and n and predt.size != n and predt.size % n == 0:
        return predt.reshape(n, predt.size // n), True
    return predt, False


class XGBoostObjective:
    """``obj(predt, dtrain)`` for ``xgboost.train`` and ``objective(y_true, y_pred,
    sample_weight=None)`` for ``XGBRegressor`` / ``XGBClassifier``: the loss's gradient and
    Hessian (times ``scale``, Hessian per the policy), weighted by the data's weights."""

    def __init__(self, core: Objective):
        self._core = core
        self.__name__ = core.name

    def __call__(self, a, b, sample_weight=None):
        if _is_dmatrix(b):
            predt, dtrain = a, b
            label, weight, n = dtrain.get_label(), dtrain.get_weight(), dtrain.num_row()
        else:
            label, predt, weight = a, b, sample_weight
            n = np.shape(label)[0]
        pred, flat = _unflatten(predt, n)
        g, h = self._core.derivatives(pred, label, weight)
        if flat:
            g, h = g.reshape(-1), h.reshape(-1)
        return g, h

    def __repr__(self):
        return f"<losskit XGBoost objective {self._core.describe()}>"


class XGBoostMetric:
    """``custom_metric(predt, dtrain) -> (name, value)`` for ``xgboost.train`` and
    ``eval_metric(y_true, y_score, sample_weight=None) -> value`` for the scikit-learn
    estimators: the loss's weighted mean (lower is better) on raw margins."""

    def __init__(self, core: Objective):
        self._core = core
        self.__name__ = core.name

    def __call__(self, a, b, sample_weight=None):
        if _is_dmatrix(b):
            pred, _ = _unflatten(a, b.num_row())
            return self.__name__, self._core.value(pred, b.get_label(), b.get_weight())
        pred, _ = _unflatten(b, np.shape(a)[0])
        return self._core.value(pred, a, sample_weight)

    def __repr__(self):
        return f"<losskit XGBoost metric {self._core.describe()}>"


class XGBoostAdapter:
    """A loss as an XGBoost objective (``.objective``), eval metric (``.metric``) and starting
    score (``.init_score``). Made by :func:`losskit.boosting.xgboost`."""

    library = "xgboost"

    def __init__(self, loss, *, scale=1.0, hessian=None, hessian_floor=1e-3, **options):
        self._core = Objective(loss, "xgboost", scale=scale, hessian=hessian, hessian_floor=hessian_floor, options=options)
        self.loss = self._core.loss
        self.objective = XGBoostObjective(self._core)
        self.metric = XGBoostMetric(self._core)

    @property
    def hessian(self) -> str:
        """The Hessian policy in use: ``'exact'``, ``'floor'``, ``'constant'``, ``'xgboost'`` or ``'lightgbm'``."""
        return self._core.hessian

    def init_score(self, y, weight=None, *, num_class=None, per_row=False):
        """The loss's optimal constant margin for labels ``y`` (``loss.baseline``): a float, or
        one value per class / output. Pass it as ``base_score`` (``xgboost.train`` params,
        ``XGBRegressor(base_score=)``; a vector for K outputs needs XGBoost >= 3.1) — it is then
        part of the model. With ``per_row=True``: an (n,) or (n, K) array for
        ``DMatrix(base_margin=)`` / ``fit(base_margin=)``, which the model does *not* keep
        (pass it again when predicting). ``XGBClassifier`` with two classes reads
        ``base_score`` as a probability: pass ``scipy.special.expit`` of this value there."""
        s = self._core.init_score(y, weight, num_class=num_class, center=True)
        return self._core.per_row(s, np.shape(y)[0]) if per_row else s

    def __repr__(self):
        return f"losskit.boosting.xgboost({self._core.describe()})"
