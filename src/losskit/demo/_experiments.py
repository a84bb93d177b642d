"""The four demo experiments. Each trains small NumPy models with losskit's closed-form
gradients and returns measured numbers (and the arrays the report plots). Nothing here is
hard-coded but the data-generating process and the training settings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import losskit as lk

from ._nn import MLP, Adam, expected_calibration_error, sigmoid, softmax

TRUE_SLOPE = 2.0
TRUE_INTERCEPT = 0.5


@dataclass(frozen=True)
class Settings:
    """Sizes and step counts. ``quick`` settings are for CI and tests (a few seconds)."""

    n_regression: int = 200
    regression_steps: int = 1500
    mlp_regression_steps: int = 2500
    n_binary: int = 400
    binary_steps: int = 2000
    n_multiclass_train: int = 150
    n_student_labels: int = 300
    n_teacher_train: int = 2000
    n_transfer: int = 1500
    n_test: int = 2000
    multiclass_steps: int = 1500
    student_steps: int = 1500

    @classmethod
    def quick(cls) -> "Settings":
        return cls(
            n_regression=120,
            regression_steps=600,
            mlp_regression_steps=800,
            n_binary=200,
            binary_steps=600,
            n_multiclass_train=150,
            n_student_labels=200,
            n_teacher_train=1000,
            n_transfer=600,
            n_test=1000,
            multiclass_steps=500,
            student_steps=500,
        )


class NullProgress:
    """Progress protocol: ``start(key, description, total)``, ``update(key, completed, text)``."""

    def start(self, key, description, total):
        pass

    def update(self, key, completed, text=""):
        pass


def train(model, x, target, loss, steps, lr, progress, key, outputs=lambda o: o, every=25, **options):
    """Full-batch Adam on ``loss(outputs(model(x)), target, **options)``; returns the loss curve.

    The only derivative that is not written in :mod:`._nn` comes from losskit:
    ``loss.value_and_grad`` gives d loss / d outputs in closed form."""
    opt = Adam(model.params, lr=lr, steps=steps)
    curve = np.empty(steps)
    for t in range(steps):
        out, acts = model.forward(x, keep=True)
        value, g = loss.value_and_grad(outputs(out), target, **options)
        curve[t] = value
        opt.step(model.backward(acts, g.reshape(out.shape)))
        if (t + 1) % every == 0 or t + 1 == steps:
            progress.update(key, t + 1, f"{loss.__name__} {value:.4f}")
    return curve


# --- 1. regression with outliers -----------------------------------------------------------


def regression_data(rng, n, outlier_frac=0.12, fn=None, x_range=(-2.0, 2.0), noise=0.3):
    """``y = fn(x) + noise``; a fraction of the points with x > 0 get a gross error (a sensor
    that reads 8 to 14 units low), which pulls a least-squares fit down on the right."""
    fn = fn or (lambda x: TRUE_SLOPE * x + TRUE_INTERCEPT)
    x = rng.uniform(*x_range, n)
    y_clean = fn(x) + rng.normal(0.0, noise, n)
    y = y_clean.copy()
    k = int(round(outlier_frac * n))
    idx = rng.choice(np.flatnonzero(x > 0), k, replace=False)
    y[idx] -= rng.uniform(8.0, 14.0, k)
    return x, y_clean, y, idx


REGRESSION_LOSSES = (("mse", {}), ("mae", {}), ("huber", {"delta": 1.0}))


def regression(rng, s: Settings, progress):
    x, y_clean, y, idx = regression_data(rng, s.n_regression)
    X = x[:, None]
    init = rng.integers(2**31)
    fits = {}
    for name, opts in REGRESSION_LOSSES:
        loss = lk.registry[name]
        for data_name, target in (("outliers", y), ("clean", y_clean)):
            key = f"reg-{name}-{data_name}"
            progress.start(key, f"linear fit, {name}, {data_name} data", s.regression_steps)
            model = MLP([1, 1], np.random.default_rng(init))
            curve = train(model, X, target, loss, s.regression_steps, 0.05, progress, key, lambda o: o[:, 0], **opts)
            slope, intercept = float(model.weights[0][0, 0]), float(model.biases[0][0])
            fits[(name, data_name)] = {
                "loss": name,
                "options": opts,
                "data": data_name,
                "slope": slope,
                "intercept": intercept,
                "slope_error": abs(slope - TRUE_SLOPE),
                "final_loss": float(curve[-1]),
                "curve": curve,
            }
    # a small MLP on a curved target with the same kind of outliers
    fn = lambda t: 2.0 * np.sin(1.5 * t) + 0.5 * t  # noqa: E731
    xm, ym_clean, ym, idx_m = regression_data(rng, s.n_regression, fn=fn, x_range=(-2.5, 2.5))
    grid = np.linspace(-2.5, 2.5, 400)
    init = rng.integers(2**31)
    mlp_fits = {}
    for name, opts in REGRESSION_LOSSES:
        loss = lk.registry[name]
        key = f"mlp-{name}"
        progress.start(key, f"MLP 1-32-1 fit, {name}, outliers", s.mlp_regression_steps)
        model = MLP([1, 32, 1], np.random.default_rng(init))
        curve = train(model, xm[:, None], ym, loss, s.mlp_regression_steps, 0.02, progress, key, lambda o: o[:, 0], **opts)
        pred = model.forward(grid[:, None])[:, 0]
        mlp_fits[name] = {
            "loss": name,
            "rmse_to_truth": float(np.sqrt(np.mean((pred - fn(grid)) ** 2))),
            "curve": curve,
            "prediction": pred,
        }
    return {
        "true_slope": TRUE_SLOPE,
        "true_intercept": TRUE_INTERCEPT,
        "n": s.n_regression,
        "n_outliers": len(idx),
        "x": x,
        "y": y,
        "y_clean": y_clean,
        "outliers": idx,
        "fits": fits,
        "mlp": {"x": xm, "y": ym, "outliers": idx_m, "grid": grid, "truth": fn(grid), "fits": mlp_fits},
    }


# --- 2. binary classification ------------------------------------------------------------


def two_moons(rng, n, noise=0.2):
    n1 = n // 2
    t = rng.uniform(0.0, np.pi, n)
    upper = np.c_[np.cos(t[:n1]), np.sin(t[:n1])]
    lower = np.c_[1.0 - np.cos(t[n1:]), 0.5 - np.sin(t[n1:])]
    x = np.r_[upper, lower] + rng.normal(0.0, noise, (n, 2))
    y = np.r_[np.zeros(n1), np.ones(n - n1)]
    perm = rng.permutation(n)
    return x[perm], y[perm]


def binary(rng, s: Settings, progress):
    x, y = two_moons(rng, s.n_binary)
    xt, yt = two_moons(rng, s.n_test)
    key = "binary"
    progress.start(key, "MLP 2-16-16-1, binary_cross_entropy", s.binary_steps)
    model = MLP([2, 16, 16, 1], rng)
    curve = train(model, x, y, lk.binary_cross_entropy, s.binary_steps, 0.02, progress, key, lambda o: o[:, 0])
    zt = model.forward(xt)[:, 0]
    p = sigmoid(zt)
    ece, table = expected_calibration_error(np.c_[1 - p, p], yt.astype(int))
    lo, hi = x.min(axis=0) - 0.5, x.max(axis=0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 120), np.linspace(lo[1], hi[1], 120))
    grid_p = sigmoid(model.forward(np.c_[gx.ravel(), gy.ravel()])[:, 0]).reshape(gx.shape)
    return {
        "n_train": len(y),
        "n_test": len(yt),
        "train_accuracy": float(np.mean((model.forward(x)[:, 0] > 0) == (y == 1))),
        "test_accuracy": float(np.mean((zt > 0) == (yt == 1))),
        "test_log_loss": float(lk.binary_cross_entropy(zt, yt)),
        "test_ece": ece,
        "reliability": table,
        "curve": curve,
        "x": x,
        "y": y,
        "grid": (gx, gy, grid_p),
    }


# --- 3. multi-class, with and without label smoothing --------------------------------------


def gaussian_classes(rng, n, means, scale=1.0):
    k = len(means)
    y = rng.integers(0, k, n)
    x = means[y] + rng.normal(0.0, scale, (n, means.shape[1]))
    return x, y


def make_means(rng, k=5, d=20, sep=2.5):
    m = rng.normal(0.0, 1.0, (k, d))
    return sep * m / np.linalg.norm(m, axis=1, keepdims=True)


def _eval_multiclass(logits, labels):
    probs = softmax(logits)
    ece, table = expected_calibration_error(probs, labels)
    return {
        "test_accuracy": float(np.mean(probs.argmax(-1) == labels)),
        "test_nll": float(lk.cross_entropy(logits, labels)),
        "test_ece": ece,
        "mean_confidence": float(probs.max(-1).mean()),
        "reliability": table,
    }


def multiclass(rng, s: Settings, progress, k=5, d=20, label_noise=0.2):
    """Softmax regression on a small training set whose labels are partly wrong (a fraction
    ``label_noise`` replaced by random classes), the setting where an unregularised
    cross-entropy fit becomes overconfident; clean test labels."""
    means = make_means(rng, k, d)
    x, y_true = gaussian_classes(rng, s.n_multiclass_train, means)
    flip = rng.random(len(y_true)) < label_noise
    y = np.where(flip, rng.integers(0, k, len(y_true)), y_true)
    xt, yt = gaussian_classes(rng, s.n_test, means)
    init = rng.integers(2**31)
    runs = {}
    for smoothing in (0.0, 0.1):
        key = f"ce-{smoothing}"
        progress.start(key, f"softmax regression {d}->{k}, cross_entropy, label_smoothing={smoothing}", s.multiclass_steps)
        model = MLP([d, k], np.random.default_rng(init))
        curve = train(model, x, y, lk.cross_entropy, s.multiclass_steps, 0.01, progress, key, label_smoothing=smoothing)
        res = _eval_multiclass(model.forward(xt), yt)
        res.update(label_smoothing=smoothing, curve=curve, train_accuracy=float(np.mean(model.forward(x).argmax(-1) == y)))
        runs[smoothing] = res
    return {
        "k": k,
        "d": d,
        "n_train": len(y),
        "n_test": len(yt),
        "label_noise": label_noise,
        "n_wrong_labels": int(np.sum(y != y_true)),
        "runs": runs,
        "means": means,
    }


# --- 4. distillation with KL ---------------------------------------------------------------


def distillation(rng, s: Settings, progress, means, temperature=2.0):
    k, d = means.shape
    x_teacher, y_teacher = gaussian_classes(rng, s.n_teacher_train, means)
    x_small, y_small = gaussian_classes(rng, s.n_student_labels, means)
    x_transfer, _ = gaussian_classes(rng, s.n_transfer, means)  # unlabeled inputs
    xt, yt = gaussian_classes(rng, s.n_test, means)

    progress.start("teacher", f"teacher MLP {d}-64-{k} on {len(y_teacher)} labels, cross_entropy", s.multiclass_steps)
    teacher = MLP([d, 64, k], rng)
    train(teacher, x_teacher, y_teacher, lk.cross_entropy, s.multiclass_steps, 0.01, progress, "teacher")
    teacher_test = teacher.forward(xt)
    T = temperature

    def soft(xs):
        return softmax(teacher.forward(xs) / T)

    init = rng.integers(2**31)
    students = {}
    specs = (
        ("hard labels, cross_entropy", x_small, y_small, lk.cross_entropy, 1.0),
        ("teacher soft labels, kl_divergence", x_small, soft(x_small), lk.kl_divergence, T),
        ("soft labels + unlabeled transfer set, kl_divergence",
         np.r_[x_small, x_transfer], soft(np.r_[x_small, x_transfer]), lk.kl_divergence, T),
    )
    for i, (label, xs, target, loss, temp) in enumerate(specs):
        key = f"student-{i}"
        progress.start(key, f"student MLP {d}-8-{k}: {label}", s.student_steps)
        model = MLP([d, 8, k], np.random.default_rng(init))
        # Hinton et al. (2015): KL between distributions softened by T, scaled by T² so that
        # the gradient's size does not depend on T (see _Tempered).
        curve = train(model, xs, target, _Tempered(loss, temp), s.student_steps, 0.01, progress, key)
        logits = model.forward(xt)
        students[label] = {
            "loss": loss.__name__,
            "n_inputs": len(xs),
            "n_labels": len(y_small),
            "temperature": temp,
            "test_accuracy": float(np.mean(logits.argmax(-1) == yt)),
            "agreement_with_teacher": float(np.mean(logits.argmax(-1) == teacher_test.argmax(-1))),
            "kl_teacher_student": float(lk.kl_divergence(logits, softmax(teacher_test))),
            "curve": curve,
        }
    return {
        "temperature": T,
        "teacher_test_accuracy": float(np.mean(teacher_test.argmax(-1) == yt)),
        "n_teacher_labels": len(y_teacher),
        "students": students,
    }


class _Tempered:
    """``T² · loss(z / T, target)``; by the chain rule its gradient is ``T · loss.grad(z / T)``.
    ``T = 1`` is the loss itself."""

    def __init__(self, loss, temperature):
        self.loss, self.T = loss, temperature
        self.__name__ = loss.__name__

    def value_and_grad(self, z, target, **options):
        value, g = self.loss.value_and_grad(z / self.T, target, **options)
        return value * self.T**2, g * self.T
