"""losskit.boosting trained with the real libraries (small data, few rounds, 2 threads).

1. Where a custom objective and a library's built-in one are the same function, both are
   trained side by side (same data, weights, parameters and seeds) and their raw margins after
   20 rounds agree to 1e-6 (1e-5 for XGBoost, which works in float32). The custom side starts
   from the adapter's ``init_score``, the built-in side from the library's own starting score:
   the comparison tests both.
2. Losses the libraries lack train and help, measured here: Huber / pseudo-Huber beat squared
   error on outlier-contaminated targets for every seed; three quantile levels cover close to
   their nominal rates; sigmoid focal trains on a 1:50 imbalanced set.

Cases for losses other issues add skip until the loss is registered.
"""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from losskit import boosting

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")
cb = pytest.importorskip("catboost")

ROUNDS = 20
N = 400
THREADS = 2


def _need(*names):
    for name in names:
        if name not in lk.registry:
            pytest.skip(f"{name} is not registered yet")


def _f32(a):
    return a.astype(np.float32).astype(np.float64)  # labels and weights travel as float32


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 5))
    return {
        "X": X,
        "binary": (X[:, 0] + 0.5 * X[:, 1] + rng.logistic(size=N) > 0.3).astype(float),
        "real": _f32(2 * X[:, 0] + np.sin(X[:, 1]) + 0.5 * rng.normal(size=N)),
        "real2": _f32(np.stack([X[:, 0] - X[:, 2], np.cos(X[:, 1]) + 0.3 * rng.normal(size=N)], axis=1)),
        "classes": np.argmax(X[:, :3] + rng.normal(size=(N, 3)), axis=1).astype(float),
        "counts": rng.poisson(np.exp(0.4 * X[:, 0] + 0.2 * X[:, 1])).astype(float),
        "positive": _f32(rng.gamma(2.0, np.exp(0.3 * X[:, 0]) / 2.0) * (rng.random(N) < 0.8)),
        "weight": _f32(rng.uniform(0.5, 2.0, N)),
    }


def _close(custom, builtin, tol):
    custom, builtin = np.asarray(custom, np.float64), np.asarray(builtin, np.float64)
    assert custom.shape == builtin.shape
    err = np.max(np.abs(custom - builtin)) / max(1.0, np.max(np.abs(builtin)))
    assert err <= tol, f"raw margins differ by {err:.3g} (relative to max(1, |margin|)), tolerance {tol}"
    assert np.ptp(builtin) > 0.1  # the models learned something: not two constant predictions


# --- 1. equal to the built-in objectives ------------------------------------------------------

# (loss, loss options, adapter kwargs, label, built-in params, params for both sides)
XGB_CASES = {
    "logistic": ("binary_cross_entropy", {}, {}, "binary", {"objective": "binary:logistic"}, {}),
    "logistic-pos_weight": ("binary_cross_entropy", {"pos_weight": 3.0}, {}, "binary", {"objective": "binary:logistic", "scale_pos_weight": 3.0}, {"base_score": 0.0}),
    "squarederror-scale": ("mse", {}, {"scale": 0.5}, "real", {"objective": "reg:squarederror"}, {"lambda": 3.0, "min_child_weight": 2.0}),
    "squarederror-lambda0": ("mse", {}, {}, "real", {"objective": "reg:squarederror"}, {"lambda": 0.0, "min_child_weight": 0.0}),
    "multioutput": ("mse", {}, {"scale": 0.5}, "real2", {"objective": "reg:squarederror"}, {"lambda": 1.0, "multi_strategy": "one_output_per_tree"}),
    "softprob": ("cross_entropy", {}, {"hessian": "xgboost"}, "classes", {"objective": "multi:softprob"}, {"num_class": 3}),
    "poisson": ("poisson_nll", {}, {}, "counts", {"objective": "count:poisson"}, {"max_delta_step": 0.0}),
    "tweedie": ("tweedie_deviance", {"power": 1.5}, {"scale": 0.5}, "positive", {"objective": "reg:tweedie", "tweedie_variance_power": 1.5}, {}),
}


def _xgb_margins(X, y, w, params, obj=None):
    d = xgb.DMatrix(X, y, weight=w)
    booster = xgb.train({"nthread": THREADS, "seed": 0, "max_depth": 3, "eta": 0.3, **params}, d, ROUNDS, obj=obj)
    return booster.predict(d, output_margin=True)


@pytest.mark.parametrize("case", XGB_CASES)
def test_xgboost_equals_builtin(case, data):
    name, options, kw, label, builtin, both = XGB_CASES[case]
    _need(name)
    X, y, w = data["X"], data[label], data["weight"]
    adapter = boosting.xgboost(name, **kw, **options)
    custom_params = dict(both)
    if "base_score" in both:  # both sides start from margin 0 (XGBoost reads the built-in's as a probability)
        builtin = {**builtin, "base_score": 0.5}
    else:
        custom_params["base_score"] = adapter.init_score(y, w)
    want = _xgb_margins(X, y, w, {**both, **builtin})
    got = _xgb_margins(X, y, w, custom_params, obj=adapter.objective)
    _close(got, want, 1e-5)


LGB_CASES = {
    "binary": ("binary_cross_entropy", {}, {}, "binary", {"objective": "binary"}, {}),
    "binary-scale_pos_weight": ("binary_cross_entropy", {"pos_weight": 3.0}, {}, "binary", {"objective": "binary", "scale_pos_weight": 3.0, "boost_from_average": False}, {}),
    "regression": ("mse", {}, {"scale": 0.5}, "real", {"objective": "regression"}, {"lambda_l2": 3.0}),
    "multiclass": ("cross_entropy", {}, {"hessian": "lightgbm"}, "classes", {"objective": "multiclass"}, {"num_class": 3}),
    "poisson": ("poisson_nll", {}, {}, "counts", {"objective": "poisson", "poisson_max_delta_step": 1e-12}, {}),
    "tweedie": ("tweedie_deviance", {"power": 1.5}, {"scale": 0.5}, "positive", {"objective": "tweedie", "tweedie_variance_power": 1.5}, {}),
}


def _lgb_margins(X, y, w, params, init=None):
    ds = lgb.Dataset(X, y, weight=w, init_score=init)
    p = {"num_threads": THREADS, "verbose": -1, "seed": 0, "deterministic": True, "num_leaves": 8, "min_data_in_leaf": 5, **params}
    return lgb.train(p, ds, ROUNDS).predict(X, raw_score=True)


@pytest.mark.parametrize("case", LGB_CASES)
def test_lightgbm_equals_builtin(case, data):
    name, options, kw, label, builtin, both = LGB_CASES[case]
    _need(name)
    X, y, w = data["X"], data[label], data["weight"]
    adapter = boosting.lightgbm(name, **kw, **options)
    want = _lgb_margins(X, y, w, {**both, **builtin})
    if builtin.get("boost_from_average", True):
        start = adapter.init_score(y, w)  # LightGBM's boost_from_average, from the loss's baseline
    else:
        start = 0.0
    got = _lgb_margins(X, y, w, {**both, "objective": adapter.objective}, init=adapter._core.per_row(start, N)) + start
    _close(got, want, 1e-6)


CB_CASES = {
    "Logloss": ("binary_cross_entropy", {}, {}, "binary", "Logloss", {}),
    "RMSE": ("mse", {}, {"scale": 0.5}, "real", "RMSE", {"l2_leaf_reg": 3.0}),
    "MultiRMSE": ("mse", {}, {"scale": 0.5, "multi_target": True}, "real2", "MultiRMSE", {"l2_leaf_reg": 3.0}),
    "Poisson": ("poisson_nll", {}, {}, "counts", "Poisson", {}),
    "Tweedie": ("tweedie_deviance", {"power": 1.5}, {"scale": 0.5}, "positive", "Tweedie:variance_power=1.5", {}),
}


def _cb_margins(X, y, w, loss, metric=None, baseline=None, **params):
    cls = cb.CatBoostClassifier if loss == "Logloss" or (metric is not None and y.ndim == 1 and set(np.unique(y)) <= {0.0, 1.0}) else cb.CatBoostRegressor
    model = cls(loss_function=loss, eval_metric=metric, iterations=ROUNDS, depth=3, learning_rate=0.3, random_seed=0,
                thread_count=THREADS, verbose=0, leaf_estimation_method="Newton", leaf_estimation_iterations=1, **params)
    model.fit(X, y, sample_weight=w, baseline=baseline)
    return model.predict(X, prediction_type="RawFormulaVal")


@pytest.mark.parametrize("case", CB_CASES)
def test_catboost_equals_builtin(case, data):
    """Equality with CatBoost's Logloss / RMSE / MultiRMSE tests the sign convention (CatBoost
    maximises) and the calc_ders_multi layout by training, not only on the arrays."""
    name, options, kw, label, builtin, both = CB_CASES[case]
    _need(name)
    X, y, w = data["X"], data[label], data["weight"]
    adapter = boosting.catboost(name, **kw, **options)
    if adapter.multi_target:  # CatBoost 1.2 rejects a per-row baseline for multi-target labels: both start at 0
        start, both = None, {**both, "boost_from_average": False}
    else:
        start = adapter.init_score(y, w, per_row=True)
    want = _cb_margins(X, y, w, builtin, baseline=start, **both)
    both.pop("boost_from_average", None)
    got = _cb_margins(X, y, w, adapter.objective, adapter.metric, baseline=start, **both)
    _close(got, want, 1e-6)


@pytest.mark.parametrize("builtin", ["RMSE", "Logloss"])
def test_catboost_init_score_is_boost_from_average(builtin, data):
    name, label, kw = ("mse", "real", {"scale": 0.5}) if builtin == "RMSE" else ("binary_cross_entropy", "binary", {})
    X, y, w = data["X"], data[label], data["weight"]
    adapter = boosting.catboost(name, **kw)
    want = _cb_margins(X, y, w, builtin, boost_from_average=True)
    got = _cb_margins(X, y, w, adapter.objective, adapter.metric, baseline=adapter.init_score(y, w, per_row=True))
    _close(got + adapter.init_score(y, w), want, 1e-6)


# --- the scikit-learn estimators, weights, early stopping -------------------------------------


def test_xgboost_sklearn_estimators(data):
    X, y, w = data["X"], data["real"], data["weight"]
    common = {"n_estimators": ROUNDS, "max_depth": 3, "learning_rate": 0.3, "n_jobs": THREADS, "random_state": 0}
    obj = boosting.xgboost(lk.mse, scale=0.5)
    want = xgb.XGBRegressor(objective="reg:squarederror", **common).fit(X, y, sample_weight=w).predict(X)
    model = xgb.XGBRegressor(objective=obj.objective, eval_metric=obj.metric, base_score=obj.init_score(y, w), **common)
    model.fit(X, y, sample_weight=w, eval_set=[(X, y)], sample_weight_eval_set=[w], verbose=False)
    _close(model.predict(X), want, 1e-5)
    history = model.evals_result()["validation_0"]["mse"]
    assert history[-1] == pytest.approx(float(lk.mse(model.predict(X).astype(np.float64), y, weight=w)), rel=1e-5)
    # binary XGBClassifier: base_score is a probability there; predict_proba applies the sigmoid
    b = data["binary"]
    obj = boosting.xgboost("binary_cross_entropy")
    want = xgb.XGBClassifier(objective="binary:logistic", **common).fit(X, b).predict_proba(X)
    base = 1.0 / (1.0 + np.exp(-obj.init_score(b)))
    got = xgb.XGBClassifier(objective=obj.objective, eval_metric=obj.metric, base_score=base, **common).fit(X, b).predict_proba(X)
    _close(got, want, 1e-5)


def test_lightgbm_sklearn_estimators(data):
    X, y, w = data["X"], data["real"], data["weight"]
    common = {"n_estimators": ROUNDS, "num_leaves": 8, "min_child_samples": 5, "learning_rate": 0.3, "n_jobs": THREADS, "random_state": 0, "verbose": -1}
    obj = boosting.lightgbm(lk.mse, scale=0.5)
    want = lgb.LGBMRegressor(objective="regression", **common).fit(X, y, sample_weight=w).predict(X)
    model = lgb.LGBMRegressor(objective=obj.objective, **common)
    import inspect

    evals = {"eval_X": (X,), "eval_y": (y,)} if "eval_X" in inspect.signature(model.fit).parameters else {"eval_set": [(X, y)]}  # LightGBM >= 4.7
    model.fit(X, y, sample_weight=w, init_score=obj.init_score(y, w, per_row=True), eval_sample_weight=[w], eval_metric=obj.metric, **evals)
    _close(model.predict(X) + obj.init_score(y, w), want, 1e-6)
    assert "mse" in model.evals_result_["training"] or "mse" in next(iter(model.evals_result_.values()))
    # multiclass LGBMClassifier with a custom objective: raw scores, (n, K)
    k = data["classes"].astype(int)
    obj = boosting.lightgbm("cross_entropy", hessian="lightgbm")
    want = lgb.LGBMClassifier(objective="multiclass", **common).fit(X, k).predict(X, raw_score=True)
    model = lgb.LGBMClassifier(objective=obj.objective, **common).fit(X, k, init_score=obj.init_score(k, per_row=True))
    _close(model.predict(X, raw_score=True) + obj.init_score(k), want, 1e-6)


def test_early_stopping_watches_the_loss(data):
    """The metric is the loss itself: the recorded values equal the loss of the predictions,
    and early stopping stops on it."""
    X, y = data["X"], data["binary"]
    Xt, yt, Xv, yv = X[:300], y[:300], X[300:], y[300:]
    obj = boosting.xgboost("binary_cross_entropy")
    dt, dv = xgb.DMatrix(Xt, yt), xgb.DMatrix(Xv, yv)
    log = {}
    booster = xgb.train({"nthread": THREADS, "eta": 0.5, "max_depth": 4, "base_score": obj.init_score(yt)}, dt, 200, obj=obj.objective,
                        custom_metric=obj.metric, evals=[(dv, "valid")], early_stopping_rounds=5, evals_result=log, verbose_eval=False)
    assert booster.best_iteration < 199
    values = log["valid"]["binary_cross_entropy"]
    assert booster.best_score == pytest.approx(min(values))
    margin = booster.predict(dv, output_margin=True, iteration_range=(0, booster.best_iteration + 1))
    assert min(values) == pytest.approx(float(lk.binary_cross_entropy(margin.astype(np.float64), yv)), rel=1e-5)
    lobj = boosting.lightgbm("binary_cross_entropy")
    s = lobj.init_score(yt)
    log = {}
    booster = lgb.train({"objective": lobj.objective, "num_threads": THREADS, "verbose": -1, "learning_rate": 0.5, "metric": "None"},
                        lgb.Dataset(Xt, yt, init_score=lobj.init_score(yt, per_row=True)), 200,
                        valid_sets=[lgb.Dataset(Xv, yv, init_score=np.full(len(yv), s))], feval=lobj.metric,
                        callbacks=[lgb.early_stopping(5, verbose=False), lgb.record_evaluation(log)])
    assert booster.best_iteration < 200
    values = log["valid_0"]["binary_cross_entropy"]
    margin = booster.predict(Xv, raw_score=True, num_iteration=booster.best_iteration) + s
    assert min(values) == pytest.approx(float(lk.binary_cross_entropy(margin, yv)), rel=1e-9)


def test_catboost_multiclass_trains(data):
    """calc_ders_multi (one call per row, CatBoost's only form for K scores): training lowers
    the loss well below the starting score's, and the metric CatBoost records is the loss."""
    X, k = data["X"][:200], data["classes"][:200]
    obj = boosting.catboost("cross_entropy")
    start = obj.init_score(k, per_row=True)
    model = cb.CatBoostClassifier(loss_function=obj.objective, eval_metric=obj.metric, classes_count=3, iterations=10, depth=3,
                                  learning_rate=0.5, random_seed=0, thread_count=THREADS, verbose=0)
    model.fit(cb.Pool(X, k.astype(int), baseline=start), eval_set=cb.Pool(X, k.astype(int), baseline=start))
    raw = model.predict(cb.Pool(X, baseline=start), prediction_type="RawFormulaVal")
    assert raw.shape == (200, 3)
    trained = float(lk.cross_entropy(raw, k.astype(int)))
    assert trained < 0.8 * float(lk.cross_entropy(start, k.astype(int)))
    assert np.mean(raw.argmax(1) == k) > 0.6
    history = model.get_evals_result()["validation"]
    assert history[next(iter(history))][-1] == pytest.approx(trained, rel=1e-6)


# --- 2. losses the libraries lack train and help ----------------------------------------------


def _outlier_data(seed, n=600):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(2 * n, 4))
    clean = 2.0 * X[:, 0] + np.sin(2 * X[:, 1])
    y = clean + 0.3 * rng.normal(size=2 * n)
    bad = rng.random(n) < 0.15
    y[:n][bad] += rng.uniform(10, 30, bad.sum())  # one-sided outliers in the training targets only
    return X[:n], _f32(y[:n]), X[n:], clean[n:]


def _fit(library, adapter, X, y, start, rounds=60, **params):
    """Train with the adapter's objective from the per-row starting score; return a predictor of raw scores."""
    if library == "xgboost":
        p = {"nthread": THREADS, "seed": 0, "max_depth": 3, "eta": 0.2, "base_score": start, **params}
        booster = xgb.train(p, xgb.DMatrix(X, y), rounds, obj=adapter.objective)
        return lambda Z: booster.predict(xgb.DMatrix(Z), output_margin=True)
    if library == "lightgbm":
        p = {"objective": adapter.objective, "num_threads": THREADS, "verbose": -1, "seed": 0, "num_leaves": 8, "learning_rate": 0.2, **params}
        booster = lgb.train(p, lgb.Dataset(X, y, init_score=adapter._core.per_row(start, len(y))), rounds)
        return lambda Z: booster.predict(Z, raw_score=True) + start
    model = cb.CatBoostRegressor(loss_function=adapter.objective, eval_metric=adapter.metric, iterations=rounds, depth=3, learning_rate=0.2,
                                 random_seed=0, thread_count=THREADS, verbose=0, **params)
    model.fit(X, y, baseline=adapter._core.per_row(start, len(y)))
    return lambda Z: model.predict(Z, prediction_type="RawFormulaVal") + start


LIBS = ("xgboost", "lightgbm", "catboost")
_MAKE = {"xgboost": boosting.xgboost, "lightgbm": boosting.lightgbm, "catboost": boosting.catboost}


@pytest.mark.parametrize("library", LIBS)
@pytest.mark.parametrize("robust", ["huber", "pseudo_huber"])
def test_robust_losses_beat_squared_error_on_outliers(library, robust):
    """Error on the clean test targets, for every seed. Both start from the training targets'
    median (huber declares no closed-form baseline); squared error from its own, the mean."""
    _need(robust)
    make = _MAKE[library]
    for seed in range(3):
        X, y, Xt, clean = _outlier_data(seed)
        mse = make("mse", scale=0.5)
        robust_adapter = make(robust, delta=1.0)
        rmse = lambda f: float(np.sqrt(np.mean((f(Xt) - clean) ** 2)))  # noqa: E731
        e_mse = rmse(_fit(library, mse, X, y, mse.init_score(y)))
        e_rob = rmse(_fit(library, robust_adapter, X, y, float(lk.mae.baseline(y))))
        assert e_rob < 0.7 * e_mse, f"seed {seed}: {robust} RMSE {e_rob:.3f} vs squared error {e_mse:.3f}"


@pytest.mark.parametrize("library", LIBS)
def test_quantile_levels_cover_their_nominal_rates(library):
    """Three levels on heteroscedastic data: the measured fraction of held-out targets below each
    predicted quantile is within 0.06 of the level, and the 10–90 % band covers about 80 %."""
    _need("quantile")
    rng = np.random.default_rng(7)
    n = 1500
    X = rng.uniform(-2, 2, size=(2 * n, 3))
    y = _f32(X[:, 0] + (0.3 + 0.5 * np.abs(X[:, 1])) * rng.normal(size=2 * n))
    make = _MAKE[library]
    below = {}
    for tau in (0.1, 0.5, 0.9):
        adapter = make("quantile", quantile=tau)
        f = _fit(library, adapter, X[:n], y[:n], adapter.init_score(y[:n]), rounds=150, **({"min_child_weight": 0.0} if library == "xgboost" else {}))
        below[tau] = float(np.mean(y[n:] < f(X[n:])))
    for tau, frac in below.items():
        assert abs(frac - tau) < 0.06, f"{library}: level {tau} has {frac:.3f} of the test targets below it ({below})"
    assert abs((below[0.9] - below[0.1]) - 0.8) < 0.08


@pytest.mark.parametrize("library", LIBS)
def test_sigmoid_focal_trains_on_imbalanced_data(library):
    """1:50 positives, each library's default tree settings, except what the focal loss needs:
    its exact Hessian is negative for positives predicted far too low (the loss is not convex
    in the logit there) and tiny elsewhere, so the adapter uses ``hessian="floor"`` (max(h,
    1e-3·w)), and LightGBM needs ``lambda_l2 > 0`` (its default 0 lets floored Newton steps
    explode). Average precision beside binary cross-entropy is measured over seeds and printed,
    win or lose; the test asserts that it learned (AP several times the positive rate)."""
    _need("sigmoid_focal")
    from sklearn.metrics import average_precision_score

    settings = {"xgboost": {}, "lightgbm": {"lambda_l2": 1.0}, "catboost": {}}[library]
    make = _MAKE[library]
    rows = []
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        X = rng.normal(size=(4000, 6))
        logit = 2.0 * X[:, 0] + 1.5 * X[:, 1] * X[:, 2] - 5.5
        y = (rng.random(4000) < 1 / (1 + np.exp(-logit))).astype(float)
        Xtr, ytr, Xte, yte = X[:2000], y[:2000], X[2000:], y[2000:]
        start = float(lk.binary_cross_entropy.baseline(ytr))  # the same start for both losses
        bce = _fit(library, make("binary_cross_entropy"), Xtr, ytr, start, rounds=60)
        focal = _fit(library, make("sigmoid_focal", hessian="floor"), Xtr, ytr, start, rounds=60, **settings)
        rows.append((seed, yte.mean(), average_precision_score(yte, bce(Xte)), average_precision_score(yte, focal(Xte))))
        assert rows[-1][3] > 4 * yte.mean(), rows
    print(f"\n{library}: seed, positive rate, AP(binary_cross_entropy), AP(sigmoid_focal): " + "; ".join(f"{s} {p:.3f} {a:.3f} {b:.3f}" for s, p, a, b in rows))
