"""Every losskit loss as an XGBoost, LightGBM and CatBoost objective and eval metric.

.. code-block:: python

    import losskit as lk, xgboost as xgb

    obj = lk.boosting.xgboost(lk.huber, delta=2.0)
    model = xgb.XGBRegressor(objective=obj.objective, eval_metric=obj.metric, base_score=obj.init_score(y))

Each adapter hands the library the loss's own closed-form gradient and Hessian diagonal (one
vectorised pass over the rows), with the library's sign, argument order, weights and
multiclass layout handled inside; ``.metric`` is the loss's weighted mean, so early stopping
watches the objective being optimised; ``.init_score(y)`` is the loss's optimal constant
(``loss.baseline``). The libraries are optional and imported only by the code that calls
them; building an adapter imports none of them. See ``docs/boosting.md``.
"""

from __future__ import annotations

from ._catboost import CatBoostAdapter
from ._core import HESSIAN_POLICIES, BoostingWarning
from ._lightgbm import LightGBMAdapter
from ._xgboost import XGBoostAdapter

__all__ = ["xgboost", "lightgbm", "catboost", "XGBoostAdapter", "LightGBMAdapter", "CatBoostAdapter", "BoostingWarning", "HESSIAN_POLICIES"]

_ARGS_DOC = """
    ``loss``: a registered loss (``lk.huber``) or its name (``"huber"``); ``**options``: its
    options (``delta=2.0``, ``pos_weight=...``, ``class_weight=np.array(...)``), checked now.

    ``scale`` (default 1): multiplies the gradient and Hessian. ``lk.mse`` is (p − y)², twice
    the libraries' ½r²: ``scale=0.5`` reproduces their squared error exactly at any
    ``reg_lambda`` / ``min_child_weight``.

    ``hessian``: ``"exact"`` (the loss's Hessian diagonal; the default where
    ``loss.hessian_kind == "exact"``), ``"constant"`` (the sample weight, as LightGBM's
    built-in Huber and L1 do; the default for piecewise / zero Hessians), ``"floor"``
    (max(h, ``hessian_floor`` · weight)), and for softmax losses ``"xgboost"`` (2·p(1 − p),
    XGBoost's ``multi:softprob``) or ``"lightgbm"`` (K/(K − 1)·p(1 − p), LightGBM's
    ``multiclass``).
"""


def xgboost(loss, *, scale=1.0, hessian=None, hessian_floor=1e-3, **options) -> XGBoostAdapter:
    """``loss`` as an XGBoost objective: ``.objective`` (``xgboost.train(obj=)`` and the
    scikit-learn ``objective=``), ``.metric`` (``custom_metric=`` / ``eval_metric=``) and
    ``.init_score(y, weight=None)`` (``base_score``).
    """
    return XGBoostAdapter(loss, scale=scale, hessian=hessian, hessian_floor=hessian_floor, **options)


def lightgbm(loss, *, scale=1.0, hessian=None, hessian_floor=1e-3, **options) -> LightGBMAdapter:
    """``loss`` as a LightGBM objective: ``.objective`` (``params["objective"]`` and the
    scikit-learn ``objective=``), ``.metric`` (``feval=`` / ``eval_metric=``) and
    ``.init_score(y, weight=None)`` (``Dataset(init_score=)`` with ``per_row=True``).
    """
    return LightGBMAdapter(loss, scale=scale, hessian=hessian, hessian_floor=hessian_floor, **options)


def catboost(loss, *, scale=1.0, hessian=None, hessian_floor=1e-3, multi_target=False, **options) -> CatBoostAdapter:
    """``loss`` as a CatBoost objective: ``.objective`` (``loss_function=``), ``.metric``
    (``eval_metric=``, which CatBoost requires beside a custom objective) and
    ``.init_score(y, weight=None)`` (``baseline=`` with ``per_row=True``).

    ``multi_target=True`` for K label columns per row (multi-output regression, soft-label
    distillation with ``kl_divergence``): CatBoost then needs its
    ``MultiTargetCustomObjective`` form. Class-axis losses with class ids (``cross_entropy``)
    become a multiclass objective for ``CatBoostClassifier``.
    """
    return CatBoostAdapter(loss, scale=scale, hessian=hessian, hessian_floor=hessian_floor, multi_target=multi_target, **options)


for _f in (xgboost, lightgbm, catboost):
    _f.__doc__ += _ARGS_DOC
del _f
