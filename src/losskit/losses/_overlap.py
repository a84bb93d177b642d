"""The Tversky-family kernel shared by dice, jaccard and tversky (set-level, see ``_kinds``).

Per class c and set S: I = Σ w·min(p, t), P = Σ w·p, T = Σ w·t over the valid pixels of S,
score = (I + s) / max(I + α(P − I) + β(T − I) + s, eps); loss 1 − score (or −log max(score,
eps)), 0 where T = 0 (a class absent from the set, as in smp); NaN in T propagates.
Integer class ids are compared with the class index (a boolean mask), never one-hot floats.
"""

from __future__ import annotations

from .. import _validate
from .._array import backend, sigmoid_and_slope
from .._loss import Prepared, upcast_target

MODES = ("binary", "multilabel", "multiclass")


def _softmax(z, axis, xp):
    if backend(xp) == "torch":  # one fused kernel instead of five passes and two temporaries
        import torch

        return torch.softmax(z, dim=axis)
    m = xp.max(z, axis=axis, keepdims=True)
    e = xp.exp(z - xp.where(xp.isinf(m), xp.zeros_like(m), m))  # a NaN max propagates
    return e / xp.sum(e, axis=axis, keepdims=True)


def class_index(o, z, xp):
    shape = [1] * z.ndim
    shape[o["axis"]] = z.shape[o["axis"]]
    return xp.reshape(xp.arange(z.shape[o["axis"]]), tuple(shape))


def probabilities(z, o, xp):
    """p and, for sigmoid modes, dp/dz (None for softmax)."""
    if o["mode"] == "multiclass":
        return _softmax(z, o["axis"], xp), None
    return sigmoid_and_slope(z, xp=xp)


def to_logits(g, p, slope, o, xp):
    """Pull a gradient with respect to p back to the logits."""
    if slope is not None:
        return g * slope
    if backend(xp) == "torch":  # p (g − Σ g p) in one fused, differentiable kernel
        import torch

        return torch.ops.aten._softmax_backward_data(g, p, o["axis"] % p.ndim, p.dtype)
    return p * (g - xp.sum(g * p, axis=o["axis"], keepdims=True))


def sum_axes(o, ndim):
    """The axes summed into one set: every axis but the class axis (and the image axis)."""
    keep = set() if o["mode"] == "binary" else {o["axis"]}
    if o["per_image"] and ndim > 1:
        keep.add(0)
    return tuple([a for a in range(ndim) if a not in keep])


def per_pixel(v, o, ndim, xp):
    """Per-set values (shape (), (N,), (C,) or (N, C)) broadcast back over the pixels."""
    if v.ndim == 0:
        return v
    shape, dims = [1] * ndim, iter(v.shape)
    if o["per_image"] and ndim > 1:
        shape[0] = int(next(dims))
    if o["mode"] != "binary":
        shape[o["axis"]] = int(next(dims))
    return xp.reshape(v, tuple(shape))


def overlap_kernel(z, t, w, valid, o, xp, alpha, beta):
    p, slope = probabilities(z, o, xp)
    axes = sum_axes(o, z.ndim)
    # per-element multiplier of every sum: the weight, 0 outside ``valid`` (often pixel-shaped,
    # broadcast over the classes)
    scale = w
    if valid is not None:
        scale = xp.astype(valid, p.dtype) if scale is None else xp.where(valid, scale, 0.0)
    ids = o.get("_target") == "ids"
    if ids:
        # a boolean mask per class (1 byte a pixel and class), never a float one-hot
        eq = t == class_index(o, z, xp)
        if scale is None:
            inter = xp.sum(xp.where(eq, p, 0.0), axis=axes)
            sum_t = xp.astype(xp.count_nonzero(eq, axis=axes), p.dtype)
            sum_p = xp.sum(p, axis=axes)
        else:
            scale_t = xp.where(eq, scale, 0.0)
            inter, sum_t, sum_p = xp.sum(scale_t * p, axis=axes), xp.sum(scale_t, axis=axes), xp.sum(scale * p, axis=axes)
            del scale_t
    else:
        wsum = (lambda x: xp.sum(x, axis=axes)) if scale is None else (lambda x: xp.sum(scale * x, axis=axes))
        inter, sum_p, sum_t = wsum(xp.minimum(p, t)), wsum(p), wsum(t)
    s, eps = o["smooth"], o["eps"]
    den = (1.0 - alpha - beta) * inter + alpha * sum_p + beta * sum_t + s
    small = den <= eps  # NaN is not small: it propagates
    den_c = xp.where(small, eps, den)
    num = inter + s
    score = num / den_c
    absent = sum_t <= 0  # NaN in the target: not absent, the NaN propagates
    if o["log_loss"]:
        low = score <= eps
        values = -xp.log(xp.where(low, eps, score))
        d_score = xp.where(low, 0.0, -1.0 / xp.where(low, 1.0, score))
    else:
        values = 1.0 - score
        d_score = -xp.ones_like(score)
    values = xp.where(absent, 0.0, values)
    values, pull = _classes_and_focal(values, o, xp)

    def vjp(upstream):
        coef = xp.where(absent, 0.0, pull(upstream) * d_score)
        k = xp.where(small, 0.0, -coef * num / (den_c * den_c))
        d_inter = per_pixel(coef / den_c + (1.0 - alpha - beta) * k, o, z.ndim, xp)
        d_sum_p = per_pixel(alpha * k, o, z.ndim, xp)
        if ids:
            # d(p·[t = c])/dp = [t = c]. smp's |p − t| form gives ½ at a tie p_c = 1; through
            # the softmax that changes the gradient only by terms times the other classes'
            # probabilities, which are below the rounding unit there.
            g = xp.where(eq, d_inter + d_sum_p, d_sum_p)
        else:
            # d min(p, t)/dp: 1 below the target, 0 above, ½ at a tie (smp's |p − t| at 0)
            # (the branches are per-set arrays: g is written once, in the compute dtype)
            g = xp.where(p < t, d_inter + d_sum_p, xp.where(p > t, d_sum_p, 0.5 * d_inter + d_sum_p))
        if scale is not None:
            g = g * scale
        return to_logits(g, p, slope, o, xp)

    return values, vjp


def _classes_and_focal(values, o, xp):
    """Select ``classes`` (last axis) and apply the focal exponent ``gamma`` to the class mean;
    returns the values and the pull-back of an upstream gradient to per-class values."""
    classes, gamma = o.get("classes"), o.get("gamma", 1.0)
    sel = None
    if classes is not None:
        n = values.shape[-1]
        idx = xp.asarray(list(classes))
        sel = xp.astype(xp.reshape(xp.arange(n), (n, 1)) == xp.reshape(idx, (1, -1)), values.dtype)
        values = xp.take(values, idx, axis=-1)
    mean = None
    if gamma != 1.0:
        mean = values if o["mode"] == "binary" else xp.mean(values, axis=-1)
        out = mean ** gamma
    else:
        out = values

    def pull(u):
        u = u * xp.ones_like(out)
        if mean is not None:
            d = xp.where(mean > 0, gamma * mean ** (gamma - 1.0), xp.zeros_like(mean)) * u
            u = d if o["mode"] == "binary" else xp.broadcast_to(d[..., None] / values.shape[-1], values.shape)
        if sel is not None:
            u = xp.sum(u[..., None, :] * sel, axis=-1)
        return u

    return out, pull


# --- inputs -----------------------------------------------------------------------------------


def check_modes(o, loss):
    """spec.check: classes only with a class axis, stored as a hashable tuple."""
    classes = o.get("classes")
    if classes is not None:
        if o["mode"] == "binary":
            raise ValueError(f"{loss}: `classes` needs mode='multiclass' or 'multilabel' (binary mode has one class).")
        if isinstance(classes, int) or not all(isinstance(c, int) and not isinstance(c, bool) for c in classes) or len(classes) == 0:
            raise TypeError(f"{loss}: `classes` must be a non-empty list of class ids, got {classes!r}.")
        o["classes"] = tuple(int(c) for c in classes)


def prepare(pred, target, o, xp, validate, loss, mask=None):
    mode, ii = o["mode"], o.get("ignore_index")
    if mode == "binary":
        _validate.check_same_shape(pred, target, "logits", "target", loss)
        static, sample_shape, axis = {"_target": "dense", "axis": 0}, tuple(pred.shape), None
    else:
        axis = _validate.normalize_axis(o["axis"], pred.ndim, loss)
        n = _validate.check_classes(pred, axis, "logits", loss)
        sample_shape = tuple(pred.shape[:axis]) + tuple(pred.shape[axis + 1 :])
        if o.get("classes") is not None and any(c < 0 or c >= n for c in o["classes"]):
            raise ValueError(f"{loss}: `classes` {list(o['classes'])} must be ids in [0, {n}).")
        if o["per_image"] and axis == 0:
            raise ValueError(f"{loss}: `per_image` needs the images on axis 0 and the classes on another axis, got axis={o['axis']}.")
        static = {"_target": "dense", "axis": axis}
        if mode == "multiclass" and not _validate.is_floating(target, xp):
            if tuple(target.shape) != sample_shape:
                raise ValueError(
                    f"{loss}: class ids `target` must have the logits' shape without the class axis {sample_shape}, got {tuple(target.shape)}."
                )
            static["_target"] = "ids"
            target = xp.expand_dims(target, axis=axis)
        else:
            _validate.check_same_shape(pred, target, "logits", "target", loss)
    valid = None
    if ii is not None:
        valid = target != ii
        target = xp.where(valid, target, xp.zeros_like(target))
    if static["_target"] == "dense":
        target = upcast_target(target, pred, xp)
    return Prepared(pred, target, sample_shape, valid=valid, static=static, axis=axis)


def check_values(z, t, o, xp, loss, valid):
    if not _validate.is_floating(t, xp):  # class ids (``o`` is without prepare's static options)
        n = int(z.shape[_validate.normalize_axis(o["axis"], z.ndim, loss)])
        _validate.check_class_ids(t, n, o.get("ignore_index"), loss, xp, valid)
    else:
        _validate.check_probabilities(t, "target", loss, xp, valid)

