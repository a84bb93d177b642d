"""The demo's count and quantile section, two questions the regression long tail answers:

* **Prediction bands.** On data whose noise grows with x, one model trained with
  ``quantile(quantile=(0.1, 0.5, 0.9))`` gives a band that covers about 80 % of test points
  where the noise is small *and* where it is large; the usual band from ``mse``
  (prediction ± 1.28 residual standard deviations) has the right coverage only on average.
* **Counts.** On Poisson counts from a log-linear rate, ``poisson_nll`` on the log-rate
  against ``mse`` on the counts with an identity link (what a first attempt often is): error
  to the true rate, and how many predicted rates are negative.

Every model is linear, trained full-batch with Adam on the closed-form gradient that
``loss.value_and_grad`` returns; every number is measured in the run.
"""

from __future__ import annotations

import numpy as np

import losskit as lk

from ._nn import Adam

LEVELS = (0.1, 0.5, 0.9)
Z_80 = 1.2815515655446004  # the 0.9 quantile of the standard normal: ±Z_80 sigma holds 80 %


def _fit_linear(x, target, loss, outputs, steps, lr, **options):
    """Weights (d, outputs) and biases (outputs,) of the linear model x @ w + b minimising
    ``loss`` (its input is the model's output: a log-rate for ``poisson_nll``)."""
    w, b = np.zeros((x.shape[1], outputs)), np.zeros(outputs)
    opt = Adam([w, b], lr=lr, steps=steps)
    for _ in range(steps):
        z = x @ w + b
        _, g = loss.value_and_grad(z[:, 0] if outputs == 1 else z, target, **options)
        g = g.reshape(z.shape)
        opt.step([x.T @ g, g.sum(axis=0)])
    return w, b


def _coverage(lo, hi, y, where) -> float:
    return float(np.mean((y[where] >= lo[where]) & (y[where] <= hi[where])))


def bands(rng, n, steps):
    """Heteroscedastic line: y = 2 + 3x + (0.2 + 1.8x) ε, x ~ U(0, 1)."""
    def draw(m):
        x = rng.random(m)
        return x, 2.0 + 3.0 * x + (0.2 + 1.8 * x) * rng.standard_normal(m)

    xtr, ytr = draw(n)
    xte, yte = draw(n)
    feats = lambda x: np.stack([x, x * x], axis=1)  # noqa: E731 - a quadratic band edge is allowed
    w, b = _fit_linear(feats(xtr), ytr, lk.quantile, len(LEVELS), steps, 0.05, quantile=LEVELS)
    q = feats(xte) @ w + b
    wm, bm = _fit_linear(feats(xtr), ytr, lk.mse, 1, steps, 0.05)
    mean_tr, mean_te = (feats(xtr) @ wm + bm)[:, 0], (feats(xte) @ wm + bm)[:, 0]
    sigma = float(np.std(ytr - mean_tr))
    low, high = xte < 0.5, xte >= 0.5
    runs = {}
    for label, lo, hi in (
        (f"quantile(quantile={LEVELS})", q[:, 0], q[:, 2]),
        ("mse ± 1.28 residual sd", mean_te - Z_80 * sigma, mean_te + Z_80 * sigma),
    ):
        runs[label] = {
            "coverage_all": _coverage(lo, hi, yte, slice(None)),
            "coverage_low_noise": _coverage(lo, hi, yte, low),
            "coverage_high_noise": _coverage(lo, hi, yte, high),
            "mean_width_low_noise": float(np.mean((hi - lo)[low])),
            "mean_width_high_noise": float(np.mean((hi - lo)[high])),
        }
    return {"n": n, "steps": steps, "nominal": 0.8, "runs": runs}


def counts(rng, n, steps, d=4):
    """Poisson counts with log-rate 0.3 + x·β, x ~ N(0, I), |β| = 0.8."""
    beta = rng.standard_normal(d)
    beta *= 0.8 / np.linalg.norm(beta)

    def draw(m):
        x = rng.standard_normal((m, d))
        rate = np.exp(0.3 + x @ beta)
        return x, rate, rng.poisson(rate).astype(float)

    xtr, _, ytr = draw(n)
    xte, rate_te, yte = draw(n)
    fits = {
        "poisson_nll (log link)": (lk.poisson_nll, np.exp),
        "mse (identity link)": (lk.mse, lambda z: z),
    }
    runs = {}
    for label, (loss, to_rate) in fits.items():
        w, b = _fit_linear(xtr, ytr, loss, 1, steps, 0.05)
        rate_hat = to_rate((xte @ w + b)[:, 0])
        safe = np.maximum(rate_hat, 1e-6)  # a negative rate has no Poisson likelihood
        runs[label] = {
            "mean_relative_error_to_true_rate": float(np.mean(np.abs(rate_hat - rate_te) / rate_te)),
            "negative_rate_fraction": float(np.mean(rate_hat < 0)),
            "test_poisson_nll": float(lk.poisson_nll(np.log(safe), yte)),
        }
    return {"n": n, "steps": steps, "mean_count": float(ytr.mean()), "max_count": int(ytr.max()), "runs": runs}


def run(rng, quick: bool, progress):
    n = 2000 if quick else 10000
    steps = 300 if quick else 800
    progress.start("tails", "quantile bands and counts", 2)
    out = {"bands": bands(rng, n, steps)}
    progress.update("tails", 1, "quantile bands")
    out["counts"] = counts(rng, n, steps)
    progress.update("tails", 2, "counts")
    return out


def summarize(r):
    """(rows, findings) for the summary table and the findings list."""
    b, c = r["bands"], r["counts"]
    rows = [
        ("7 quantile bands", "quadratic, 3 levels" if label.startswith("quantile") else "quadratic", label,
         f"80% band covers {v['coverage_low_noise']:.0%} (low noise), {v['coverage_high_noise']:.0%} (high noise)")
        for label, v in b["runs"].items()
    ] + [
        ("7 counts", "log-linear" if "log" in label else "linear", label,
         f"rate error {v['mean_relative_error_to_true_rate']:.1%}, negative rates {v['negative_rate_fraction']:.1%}")
        for label, v in c["runs"].items()
    ]
    (ql, q), (ml, m) = b["runs"].items()
    (pl, p), (sl, s) = c["runs"].items()
    findings = [
        f"Prediction bands on noise that grows with x: the quantile band covers {q['coverage_low_noise']:.0%} / "
        f"{q['coverage_high_noise']:.0%} of test points where the noise is low / high (nominal 80%); the mse ± 1.28 sd band "
        f"covers {m['coverage_low_noise']:.0%} / {m['coverage_high_noise']:.0%}.",
        f"Poisson counts (mean {c['mean_count']:.2f}): poisson_nll on the log-rate is {p['mean_relative_error_to_true_rate']:.1%} "
        f"off the true rate on average; mse on the counts is {s['mean_relative_error_to_true_rate']:.1%} off and predicts a "
        f"negative rate for {s['negative_rate_fraction']:.1%} of test points.",
    ]
    return rows, findings


def report_section(r, table):
    """Section 7 of the report (``table`` is the report's table helper)."""
    import html

    b, c = r["bands"], r["counts"]
    band_rows = [
        (html.escape(label), f"{v['coverage_all']:.1%}", f"{v['coverage_low_noise']:.1%}", f"{v['coverage_high_noise']:.1%}",
         f"{v['mean_width_low_noise']:.2f}", f"{v['mean_width_high_noise']:.2f}")
        for label, v in b["runs"].items()
    ]
    count_rows = [
        (html.escape(label), f"{v['mean_relative_error_to_true_rate']:.1%}", f"{v['negative_rate_fraction']:.1%}",
         f"{v['test_poisson_nll']:.4f}")
        for label, v in c["runs"].items()
    ]
    return [
        "<h2>7. Prediction bands (<code>quantile</code>) and counts (<code>poisson_nll</code>)</h2>",
        f"<p>y = 2 + 3x + (0.2 + 1.8x)ε with x uniform on [0, 1]: the noise grows tenfold across the range. "
        f"{b['n']} training and {b['n']} test points, a model quadratic in x, {b['steps']} full-batch Adam steps. "
        "An 80 % band should hold 80 % of test points in each half of the range, not only on average.</p>",
        table(("band", "coverage", "coverage x < 0.5", "coverage x ≥ 0.5", "width x < 0.5", "width x ≥ 0.5"), band_rows,
              num_cols=(1, 2, 3, 4, 5)),
        f"<p>Poisson counts with a log-linear rate (mean count {c['mean_count']:.2f}, max {c['max_count']}), "
        f"{c['n']} training and test points. The test Poisson NLL scores negative rates as 10<sup>-6</sup>.</p>",
        table(("model", "mean relative error to the true rate", "negative predicted rates", "test Poisson NLL"), count_rows,
              num_cols=(1, 2, 3)),
    ]
