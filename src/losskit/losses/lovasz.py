"""Lovász losses (Berman, Rannen Triki & Blaschko, CVPR 2018): the Lovász extension of the
Jaccard loss, a set-level loss (``_kinds``) on sorted errors.

Per set (the batch, or each image) and class: sort the errors e descending, g = the Lovász
gradient of the sorted foreground (Alg. 1: Δ of 1 − (Σfg − cumsum fg)/(Σfg + cumsum(1 − fg))),
loss = Σ e_sorted · g. The gradient is the sorted-error subgradient: the permutation is held
fixed, so ∂loss/∂e_i = g at i's sorted position (ties keep their input order, a stable sort).
"""

from __future__ import annotations

import numpy as np

from .._array import backend
from .._loss import SET, Checks, Option, Peer, declare
from . import _lovasz_torch, _overlap
from .segmentation import _smp_losses


def _lovasz_grad(fg, xp):
    """Alg. 1 along the last axis of the sorted foreground ``fg`` (floats)."""
    gts = xp.sum(fg, axis=-1, keepdims=True)
    inter = gts - xp.cumulative_sum(fg, axis=-1)
    union = gts + xp.cumulative_sum(1.0 - fg, axis=-1)
    jac = 1.0 - inter / xp.where(union == 0, xp.ones_like(union), union)
    if jac.shape[-1] > 1:
        jac = xp.concat([jac[..., :1], jac[..., 1:] - jac[..., :-1]], axis=-1)
    return jac


def _scatter_last(d, perm):
    """out[..., perm[..., k]] = d[..., k] (the inverse permutation applied to ``d``)."""
    if isinstance(d, np.ndarray):
        out = np.empty_like(d)
        np.put_along_axis(out, perm, d, axis=-1)
        return out
    import jax.numpy as jnp

    return jnp.put_along_axis(jnp.zeros_like(d), perm, d, axis=-1, inplace=False)


def _sorted_dot(e, fg, keep, xp, hinge):
    """Σ f(e_sorted)·g per row (last axis), and ∂/∂e in the input order. ``keep``: valid pixels."""
    low = xp.full_like(e, -xp.inf) if hinge else -xp.ones_like(e)
    key = xp.where(keep, e, low) if keep is not None else e
    if backend(xp) == "torch":  # torch's own stable descending sort (array-api-compat emulates
        import torch  # it with flips and remainders) and a scatter instead of a second sort

        perm = torch.argsort(key, dim=-1, descending=True, stable=True)
        unsort = lambda d: torch.zeros_like(d).scatter(-1, perm, d)  # noqa: E731
    else:
        perm = xp.argsort(key, axis=-1, descending=True, stable=True)
        unsort = lambda d: xp.take_along_axis(d, xp.argsort(perm, axis=-1), axis=-1)  # noqa: E731
        if backend(xp) in ("jax", "numpy"):  # a scatter, not a second sort (XLA's CPU sort is slow)
            unsort = lambda d: _scatter_last(d, perm)  # noqa: E731
    e_s = xp.take_along_axis(key, perm, axis=-1)
    fg_s = xp.take_along_axis(fg, perm, axis=-1)
    g = _lovasz_grad(fg_s, xp)
    if keep is not None:
        g = g * xp.astype(xp.take_along_axis(keep, perm, axis=-1), g.dtype)
    if hinge:  # relu; a NaN error is not <= 0: it propagates to the value and its gradient
        off = e_s <= 0
        f = xp.where(off, xp.zeros_like(e_s), e_s)
        d_sorted = xp.where(off, xp.zeros_like(g), xp.where(xp.isnan(e_s), e_s, g))
    else:
        f, d_sorted = e_s, xp.where(xp.isnan(e_s), e_s, g)
    values = xp.sum(f * g, axis=-1)
    return values, unsort(d_sorted)


def _rows(x, o, n_sets, xp, axis=None):
    """(sets, [C,] pixels) layout: classes (if ``axis``) first after the set axis."""
    if axis is not None:
        x = xp.moveaxis(x, axis, 1)
        return xp.reshape(x, (n_sets, -1, int(x.shape[1]), int(np.prod(x.shape[2:]))))
    return xp.reshape(x, (n_sets, -1))


def _n_sets(z, o):
    return int(z.shape[0]) if o["per_image"] and z.ndim > 1 else 1


def _softmax_kernel(z, t, w, valid, o, xp):
    axis = o["axis"]
    p = _overlap._softmax(z, axis, xp)
    n_sets, n = _n_sets(z, o), int(z.shape[axis])
    shape = z.shape
    if _lovasz_torch.fast(xp, p, w):
        values, present, grad_p = _lovasz_torch.softmax_errors(p, t, w, valid, o, n_sets)
        share, out = _class_mean(values, present, o, n, z, xp)

        grad_p.view(n, n_sets, -1).mul_(share.T[:, :, None])  # each class's share of its set's loss

        def vjp_fast(upstream):  # the sets are images (axis 0): scale each image's logits' gradient
            u = xp.reshape(upstream * xp.ones_like(out), (n_sets,) + (1,) * (z.ndim - 1))
            return _overlap.to_logits(grad_p.movedim(0, axis % z.ndim), p, None, {"axis": axis}, xp).mul_(u)

        return out, vjp_fast

    def of_class(x, c):
        """(sets, pixels) rows of class c of ``x`` (the logits' shape or the pixel shape)."""
        if int(x.shape[axis]) > 1:
            idx = [slice(None)] * x.ndim
            idx[axis] = slice(c, c + 1)
            x = x[tuple(idx)]
        return _flat(xp.broadcast_to(x, shape[:axis] + (1,) + shape[axis + 1 :]), axis, n_sets, xp)[..., 0]

    ids = _flat(t, axis, n_sets, xp)[..., 0]  # (sets, pixels)
    # one class at a time, as Berman et al.'s code: the sort's temporaries are one class big,
    # and no float one-hot of the targets is made
    values, d_errors, signs, weights, present = [], [], [], [], []
    for c in range(n):
        keep = None if valid is None else of_class(valid, c)
        fg = ids == c
        if keep is not None:
            fg = fg & keep
        signs.append(fg)  # boolean: the sign of ∂|fg − p|/∂p, made in the backward
        fg = xp.astype(fg, p.dtype)
        ws = None if w is None else of_class(w, c)
        e = xp.abs(fg - of_class(p, c))
        if ws is not None:
            e = e * ws
        v, d_e = _sorted_dot(e, fg, keep, xp, hinge=False)
        values.append(v), d_errors.append(d_e), weights.append(ws)
        present.append(xp.sum(fg, axis=-1) > 0)
    values, present = xp.stack(values, axis=-1), xp.stack(present, axis=-1)  # (sets, C)
    share, out = _class_mean(values, present, o, n, z, xp)

    def vjp(upstream):
        u = xp.reshape(upstream * xp.ones_like(out), (n_sets, 1)) * share  # (sets, C)
        d = []
        for c in range(n):
            dc = d_errors[c] * u[:, c : c + 1] * (1.0 - 2.0 * xp.astype(signs[c], p.dtype))
            d.append(dc if weights[c] is None else dc * weights[c])
        d_p = _unflat(xp.stack(d, axis=-1), axis, shape, xp)
        return _overlap.to_logits(d_p, p, None, {"axis": axis}, xp)

    return out, vjp


def _class_mean(values, present, o, n, z, xp):
    """The share of each (set, class) value in the set's loss, and the per-set losses."""
    classes = o["classes"]
    if classes == "present":
        counted = xp.astype(present, values.dtype)
    elif classes == "all":
        counted = xp.ones_like(values)
    else:
        sel = xp.reshape(xp.asarray(list(classes)), (-1, 1)) == xp.reshape(xp.arange(n), (1, n))
        counted = xp.sum(xp.astype(sel, values.dtype), axis=0) * xp.ones_like(values)
    k = xp.sum(counted, axis=-1)
    share = counted / xp.where(k == 0, xp.ones_like(k), k)[:, None]
    out = xp.sum(values * share, axis=-1)
    if not (o["per_image"] and z.ndim > 1):
        out = out[0]
    return share, out


def _move(x, src, dst, xp):
    """moveaxis as a permutation (torch.func.vmap batches permute, not moveaxis)."""
    order = [i for i in range(x.ndim) if i != src % x.ndim]
    order.insert(dst % x.ndim, src % x.ndim)
    return xp.permute_dims(x, tuple(order))


def _flat(x, axis, n_sets, xp):
    """(sets, pixels, C) with the class axis last (size 1 for ids)."""
    x = _move(x, axis, -1, xp)
    return xp.reshape(x, (n_sets, -1, int(x.shape[-1])))


def _unflat(d, axis, shape, xp):
    moved = tuple(int(s) for i, s in enumerate(shape) if i != axis) + (int(shape[axis]),)
    return _move(xp.reshape(d, moved), -1, axis, xp)


def _hinge_kernel(z, t, w, valid, o, xp):
    n_sets = _n_sets(z, o)
    shape = z.shape
    zs, ts = xp.reshape(z, (n_sets, -1)), xp.reshape(t, (n_sets, -1))
    keep = None if valid is None else xp.reshape(xp.broadcast_to(valid, shape), (n_sets, -1))
    ws = None if w is None else xp.reshape(xp.broadcast_to(w, shape), (n_sets, -1))
    if _lovasz_torch.fast(xp, zs, ws):
        values, d_z = _lovasz_torch.hinge_errors(zs, ts, ws, keep, n_sets)
        out = values if o["per_image"] and z.ndim > 1 else values[0]
        return out, lambda upstream: xp.reshape(d_z * xp.reshape(upstream * xp.ones_like(out), (n_sets, 1)), shape)
    signs = 2.0 * ts - 1.0
    e = 1.0 - zs * signs
    if ws is not None:
        e = e * ws
    fg = ts if keep is None else xp.where(keep, ts, xp.zeros_like(ts))  # masked pixels leave Σfg too
    values, d_e = _sorted_dot(e, fg, keep, xp, hinge=True)
    out = values if o["per_image"] and z.ndim > 1 else values[0]

    def vjp(upstream):
        u = xp.reshape(upstream * xp.ones_like(out), (n_sets, 1))
        d = -d_e * u * signs
        if ws is not None:
            d = d * ws
        return xp.reshape(d, shape)

    return out, vjp


def _check_classes(o, loss):
    c = o["classes"]
    if isinstance(c, str):
        if c not in ("present", "all"):
            raise ValueError(f"{loss}: `classes` must be 'present', 'all' or a list of class ids, got {c!r}.")
    elif c is None or isinstance(c, int) or not all(isinstance(i, int) and not isinstance(i, bool) for i in c) or len(c) == 0:
        raise TypeError(f"{loss}: `classes` must be 'present', 'all' or a non-empty list of class ids, got {c!r}.")
    else:
        o["classes"] = tuple(int(i) for i in c)


def _prepare_softmax(pred, target, o, xp, validate, loss, mask=None):
    o = dict(o, mode="multiclass")
    if _overlap._validate.is_floating(target, xp):
        raise TypeError(f"{loss}: `target` must hold integer class ids of the logits' shape without the class axis.")
    prep = _overlap.prepare(pred, target, dict(o, classes=None), xp, validate, loss, mask)
    n = int(pred.shape[prep.axis])
    if isinstance(o["classes"], tuple) and any(c < 0 or c >= n for c in o["classes"]):
        raise ValueError(f"{loss}: `classes` {list(o['classes'])} must be ids in [0, {n}).")
    return prep


def _prepare_hinge(pred, target, o, xp, validate, loss, mask=None):
    return _overlap.prepare(pred, target, dict(o, mode="binary", ignore_index=o["ignore_index"]), xp, validate, loss, mask)


def _smp_lovasz_module():
    """smp's lovasz module, its ``_lovasz_grad`` re-run in the errors' dtype: smp casts the sorted
    foreground to float32 (``.float()``), which fails (and rounds) beside float64 errors."""
    import sys

    _smp_losses()
    module = sys.modules["_losskit_peer_smp_losses.lovasz"]
    if not getattr(module, "_losskit_float64", False):
        def _lovasz_grad(gt_sorted):
            p = len(gt_sorted)
            gts = gt_sorted.sum()
            intersection = gts - gt_sorted.double().cumsum(0)
            union = gts + (1 - gt_sorted).double().cumsum(0)
            jaccard = 1.0 - intersection / union
            if p > 1:
                jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
            return jaccard

        module._losskit_original_grad = module._lovasz_grad
        module._lovasz_grad, module._losskit_float64 = _lovasz_grad, True
    return module


def _smp_lovasz(mode):
    def peer(z, t, reduction="mean", per_image=mode == "binary", ignore_index=None, axis=1, **_):
        import torch

        loss = _smp_lovasz_module().LovaszLoss(mode, per_image=False, ignore_index=ignore_index)
        z, t = torch.as_tensor(z), torch.as_tensor(t)
        if mode == "binary" and z.ndim == 1:
            z, t = z[None], t[None]
        if per_image and z.ndim > 1:
            values = torch.stack([loss(z[i : i + 1], t[i : i + 1]) for i in range(z.shape[0])])
        else:
            values = loss(z, t)
        return {"none": values, "sum": values.sum(), "mean": values.mean()}[reduction].detach().numpy()

    return peer


def _sample_softmax(rng, shape, o):
    z = rng.standard_normal(shape) * 2
    pixel = shape[:1] + shape[2:]
    t = rng.integers(0, shape[1], pixel)
    if o.get("ignore_index") is not None:
        t = np.where(rng.random(pixel) < 0.2, o["ignore_index"], t)
    return z, t


def _sample_hinge(rng, shape, o):
    z = rng.standard_normal(shape) * 2
    t = (rng.random(shape) < 0.4).astype(np.float64)
    if o.get("ignore_index") is not None:
        t = np.where(rng.random(shape) < 0.2, float(o["ignore_index"]), t)
    return z, t


def _edges_softmax(o):
    """Saturated and balanced logits (±1e4, ±30, 0), a class absent from the batch (2 of 3 in
    the first image), ignored pixels where the option set has ignore_index."""
    z = np.array([[[1e4, -1e4, 0.0], [30.0, -30.0, 2.0]], [[-1e4, 1e4, 0.0], [-30.0, 30.0, -2.0]], [[0.0, 0.0, 1e4], [-1e4, 0.0, 30.0]]])
    z = np.stack([z, -z[::-1]])  # (2, 3, 2, 3)
    t = np.array([[[0, 1, 1], [0, 0, 1]], [[2, 2, 0], [1, 2, 2]]])
    if o.get("ignore_index") is not None:
        t = np.where(np.array([[[True, False, False], [False, False, False]], [[False] * 3, [False, False, True]]]), o["ignore_index"], t)
    return z, t


def _edges_hinge(o):
    """Margins far past ±1 (logits ±1e4), on the hinge (z = ±1) and an image without foreground."""
    z = np.array([[[[1e4, -1e4, 1.0], [-1.0, 30.0, 0.0]]], [[[-1e4, 1e4, 0.5], [2.0, -30.0, 1e4]]]])
    t = np.array([[[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]], [[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]])
    return z, t


_COMMON = dict(
    family="segmentation",
    kind=SET,
    hessian=r"\text{not provided}",
    hessian_kind="none",
    reference='Berman, Rannen Triki & Blaschko, "The Lovász-Softmax loss", CVPR 2018',
    use_when="Optimising the mean IoU (Jaccard index) of a segmentation directly.",
    inputs=("logits",),
)
_SETS = """
        The set is the batch, or each image with ``per_image``; ``reduction="none"`` returns
        one value per set. The gradient is the sorted-error subgradient (the sort permutation
        held fixed, ties in input order). ``ignore_index`` and ``mask`` remove pixels from the
        set; ``weight`` multiplies each pixel's error (a zero weight leaves the pixel in the
        Jaccard counts: use ``mask`` to remove it). ``normalizer`` is an error and there is no
        Hessian (``grad_hess`` raises). On torch the sort runs on integer keys made from the
        float bits (torch's radix sort: the same order, several times faster on CPU)."""

lovasz_softmax = declare(
    name="lovasz_softmax",
    title="Lovász-Softmax loss on logits (multiclass).",
    formula=r"\ell = \operatorname{mean}_{c} \sum_k e^{c}_{(k)}\, g^{c}_k,\ e^c_i = |[t_i = c] - \mathrm{softmax}(z_i)_c|\ \text{sorted descending}",
    gradient=r"\partial_{p_{ic}} \ell = g^c_{\pi(i)} (1 - 2[t_i = c]) / |C|,\ \text{then through the softmax}",
    domain="logits real; integer class ids of the logits' shape without the class axis",
    details="""
        Softmax over ``axis``, errors abs(fg − p) per class, the Lovász extension of the Jaccard
        loss per class, averaged over ``classes``: ``"present"`` (classes with a valid target
        pixel in the set; 0 when none), ``"all"`` or a list of ids. Equals
        ``segmentation_models_pytorch.losses.LovaszLoss("multiclass")`` (0.6).""" + _SETS,
    example="""
        >>> import numpy as np, losskit as lk
        >>> z = np.array([[[[2.0, -1.0]], [[0.0, 1.0]]]])  # N=1, C=2, H=1, W=2
        >>> round(float(lk.lovasz_softmax(z, np.array([[[0, 1]]]))), 6)
        0.119203
    """,
    set_kernel=_softmax_kernel,
    prepare=_prepare_softmax,
    check=_check_classes,
    options={
        "axis": Option(1, "int", doc="the class axis"),
        "per_image": Option(False, "bool", doc="one set per image (first axis)"),
        "ignore_index": Option(None, "int", doc="class id whose pixels leave the set"),
        "classes": Option("present", "any", doc="'present', 'all' or a list of class ids to average"),
    },
    check_values=lambda z, t, o, xp, loss, valid: _overlap.check_values(z, t, dict(o), xp, loss, valid),
    checks=Checks(
        sample=_sample_softmax,
        shape=(3, 3, 4, 5),
        option_sets=({}, {"per_image": True}, {"ignore_index": -1}, {"classes": "all"}, {"classes": [0, 2], "per_image": True}),
        edges=_edges_softmax,
        kinks=lambda z, t, **o: np.zeros(z.shape, dtype=bool),
        peers=(Peer("segmentation_models_pytorch.losses.LovaszLoss('multiclass')", _smp_lovasz("multiclass"), requires="segmentation_models_pytorch", options=("axis", "per_image", "ignore_index")),),
    ),
    **_COMMON,
)

lovasz_hinge = declare(
    name="lovasz_hinge",
    title="Lovász hinge loss on logits (binary).",
    formula=r"\ell = \sum_k \max(e_{(k)}, 0)\, g_k,\ e_i = 1 - z_i (2 t_i - 1)\ \text{sorted descending}",
    gradient=r"\partial_{z_i} \ell = -g_{\pi(i)}\, [e_i > 0]\, (2 t_i - 1)",
    domain="logits real; targets in {0, 1} of the logits' shape",
    details="""
        Hinge errors 1 − z·(2t − 1) of one binary mask, the Lovász extension of the Jaccard
        loss on them. ``per_image=True`` by default, as in Berman et al.'s code (smp's
        ``LovaszLoss("binary")`` defaults to the batch: pass ``per_image=False``). Equals
        ``segmentation_models_pytorch.losses.LovaszLoss("binary")`` (0.6).""" + _SETS,
    example="""
        >>> import numpy as np, losskit as lk
        >>> z = np.array([[2.0, -1.0], [0.5, -3.0]])
        >>> t = np.array([[1.0, 0.0], [1.0, 0.0]])
        >>> round(float(lk.lovasz_hinge(z, t)), 6)
        0.25
    """,
    set_kernel=_hinge_kernel,
    prepare=_prepare_hinge,
    options={
        "per_image": Option(True, "bool", doc="one set per image (first axis)"),
        "ignore_index": Option(None, "int", doc="target value whose pixels leave the set"),
    },
    check_values=lambda z, t, o, xp, loss, valid: _overlap._validate.check_probabilities(t, "target", loss, xp, valid),
    checks=Checks(
        sample=_sample_hinge,
        shape=(3, 1, 4, 5),
        option_sets=({}, {"per_image": False}),  # ignore_index: tests/losses/test_lovasz_softmax.py
        edges=_edges_hinge,
        kinks=lambda z, t, **o: np.zeros(z.shape, dtype=bool),
        peers=(Peer("segmentation_models_pytorch.losses.LovaszLoss('binary')", _smp_lovasz("binary"), requires="segmentation_models_pytorch", options=("per_image", "ignore_index")),),
    ),
    **_COMMON,
)
