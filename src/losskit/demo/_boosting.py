"""The demo's boosting section: losskit losses as custom objectives of a gradient-boosting
library, measured in the run. It runs only when XGBoost, LightGBM or CatBoost is installed
(the first found, in that order of speed: LightGBM, XGBoost, CatBoost) and says which.

* Huber vs squared error on targets with one-sided outliers: error on the clean test targets.
* Quantile regression at 0.1 / 0.5 / 0.9 (when the ``quantile`` loss is registered): the
  measured fraction of test targets below each predicted quantile.
"""

from __future__ import annotations

import importlib.util

import numpy as np

import losskit as lk

LIBRARIES = ("lightgbm", "xgboost", "catboost")


def available_library():
    for name in LIBRARIES:
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def _fit(library, adapter, X, y, start, rounds, lr=0.2):
    """Train from the constant ``start``; return a function giving raw scores."""
    rows = adapter.init_score(y, per_row=True) if start is None else np.full(len(y), float(start))
    start = float(rows[0])
    if library == "lightgbm":
        import lightgbm as lgb

        params = {"objective": adapter.objective, "num_threads": 1, "verbose": -1, "seed": 0, "num_leaves": 8, "learning_rate": lr}
        booster = lgb.train(params, lgb.Dataset(X, y, init_score=rows), rounds)
        return lambda Z: booster.predict(Z, raw_score=True) + start
    if library == "xgboost":
        import xgboost as xgb

        params = {"nthread": 1, "seed": 0, "max_depth": 3, "eta": lr, "base_score": start, "min_child_weight": 0.0}
        booster = xgb.train(params, xgb.DMatrix(X, y), rounds, obj=adapter.objective)
        return lambda Z: booster.predict(xgb.DMatrix(Z), output_margin=True)
    import catboost as cb

    model = cb.CatBoostRegressor(loss_function=adapter.objective, eval_metric=adapter.metric, iterations=rounds, depth=3,
                                 learning_rate=lr, random_seed=0, thread_count=1, verbose=0)
    model.fit(X, y, baseline=rows)
    return lambda Z: model.predict(Z, prediction_type="RawFormulaVal") + start


def run(rng, quick: bool, progress):
    library = available_library()
    if library is None:
        return {"library": None, "reason": 'no boosting library installed (pip install "losskit[boosting]")'}
    make = getattr(lk.boosting, library)
    rounds = 40 if quick else 150
    n = 500 if quick else 2000
    progress.start("boosting", f"gradient boosting with {library}", 2)

    # Huber vs squared error: 15 % of the training targets read 10-30 units high
    X = rng.normal(size=(2 * n, 4))
    clean = 2.0 * X[:, 0] + np.sin(2 * X[:, 1])
    y = clean + 0.3 * rng.normal(size=2 * n)
    bad = rng.random(n) < 0.15
    y[:n][bad] += rng.uniform(10, 30, bad.sum())
    mse = make("mse", scale=0.5)
    huber = make("huber", delta=1.0)
    rmse = lambda f: float(np.sqrt(np.mean((f(X[n:]) - clean[n:]) ** 2)))  # noqa: E731
    outliers = {
        "n_train": n,
        "n_outliers": int(bad.sum()),
        "rounds": rounds,
        "rmse_clean_test": {
            "mse (scale=0.5)": rmse(_fit(library, mse, X[:n], y[:n], None, rounds)),
            "huber (delta=1)": rmse(_fit(library, huber, X[:n], y[:n], float(lk.mae.baseline(y[:n])), rounds)),
        },
    }
    progress.update("boosting", 1, "huber vs mse")

    quantiles = None
    if "quantile" in lk.registry:
        Xq = rng.uniform(-2, 2, size=(2 * n, 3))
        yq = Xq[:, 0] + (0.3 + 0.5 * np.abs(Xq[:, 1])) * rng.normal(size=2 * n)
        below = {}
        for tau in (0.1, 0.5, 0.9):
            adapter = make("quantile", quantile=tau)
            f = _fit(library, adapter, Xq[:n], yq[:n], None, 3 * rounds)
            below[str(tau)] = float(np.mean(yq[n:] < f(Xq[n:])))
        quantiles = {"n_train": n, "rounds": 3 * rounds, "fraction_below": below, "band_10_90": below["0.9"] - below["0.1"]}
    progress.update("boosting", 2, "quantiles" if quantiles else "quantile loss not registered")
    return {"library": library, "outliers": outliers, "quantiles": quantiles}


def summarize(b):
    """(rows, finding) for the summary table and the findings list."""
    if b["library"] is None:
        return [("5 boosting", "-", "-", b["reason"])], f"Gradient boosting: skipped, {b['reason']}."
    o = b["outliers"]
    r = o["rmse_clean_test"]
    rows = [("5 boosting", f"{b['library']}, {o['rounds']} rounds", name, f"RMSE to clean test targets {v:.3f}") for name, v in r.items()]
    mse_e, hub_e = r["mse (scale=0.5)"], r["huber (delta=1)"]
    finding = (
        f"Gradient boosting ({b['library']}, losskit objectives): with {o['n_outliers']} of {o['n_train']} training targets "
        f"10-30 units high, huber's error on the clean test targets is {hub_e:.3f} against squared error's {mse_e:.3f}."
    )
    q = b["quantiles"]
    if q:
        fr = q["fraction_below"]
        rows += [("5 boosting", f"{b['library']}, {q['rounds']} rounds", f"quantile={t}", f"{100 * v:.1f}% of test targets below") for t, v in fr.items()]
        finding += (
            f" Quantile objectives at 0.1 / 0.5 / 0.9 leave {', '.join(f'{100 * v:.1f}%' for v in fr.values())} of the test "
            f"targets below them (nominal 10 / 50 / 90 %)."
        )
    else:
        finding += " (The quantile experiment runs once the quantile loss is registered.)"
    return rows, finding
