"""The demo's segmentation section: a rare class that cross-entropy alone misses.

Synthetic images on a grid: a noisy background, large discs (a common class) and small 3×3
squares (a rare class, about 1 % of the pixels) that differ from the background only by a
faint shift in a second channel. A per-pixel softmax model on fixed local-mean features (a
tiny convolution with fixed 1×1, 3×3 and 5×5 box filters, only the 1×1 layer learned) is
trained full-batch with Adam on ``cross_entropy`` alone, and on ``cross_entropy + dice``
(multiclass, the batch as one set per class): Dice's per-class ratio gives the rare class the
weight of the common ones, where cross-entropy's per-pixel mean gives it 1 %. The test recall
and IoU per class are measured in the run.
"""

from __future__ import annotations

import numpy as np

import losskit as lk

from ._nn import Adam

CLASSES = ("background", "disc (common)", "square (rare)")
RARE = 2
LOSSES = ("cross_entropy", "cross_entropy + dice")


def _box(x, k):
    """Mean over a k×k window (zero padded) of the last two axes of ``x``."""
    r = k // 2
    pad = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(r + 1, r), (r + 1, r)])
    c = pad.cumsum(-2).cumsum(-1)  # summed-area table
    return (c[..., k:, k:] - c[..., :-k, k:] - c[..., k:, :-k] + c[..., :-k, :-k]) / (k * k)


def images(rng, n, size=32, noise=1.0):
    """(features (n, size, size, F), labels (n, size, size)): two noisy channels, their 3×3 and
    5×5 local means, and a constant."""
    labels = np.zeros((n, size, size), dtype=np.int64)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for _ in range(rng.integers(1, 3)):  # one or two discs
            cy, cx, r = rng.integers(6, size - 6), rng.integers(6, size - 6), rng.uniform(4.0, 7.0)
            labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        for _ in range(rng.integers(0, 3)):  # up to two small squares, on top
            y0, x0 = rng.integers(1, size - 4, 2)
            labels[i, y0 : y0 + 3, x0 : x0 + 3] = RARE
    # channel 0: the disc is bright; channel 1: the square is faintly bright
    channels = np.stack([(labels == 1) * 1.5, (labels == RARE) * 1.2], axis=1).astype(float)
    channels += noise * rng.standard_normal(channels.shape)
    feats = [channels, _box(channels, 3), _box(channels, 5)]
    x = np.concatenate(feats, axis=1)  # (n, 6, size, size)
    x = np.concatenate([x, np.ones_like(x[:, :1])], axis=1)
    return np.moveaxis(x, 1, -1), labels


def _train(x, y, with_dice, steps, lr=0.05):
    """Weights (F, C) of the per-pixel softmax model, trained on the whole batch."""
    w = np.zeros((x.shape[-1], len(CLASSES)))
    opt = Adam([w], lr=lr, steps=steps)
    flat = x.reshape(-1, x.shape[-1])
    for _ in range(steps):
        logits = x @ w  # (n, H, W, C)
        g = lk.cross_entropy.grad(logits, y, axis=-1, validate=False)
        if with_dice:  # dice's kernel is fastest with the class axis before the pixels
            by_class = np.ascontiguousarray(np.moveaxis(logits, -1, 1))
            g = g + np.moveaxis(lk.dice.grad(by_class, y, validate=False), 1, -1)
        opt.step([flat.T @ g.reshape(-1, len(CLASSES))])
    return w


def _scores(pred, y):
    out = {}
    for c, name in enumerate(CLASSES):
        p, t = pred == c, y == c
        inter = float(np.sum(p & t))
        out[name] = {
            "recall": inter / max(float(np.sum(t)), 1.0),
            "precision": inter / max(float(np.sum(p)), 1.0),
            "iou": inter / max(float(np.sum(p | t)), 1.0),
        }
    return out


def run(rng, quick: bool, progress):
    n = 24 if quick else 48
    steps = 150 if quick else 200
    xtr, ytr = images(rng, n)
    xte, yte = images(rng, n)
    progress.start("segmentation", "rare class: cross_entropy vs + dice", len(LOSSES))
    runs = {}
    for i, label in enumerate(LOSSES):
        w = _train(xtr, ytr, label != "cross_entropy", steps)
        runs[label] = _scores(np.argmax(xte @ w, axis=-1), yte)
        progress.update("segmentation", i + 1, label)
    fractions = [float(np.mean(ytr == c)) for c in range(len(CLASSES))]
    return {"n": n, "size": int(ytr.shape[-1]), "steps": steps, "class_fractions": fractions, "runs": runs}


def summarize(r):
    """(rows, findings) for the summary table and the findings list."""
    rare = CLASSES[RARE]
    rows = [
        ("8 segmentation", "per-pixel softmax", label,
         f"rare class recall {v[rare]['recall']:.0%}, IoU {v[rare]['iou']:.2f}; disc IoU {v[CLASSES[1]]['iou']:.2f}")
        for label, v in r["runs"].items()
    ]
    ce, dice = (r["runs"][k][rare] for k in LOSSES)
    findings = [
        f"Segmentation with a rare class ({r['class_fractions'][RARE]:.1%} of the pixels): cross_entropy alone finds "
        f"{ce['recall']:.0%} of its pixels (IoU {ce['iou']:.2f}); cross_entropy + dice finds {dice['recall']:.0%} "
        f"(IoU {dice['iou']:.2f})."
    ]
    return rows, findings


def report_section(r, table):
    """Section 8 of the report (``table`` is the report's table helper)."""
    import html

    rows = [
        (html.escape(label), html.escape(name), f"{s['recall']:.1%}", f"{s['precision']:.1%}", f"{s['iou']:.3f}")
        for label, v in r["runs"].items()
        for name, s in v.items()
    ]
    fr = ", ".join(f"{html.escape(name)} {f:.1%}" for name, f in zip(CLASSES, r["class_fractions"]))
    return [
        "<h2>8. Segmentation with a rare class: <code>cross_entropy</code> and <code>dice</code></h2>",
        f"<p>{r['n']} training and {r['n']} test images of {r['size']}×{r['size']} pixels, two noisy channels: large "
        "discs are bright in the first, small 3×3 squares faintly bright in the second. Pixel classes: "
        f"{fr}. A per-pixel softmax model on the channels and their 3×3 and 5×5 local means, {r['steps']} "
        "full-batch Adam steps on <code>cross_entropy</code>, or on <code>cross_entropy + dice</code> (multiclass "
        "Dice over the batch, each class's ratio counting equally). Test recall, precision and IoU per class "
        "(the arg-max class of each pixel).</p>",
        table(("loss", "class", "recall", "precision", "IoU"), rows, num_cols=(2, 3, 4)),
    ]
