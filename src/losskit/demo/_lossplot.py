"""Value, gradient and Hessian diagonal of a registered loss over a range of inputs: the figure
of ``losskit show NAME --plot FILE.png`` and of the documentation pages.

The range is chosen from the loss's declaration (no per-loss table): residuals for
regression-style losses, logits for ``pred_name == "logits"``, probabilities for
``pred_name == "probs"``, one logit of a 3-class row for losses over a class axis, and for
losses of several inputs or over a set, one entry of the first input of the declared sample
(the total loss and that entry's gradient). A loss without a Hessian gets an empty panel.
"""

from __future__ import annotations

import numpy as np

CLASS_AXIS_TARGET = (0.6, 0.3, 0.1)


def curves(loss, n: int = 401, **options) -> dict:
    """``{"xlabel", "x", "series": [(label, value, grad, hess), ...]}`` with per-sample
    (``reduction="none"``) values and the derivatives with respect to the varied input."""
    spec = loss.spec
    series = []

    def add(label, pred, target, pick=None, validate=True):
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.asarray(loss(pred, target, reduction="none", validate=validate, **options), dtype=float)
            g, h = loss.grad_hess(pred, target, reduction="none", validate=validate, **options)
        g, h = np.asarray(g, dtype=float), np.asarray(h, dtype=float)
        if pick is not None:
            g, h = g[:, pick], h[:, pick]
        series.append((label, value, g, h))

    if len(spec.inputs) > 1 or spec.kind == "set" or spec.vjp_kernel is not None:
        arrays = [np.array(a, dtype=float) if np.asarray(a).dtype.kind == "f" else a for a in spec.checks.sample(np.random.default_rng(0), spec.checks.shape, {})]
        base = float(arrays[0].flat[0])
        x = np.linspace(-3.0, 3.0, n)
        value, grad = np.empty(n), np.empty(n)
        for i, dx in enumerate(x):
            arrays[0].flat[0] = base + dx
            v, g = loss.value_and_grad(*arrays, reduction="sum", **options)
            value[i], grad[i] = float(v), float(np.asarray(g[0] if isinstance(g, tuple) else g).flat[0])
        series.append((f"declared sample, {spec.inputs[0]}[0] = {base:.2f} + x", value, grad, np.full(n, np.nan)))
        return {"x": x, "xlabel": f"shift x of one entry of `{spec.inputs[0]}`", "series": series}
    if spec.kind == "class_axis":
        x = np.linspace(-6.0, 6.0, n)
        z = np.zeros((n, 3))
        z[:, 0] = x
        try:
            add("target (0.6, 0.3, 0.1)", z, np.tile(np.asarray(CLASS_AXIS_TARGET), (n, 1)), pick=0)
        except ValueError:
            pass  # a loss on a single true class (multi_margin, sparsemax) rejects soft labels
        add("target one-hot class 0", z, np.tile(np.asarray((1.0, 0.0, 0.0)), (n, 1)), pick=0)
        xlabel = "logit $z_0$ of a 3-class row ($z_1 = z_2 = 0$)"
    elif spec.pred_name == "probs":
        x = np.linspace(1e-3, 1.0 - 1e-3, n)
        for y in (1.0, 0.0):
            add(f"target y = {y:g}", x, np.full(n, y))
        xlabel = "predicted probability $p$"
    elif spec.pred_name == "logits":
        x = np.linspace(-6.0, 6.0, n)
        for y in (1.0, 0.0):
            add(f"target y = {y:g}", x, np.full(n, y))
        xlabel = "logit $z$"
    elif _pm1_targets(spec):
        x = np.linspace(-6.0, 6.0, n)
        for y in (1.0, -1.0):
            add(f"target y = {y:g}", x, np.full(n, y))
        xlabel = "score $p$"
    elif spec.pred_name.startswith("log_"):  # log-link losses: targets > 0 (counts, amounts)
        x = np.linspace(-3.0, 3.0, n)
        for y in (1.0, 3.0):
            add(f"target y = {y:g}", x, np.full(n, y))
        xlabel = f"log-mean `{spec.pred_name}`"
    else:
        x = np.linspace(-3.0, 3.0, n)
        add("target y = 0", x, np.zeros(n), validate=False)  # outside a loss's domain (msle: p ≤ −1) the curve has a gap
        xlabel = "residual $r = p - y$"
    return {"x": x, "xlabel": xlabel, "series": series}


def _pm1_targets(spec) -> bool:
    """Whether the declared sample's targets are labels ±1 (soft margin, hinge)."""
    if spec.checks is None or spec.target is None:
        return False
    y = np.asarray(spec.checks.sample(np.random.default_rng(0), spec.checks.shape, {})[1])
    return y.size > 0 and set(np.unique(y).tolist()) <= {-1.0, 1.0}


def title(loss, **options) -> str:
    opts = {**dict(loss.spec.options), **options}
    shown = ", ".join(f"{k}={v!r}" for k, v in opts.items() if not (v is None or k == "axis"))
    return f"{loss.spec.name}({shown})" if shown else loss.spec.name


def plot_loss(loss, path, *, dpi: int = 110, **options):
    """Write a 3-panel PNG (value, gradient, Hessian diagonal) to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    data = curves(loss, **options)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    total = len(loss.spec.inputs) > 1 or loss.spec.kind == "set"
    names = ("value (total)" if total else "value (per sample)", "gradient", "Hessian diagonal")
    for i, ax in enumerate(axes):
        for label, *ys in data["series"]:
            ax.plot(data["x"], ys[i], lw=2, label=label)
        ax.axhline(0.0, c="0.7", lw=0.8, zorder=0)
        ax.set_title(names[i] if i < 2 or loss.spec.hessian_kind != "none" else "no closed-form Hessian")
        ax.set_xlabel(data["xlabel"])
        ax.grid(alpha=0.3)
    if len(data["series"]) > 1:
        axes[0].legend(fontsize=8)
    fig.suptitle(title(loss, **options), y=1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path
