"""``report.html``: one self-contained page (plots embedded as PNG) from a demo run."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from . import _imbalance, _segmentation, _tails

COLORS = {"mse": "#d62728", "mae": "#2ca02c", "huber": "#1f77b4"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_regression(reg):
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    x, y, y_clean, out = reg["x"], reg["y"], reg["y_clean"], reg["outliers"]
    line = np.linspace(x.min(), x.max(), 2)
    inlier = np.ones(len(x), bool)
    inlier[out] = False
    for ax, data, ys in ((axes[0], "clean", y_clean), (axes[1], "outliers", y)):
        ax.scatter(x[inlier], ys[inlier], s=10, c="0.6", label="data")
        if data == "outliers":
            ax.scatter(x[out], ys[out], s=22, marker="x", c="k", label="outliers")
        ax.plot(line, reg["true_slope"] * line + reg["true_intercept"], "k--", lw=1.5, label=f"true (slope {reg['true_slope']:.1f})")
        for (name, d), f in reg["fits"].items():
            if d == data:
                ax.plot(line, f["slope"] * line + f["intercept"], c=COLORS.get(name), lw=2, label=f"{name}: slope {f['slope']:.2f}")
        ax.set_title(f"linear fit, {data} data")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.legend(fontsize=8, loc="upper left")
    m = reg["mlp"]
    ax = axes[2]
    inl = np.ones(len(m["x"]), bool)
    inl[m["outliers"]] = False
    ax.scatter(m["x"][inl], m["y"][inl], s=10, c="0.6", label="data")
    ax.scatter(m["x"][~inl], m["y"][~inl], s=22, marker="x", c="k", label="outliers")
    ax.plot(m["grid"], m["truth"], "k--", lw=1.5, label="true curve")
    for name, f in m["fits"].items():
        ax.plot(m["grid"], f["prediction"], c=COLORS.get(name), lw=2, label=f"{name}: RMSE {f['rmse_to_truth']:.2f}")
    ax.set_title("MLP 1-32-1, outlier data")
    ax.set_xlabel("x")
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def plot_curves(raw):
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    reg = raw["regression"]
    ax = axes[0]
    for (name, d), f in reg["fits"].items():
        if d == "outliers":
            ax.plot(f["curve"] / f["curve"][0], c=COLORS.get(name), label=name)
    ax.set_yscale("log")
    ax.set_title("1 linear regression (outliers)\nloss / initial loss")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(raw["binary"]["curve"], c="#9467bd")
    ax.set_yscale("log")
    ax.set_title("2 binary_cross_entropy\n(train)")
    ax = axes[2]
    for ls, r in raw["multiclass"]["runs"].items():
        ax.plot(r["curve"], label=f"label_smoothing={ls}")
    ax.set_title("3 cross_entropy\n(train, noisy labels)")
    ax.legend(fontsize=8)
    ax = axes[3]
    for label, st in raw["distillation"]["students"].items():
        ax.plot(st["curve"], label=label)
    ax.set_yscale("log")
    ax.set_title("4 student training loss")
    ax.legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    return _png(fig)


def _reliability(ax, table, title, ece):
    conf = np.array([t[0] for t in table])
    acc = np.array([t[1] for t in table])
    n = np.array([t[2] for t in table])
    bins = len(table)
    centers = (np.arange(bins) + 0.5) / bins
    has = n > 0
    ax.bar(centers[has], acc[has], width=1.0 / bins, edgecolor="k", color="#1f77b4", alpha=0.75, label="accuracy")
    lo = np.minimum(acc[has], conf[has])
    ax.bar(centers[has], np.abs(conf[has] - acc[has]), bottom=lo, width=1.0 / bins, color="#d62728", alpha=0.3,
           edgecolor="#d62728", hatch="//", label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nECE {ece:.3f}")
    ax.legend(fontsize=8, loc="upper left")


def plot_reliability(raw):
    plt = _plt()
    runs = raw["multiclass"]["runs"]
    fig, axes = plt.subplots(1, len(runs) + 1, figsize=(14, 4.2))
    for ax, (ls, r) in zip(axes, runs.items()):
        _reliability(ax, r["reliability"], f"cross_entropy, label_smoothing={ls}", r["test_ece"])
    b = raw["binary"]
    _reliability(axes[-1], b["reliability"], "binary_cross_entropy (two moons)", b["test_ece"])
    fig.tight_layout()
    return _png(fig)


def plot_binary(b):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.4))
    gx, gy, gp = b["grid"]
    cs = ax.contourf(gx, gy, gp, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.6)
    ax.contour(gx, gy, gp, levels=[0.5], colors="k", linewidths=1.5)
    ax.scatter(b["x"][:, 0], b["x"][:, 1], c=b["y"], cmap="RdBu_r", s=10, edgecolors="k", linewidths=0.3)
    fig.colorbar(cs, ax=ax, label="P(class 1)")
    ax.set_title("MLP trained with binary_cross_entropy")
    return _png(fig)


def plot_distillation(d):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    labels = list(d["students"])
    acc = [d["students"][k]["test_accuracy"] for k in labels]
    ax.barh(range(len(labels)), acc, color=["0.6", "#1f77b4", "#2ca02c"][: len(labels)])
    for i, a in enumerate(acc):
        ax.text(a + 0.003, i, f"{100 * a:.1f}%", va="center", fontsize=9)
    ax.axvline(d["teacher_test_accuracy"], c="k", ls="--", label=f"teacher {100 * d['teacher_test_accuracy']:.1f}%")
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    lo = min(acc + [d["teacher_test_accuracy"]])
    ax.set_xlim(max(0.0, lo - 0.1), 1.0)
    ax.set_xlabel("student test accuracy")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _png(fig)


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em} th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block;margin:.6em 0} code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
.meta{color:#666;font-size:.9em} ul.findings li{margin:.3em 0}
"""


def _table(header, rows, num_cols=()):
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = []
    for r in rows:
        cells = "".join(
            f"<td class='num'>{html.escape(str(c))}</td>" if i in num_cols else f"<td>{html.escape(str(c))}</td>" for i, c in enumerate(r)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{h}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(b64, alt):
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{b64}'>"


def write_report(path, raw, summary) -> Path:
    path = Path(path)
    reg, b, mc, d = raw["regression"], raw["binary"], raw["multiclass"], raw["distillation"]
    s = summary
    f3 = lambda v: f"{v:.3f}"  # noqa: E731
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731

    reg_rows = []
    for (name, data), f in reg["fits"].items():
        opts = ", ".join(f"{k}={v}" for k, v in f["options"].items())
        reg_rows.append((f"{name}({opts})" if opts else name, data, f3(f["slope"]), f3(f["intercept"]), f3(f["slope_error"])))
    mlp_rows = [(name, f3(f["rmse_to_truth"])) for name, f in reg["mlp"]["fits"].items()]
    mc_rows = [
        (ls, pct(r["train_accuracy"]), pct(r["test_accuracy"]), f3(r["test_nll"]), f3(r["test_ece"]), f3(r["mean_confidence"]))
        for ls, r in mc["runs"].items()
    ]
    st_rows = [
        (label, st["n_inputs"], st["temperature"], pct(st["test_accuracy"]), pct(st["agreement_with_teacher"]), f3(st["kl_teacher_student"]))
        for label, st in d["students"].items()
    ]
    settings = ", ".join(f"{k}={v}" for k, v in s["settings"].items())
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>losskit demo report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>losskit demo report</h1>",
        f"<p class='meta'>losskit {html.escape(s['losskit_version'])}, NumPy {html.escape(s['numpy_version'])}, "
        f"seed {s['seed']}{' (quick settings)' if s['quick'] else ''}; training took {s['train_seconds']:.1f} s. "
        "Every model below is trained with plain NumPy: losskit returns the gradient of the loss with respect to "
        "the model's outputs in closed form (<code>loss.value_and_grad</code>) and a hand-written backward pass "
        "carries it through the layers. All numbers on this page were measured in this run.</p>",
        "<h2>Findings</h2><ul class='findings'>",
        *(f"<li>{html.escape(t)}</li>" for t in s["findings"]),
        "</ul>",
        "<h2>Summary</h2>",
        _table(("experiment", "model", "loss", "result"), s["rows"]),
        "<h2>1. Regression with outliers: <code>mse</code>, <code>mae</code>, <code>huber</code></h2>",
        f"<p>y = {reg['true_slope']:g}·x + {reg['true_intercept']:g} + noise, {reg['n']} points; in the outlier data "
        f"{reg['n_outliers']} points with x &gt; 0 read 8 to 14 units low. The same linear model is fitted with each loss "
        "(full-batch Adam). The squared error lets the few large residuals dominate its gradient and tilts the line; "
        "mae's gradient is bounded by 1 and huber's by delta, so the outliers pull much less.</p>",
        _img(plot_regression(reg), "fitted lines with and without outliers"),
        _table(("loss", "data", "slope", "intercept", "|slope - true|"), reg_rows, num_cols=(2, 3, 4)),
        "<p>Small MLP on a curved target with the same kind of outliers: RMSE of the fitted curve to the true curve.</p>",
        _table(("loss", "RMSE to true curve"), mlp_rows, num_cols=(1,)),
        "<h2>Loss curves</h2>",
        _img(plot_curves(raw), "training loss curves"),
        "<h2>2. Binary classification: <code>binary_cross_entropy</code></h2>",
        f"<p>Two moons, {b['n_train']} training and {b['n_test']} test points; the network outputs one logit per point. "
        f"Train accuracy {pct(b['train_accuracy'])}, test accuracy {pct(b['test_accuracy'])}, test log-loss "
        f"{f3(b['test_log_loss'])}, test ECE {f3(b['test_ece'])}.</p>",
        _img(plot_binary(b), "decision boundary"),
        "<h2>3. Multi-class: <code>cross_entropy</code> with and without label smoothing</h2>",
        f"<p>{mc['k']} Gaussian classes in {mc['d']} dimensions, {mc['n_train']} training points of which "
        f"{mc['n_wrong_labels']} carry a wrong label; {mc['n_test']} clean test points. Softmax regression trained to "
        "convergence. ECE (expected calibration error, 15 equal-width bins) measures the gap between the predicted "
        "confidence and the accuracy actually reached.</p>",
        _table(("label_smoothing", "train acc", "test acc", "test NLL", "test ECE", "mean confidence"), mc_rows, num_cols=(1, 2, 3, 4, 5)),
        "<p>Reliability diagrams (test set): bars below the diagonal are overconfident bins, above it underconfident.</p>",
        _img(plot_reliability(raw), "reliability diagrams"),
        "<h2>4. Distillation: <code>kl_divergence</code></h2>",
        f"<p>A teacher MLP trained on {d['n_teacher_labels']} labels reaches {pct(d['teacher_test_accuracy'])} test accuracy. "
        f"Small students are trained on few labels, or on the teacher's distribution softened by T = {d['temperature']:g} "
        "with T²·KL(teacher_T ‖ student_T) (Hinton et al., 2015), the temperature applied by the chain rule.</p>",
        _table(("student", "inputs", "T", "test acc", "agrees with teacher", "KL(teacher ‖ student)"), st_rows, num_cols=(1, 2, 3, 4, 5)),
        _img(plot_distillation(d), "student accuracy"),
        *_boosting_section(s["boosting"]),
        *_imbalance.report_section(s["imbalance"], _table),
        *_tails.report_section(s["tails"], _table),
        *_segmentation.report_section(s["segmentation"], _table),
        f"<h2>Settings</h2><p class='meta'>{html.escape(settings)}</p>",
        "<p class='meta'>Numbers in machine-readable form: <code>results.json</code> next to this file.</p>",
        "</body></html>",
    ]
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _boosting_section(bo):
    """Section 5: losskit losses as custom objectives of the installed boosting library."""
    if bo["library"] is None:
        return ["<h2>5. Gradient boosting</h2>", f"<p>Skipped: {html.escape(bo['reason'])}.</p>"]
    o = bo["outliers"]
    parts = [
        f"<h2>5. Gradient boosting with {html.escape(bo['library'])}: <code>lk.boosting</code></h2>",
        f"<p>The same losses as custom objectives of {html.escape(bo['library'])} (<code>lk.boosting.{html.escape(bo['library'])}(loss)</code>: "
        f"the loss's closed-form gradient and Hessian), {o['rounds']} rounds of depth-3 trees. {o['n_outliers']} of "
        f"{o['n_train']} training targets read 10 to 30 units high; the error is measured on clean test targets.</p>",
        _table(("objective", "RMSE to clean test targets"), [(k, f"{v:.3f}") for k, v in o["rmse_clean_test"].items()], num_cols=(1,)),
    ]
    q = bo["quantiles"]
    if q:
        parts += [
            f"<p>Quantile objectives on heteroscedastic data ({q['n_train']} training points, {q['rounds']} rounds): the "
            "fraction of test targets below each predicted quantile, against its nominal level.</p>",
            _table(("level", "measured fraction below"), [(t, f"{100 * v:.1f}%") for t, v in q["fraction_below"].items()], num_cols=(1,)),
        ]
    else:
        parts.append("<p class='meta'>The quantile experiment runs once the <code>quantile</code> loss is registered.</p>")
    return parts
