"""The demo's class-imbalance section: 1 positive in 50, a logistic model trained with
``binary_cross_entropy``, ``binary_cross_entropy(pos_weight=49)`` and ``sigmoid_focal``,
compared on test average precision, log-loss and calibration (ECE), all measured in the run.

The model is linear in 10 Gaussian features (positives shifted by a random direction), trained
full-batch with Adam on the closed-form gradient each loss returns (``loss.value_and_grad``).
"""

from __future__ import annotations

import numpy as np

import losskit as lk

from ._nn import Adam, expected_calibration_error, sigmoid

RATIO = 50
LOSSES = (
    ("binary_cross_entropy", "binary_cross_entropy", {}),
    ("binary_cross_entropy(pos_weight=49)", "binary_cross_entropy", {"pos_weight": float(RATIO - 1)}),
    ("sigmoid_focal(alpha=0.25, gamma=2)", "sigmoid_focal", {"alpha": 0.25, "gamma": 2.0}),
)


def average_precision(scores, labels) -> float:
    """Area under the precision-recall curve as the mean precision at each positive
    (scikit-learn's ``average_precision_score`` without ties)."""
    order = np.argsort(-scores, kind="stable")
    hits = labels[order] > 0.5
    if not hits.any():
        return 0.0
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(np.mean(precision[hits]))


def data(rng, n, d=10, sep=1.6):
    direction = rng.normal(size=d)
    direction *= sep / np.linalg.norm(direction)
    y = (rng.random(n) < 1.0 / RATIO).astype(float)
    x = rng.normal(size=(n, d)) + y[:, None] * direction
    return x, y


def _train(x, y, loss, options, steps, lr=0.05):
    w = np.zeros(x.shape[1])
    b = np.array([float(lk.binary_cross_entropy.baseline(y))])
    opt = Adam([w, b], lr=lr, steps=steps)
    for _ in range(steps):
        _, g = loss.value_and_grad(x @ w + b[0], y, **options)
        opt.step([x.T @ g, np.array([g.sum()])])
    return w, b[0]


def run(rng, quick: bool, progress):
    n = 4000 if quick else 20000
    steps = 150 if quick else 400
    x, y = data(rng, 2 * n)
    xtr, ytr, xte, yte = x[:n], y[:n], x[n:], y[n:]
    progress.start("imbalance", f"class imbalance 1:{RATIO}", len(LOSSES))
    runs = {}
    for i, (label, name, options) in enumerate(LOSSES):
        w, b = _train(xtr, ytr, lk.registry[name], options, steps)
        z = xte @ w + b
        p = sigmoid(z)
        runs[label] = {
            "test_average_precision": average_precision(z, yte),
            "test_log_loss": float(lk.binary_cross_entropy(z, yte)),
            "test_ece": float(expected_calibration_error(np.stack([1 - p, p], axis=1), yte.astype(int))[0]),
            "mean_predicted_positive_rate": float(p.mean()),
        }
        progress.update("imbalance", i + 1, label)
    return {"ratio": RATIO, "n_train": n, "n_test": n, "n_train_positives": int(ytr.sum()), "test_positive_rate": float(yte.mean()),
            "steps": steps, "runs": runs}


def summarize(r):
    """(rows, finding) for the summary table and the findings list."""
    rows = [
        ("6 imbalance", f"logistic, 1:{r['ratio']}", label,
         f"AP {v['test_average_precision']:.3f}, log-loss {v['test_log_loss']:.3f}, ECE {v['test_ece']:.3f}")
        for label, v in r["runs"].items()
    ]
    parts = ", ".join(
        f"{label}: AP {v['test_average_precision']:.3f}, ECE {v['test_ece']:.3f}, mean predicted rate {v['mean_predicted_positive_rate']:.3f}"
        for label, v in r["runs"].items()
    )
    finding = (
        f"Class imbalance ({r['n_train_positives']} positives in {r['n_train']} training samples, test positive rate "
        f"{r['test_positive_rate']:.3f}): {parts}."
    )
    return rows, finding


def report_section(r, table):
    """Section 6 of the report (``table`` is the report's table helper)."""
    import html

    rows = [
        (html.escape(label), f"{v['test_average_precision']:.3f}", f"{v['test_log_loss']:.3f}", f"{v['test_ece']:.3f}",
         f"{v['mean_predicted_positive_rate']:.3f}")
        for label, v in r["runs"].items()
    ]
    return [
        f"<h2>6. Class imbalance 1:{r['ratio']}: <code>binary_cross_entropy</code>, <code>pos_weight</code>, <code>sigmoid_focal</code></h2>",
        f"<p>{r['n_train']} training points of which {r['n_train_positives']} are positive; a logistic model on 10 Gaussian "
        f"features, {r['steps']} full-batch Adam steps per loss. Test positive rate {r['test_positive_rate']:.3f}: a calibrated "
        "model's mean predicted rate is close to it. Average precision (AP) ranks; log-loss and ECE measure calibration.</p>",
        table(("loss", "test AP", "test log-loss", "test ECE", "mean predicted rate"), rows, num_cols=(1, 2, 3, 4)),
    ]
