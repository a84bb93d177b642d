"""Training time with a losskit custom objective vs the library's built-in objective.

For each installed library (XGBoost, LightGBM, CatBoost) and each loss, trains the same model
three times on the same data, interleaved: with the built-in objective (``binary:logistic`` /
``binary`` / ``Logloss``; ``reg:squarederror`` / ``regression`` / ``RMSE``), with
``lk.boosting.<library>(loss)``'s objective, and with the shortest hand-written NumPy objective
(sigmoid once, g = s − y, h = s(1 − s); or g = p − y, h = 1): the cost every Python objective
pays for the library's round trip (margins out, derivatives in). It prints the median training
times, the ratios custom / built-in (the goal is <= 1.25) and hand-written / built-in, and the
time of one losskit objective call (every row's gradient and Hessian, one vectorised pass). Defaults: 200,000 rows x 20 features, 100 rounds, 2 threads, 3 repetitions.

Usage: python benchmarks/boosting.py [--rows 200000] [--features 20] [--rounds 100]
                                     [--threads 2] [--repeats 3] [--libraries xgboost,lightgbm,catboost]
                                     [--losses binary_cross_entropy,mse]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

BUILTIN = {
    "xgboost": {"binary_cross_entropy": "binary:logistic", "mse": "reg:squarederror"},
    "lightgbm": {"binary_cross_entropy": "binary", "mse": "regression"},
    "catboost": {"binary_cross_entropy": "Logloss", "mse": "RMSE"},
}
SCALE = {"binary_cross_entropy": 1.0, "mse": 0.5}  # mse is (p - y)²: scale 0.5 is the libraries' ½r²


def make_data(rows, features, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features)).astype(np.float32)
    f = X[:, 0] + 0.5 * X[:, 1] * X[:, 2] - 0.3 * X[:, 3] ** 2
    return X, {
        "binary_cross_entropy": (f + rng.logistic(size=rows) > 0).astype(np.float32),
        "mse": (f + rng.normal(size=rows)).astype(np.float32),
    }


def hand_written(loss):
    """The shortest NumPy gradient and Hessian of the libraries' own loss (no checks, no stable forms)."""
    if loss == "mse":
        return lambda p, y: (p - y, np.ones_like(p))

    def bce(p, y):
        s = 1.0 / (1.0 + np.exp(-p))
        return s - y, s * (1.0 - s)

    return bce


class _HandCatBoost:
    no_jit = True

    def __init__(self, f):
        self.f = f

    def calc_ders_range(self, approxes, targets, weights):
        g, h = self.f(np.asarray(approxes), np.asarray(targets, np.float64))
        if weights is not None:
            w = np.asarray(weights)
            g, h = g * w, h * w
        return np.stack([-g, -h], axis=1)


def trainer(library, X, y, loss, mode, rounds, threads):
    """A zero-argument function that trains one model (data structures built outside the timing);
    ``mode`` is "builtin", "custom" (losskit) or "numpy" (hand-written)."""
    import losskit as lk

    custom = mode != "builtin"
    adapter = getattr(lk.boosting, library)(loss, scale=SCALE[loss]) if custom else None
    if mode == "numpy":
        f = hand_written(loss)
        if library == "catboost":
            hand = _HandCatBoost(f)
        else:
            hand = lambda p, d: f(np.asarray(p, np.float64), d.get_label().astype(np.float64))  # noqa: E731
    if library == "xgboost":
        import xgboost as xgb

        d = xgb.DMatrix(X, y, nthread=threads)
        params = {"nthread": threads, "tree_method": "hist", "max_depth": 6, "eta": 0.3}
        if custom:
            params["base_score"] = adapter.init_score(y)
            return lambda: xgb.train(params, d, rounds, obj=hand if mode == "numpy" else adapter.objective)
        params["objective"] = BUILTIN[library][loss]
        return lambda: xgb.train(params, d, rounds)
    if library == "lightgbm":
        import lightgbm as lgb

        params = {"num_threads": threads, "verbose": -1, "num_leaves": 31, "learning_rate": 0.1}
        if custom:
            d = lgb.Dataset(X, y, init_score=adapter.init_score(y, per_row=True), params={"verbose": -1}).construct()
            params["objective"] = hand if mode == "numpy" else adapter.objective
        else:
            d = lgb.Dataset(X, y, params={"verbose": -1}).construct()
            params["objective"] = BUILTIN[library][loss]
        return lambda: lgb.train(params, d, rounds)
    import catboost as cb

    cls = cb.CatBoostClassifier if loss == "binary_cross_entropy" else cb.CatBoostRegressor
    common = {"iterations": rounds, "depth": 6, "learning_rate": 0.1, "thread_count": threads, "verbose": 0, "random_seed": 0,
              "leaf_estimation_method": "Newton", "leaf_estimation_iterations": 1, "boost_from_average": False}
    if custom:
        pool = cb.Pool(X, y, baseline=adapter.init_score(y, per_row=True))
        # a custom objective needs an eval_metric; the built-in side gets its built-in equivalent
        return lambda: cls(loss_function=hand if mode == "numpy" else adapter.objective, eval_metric=adapter.metric, **common).fit(pool)
    pool = cb.Pool(X, y)
    return lambda: cls(loss_function=BUILTIN[library][loss], eval_metric=BUILTIN[library][loss], **common).fit(pool)


def objective_call_ms(library, loss, X, y, repeats=5):
    """One gradient + Hessian pass over every row, as the library calls it."""
    import losskit as lk

    adapter = getattr(lk.boosting, library)(loss, scale=SCALE[loss])
    pred = np.random.default_rng(1).normal(size=len(y))
    if library == "xgboost":
        call = lambda: adapter.objective(y, pred.astype(np.float32), sample_weight=None)  # noqa: E731
    elif library == "lightgbm":
        call = lambda: adapter.objective(y, pred, None)  # noqa: E731
    else:
        call = lambda: adapter.objective.calc_ders_range(pred, y, None)  # noqa: E731
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--libraries", default="xgboost,lightgbm,catboost")
    ap.add_argument("--losses", default="binary_cross_entropy,mse")
    args = ap.parse_args()

    import importlib.util

    X, labels = make_data(args.rows, args.features)
    print(f"{args.rows} rows x {args.features} features, {args.rounds} rounds, {args.threads} threads, median of {args.repeats} (interleaved)")
    print(f"{'library':9} {'loss':21} {'built-in s':>10} {'losskit s':>9} {'ratio':>6} {'numpy s':>8} {'ratio':>6} {'obj call ms':>11} {'ms/round':>9}")
    for library in args.libraries.split(","):
        if importlib.util.find_spec(library) is None:
            print(f"{library:9} not installed")
            continue
        for loss in args.losses.split(","):
            y = labels[loss]
            modes = ("builtin", "custom", "numpy")
            runs = {m: trainer(library, X, y, loss, m, args.rounds, args.threads) for m in modes}
            for m in modes:
                runs[m]()  # warm-up (first-call setup, page faults)
            times = {m: [] for m in modes}
            for _ in range(args.repeats):
                for m in modes:
                    t = time.perf_counter()
                    runs[m]()
                    times[m].append(time.perf_counter() - t)
            builtin, custom, hand = (statistics.median(times[m]) for m in modes)
            call = objective_call_ms(library, loss, X, y)
            print(
                f"{library:9} {loss:21} {builtin:10.2f} {custom:9.2f} {custom / builtin:6.2f} {hand:8.2f} {hand / builtin:6.2f} "
                f"{call:11.1f} {1e3 * custom / args.rounds:9.1f}",
                flush=True,
            )

if __name__ == "__main__":
    main()
