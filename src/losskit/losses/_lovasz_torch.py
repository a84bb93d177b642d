"""The Lovász losses' torch path (``lovasz``): the same math as the generic path, faster.

torch sorts a 1-D integer tensor with a parallel radix sort, about ten times faster on CPU
than its float comparison sort (the bulk of a Lovász pass); the float bits, remapped to a
monotone integer key, give the same stable order. Foreground counts are integers (exact), each
class is one row, and the gradient is written once into a class-major buffer. Used for plain
float32/float64 tensors without NaN, outside autograd recording, torch.compile and torch.func
(double backward differentiates the generic path); anything else takes the generic path.
"""

from __future__ import annotations

from .._array import backend


def _descending_key(e, signed):
    """Integer keys whose ascending stable order is the descending order of ``e`` (ties in
    input order): ~bits for non-negative floats; for any sign, negatives' bits xor INT_MIN."""
    import torch

    int_dtype = torch.int32 if e.dtype == torch.float32 else torch.int64
    bits = (e + 0.0).view(int_dtype) if signed else e.view(int_dtype)  # + 0.0: -0 to +0, equal keys
    if not signed:
        return torch.bitwise_not(bits)
    return torch.where(bits < 0, bits ^ torch.iinfo(int_dtype).min, torch.bitwise_not(bits))


def _sorted_grad(key, fg, n_valid, out):
    """Alg. 1 on one row (1-D; the last ``numel - n_valid`` keys are invalid pixels): the
    Lovász gradient g at each pixel's sorted position, scattered to input order into ``out``."""
    import torch

    if key.numel() == 0:
        return out
    perm = torch.sort(key, stable=True)[1]
    fg_sorted = fg.index_select(0, perm)
    # in place from here on: one row's worth of buffers at a time (the same float operations
    # as the generic path: 1 − (Σfg − cf)/(k − cf + Σfg))
    if fg.dtype == torch.bool:  # integer counts, exact
        cf = torch.cumsum(fg_sorted, 0, dtype=torch.int32 if fg.numel() < 2**31 else torch.int64)
        total = cf[-1:].clone()
    else:
        cf, total = torch.cumsum(fg_sorted, 0), torch.sum(fg, dim=0, keepdim=True)
    del fg_sorted
    union = torch.arange(1, fg.numel() + 1, dtype=cf.dtype, device=cf.device).sub_(cf).add_(total)
    inter = cf.neg_().add_(total)
    inter, union = inter.to(out.dtype), union.to(out.dtype)  # no copy for float counts
    jac = inter.div_(union).neg_().add_(1.0)
    g = union  # reused: g_k = jac_k − jac_{k−1}
    g[:1] = jac[:1]
    torch.sub(jac[1:], jac[:-1], out=g[1:])
    del jac, inter
    if n_valid is not None:
        g[n_valid:] = 0
    return out.scatter_(0, perm, g)


def fast(xp, *arrays):
    """The torch integer-key path: plain tensors (not under torch.compile or torch.func), no
    autograd recording (double backward differentiates the generic path), finite inputs."""
    if backend(xp) != "torch":
        return False
    import torch

    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return False
    arrays = [a for a in arrays if a is not None]
    if torch.is_grad_enabled() and any(a.requires_grad for a in arrays):
        return False
    return all(a.dtype in (torch.float32, torch.float64) and not bool(torch.isnan(a).any()) for a in arrays)


def _class_view(x, axis, c, pixel_shape):
    """Class c of ``x`` (class axis of size 1 or C), pixel-shaped."""
    x = x.movedim(axis, 0)
    return x[c if int(x.shape[0]) > 1 else 0].expand(pixel_shape)


def _valid_counts(keep, key, n_sets):
    import torch

    key.masked_fill_(~keep, torch.iinfo(key.dtype).max)  # sorted last, out of every count
    return keep.reshape(n_sets, -1).sum(-1).tolist()


def softmax_errors(p, t, w, valid, o, n_sets):
    """Per class: errors, integer keys, one radix sort per set; returns the per-(set, class)
    values, presence and ∂value/∂p (class-major, (C, *pixels)). No float one-hot, no copy of
    the errors per class beyond one row."""
    import torch

    axis, n = o["axis"] % p.ndim, int(p.shape[o["axis"]])
    by_class = p.movedim(axis, 0)  # (C, *pixels) view
    pixel_shape = tuple(by_class.shape[1:])
    ids = _class_view(t, axis, 0, pixel_shape)
    signed = w is not None and bool((w < 0).any())
    grad_p = torch.empty((n,) + pixel_shape, dtype=p.dtype, device=p.device)
    values = torch.zeros((n_sets, n), dtype=p.dtype, device=p.device)
    present = torch.zeros((n_sets, n), dtype=torch.bool, device=p.device)
    for c in range(n):
        fg = ids == c
        keep = None if valid is None else _class_view(valid, axis, c, pixel_shape)
        if keep is not None:
            fg &= keep
        e = torch.where(fg, 1.0 - by_class[c], by_class[c])
        if w is not None:
            e *= _class_view(w, axis, c, pixel_shape)
        key = _descending_key(e, signed)
        counts = [None] * n_sets
        if keep is not None:
            e.masked_fill_(~keep, 0.0)
            counts = _valid_counts(keep, key, n_sets)
        rows = (key.view(n_sets, -1), fg.view(n_sets, -1), e.view(n_sets, -1), grad_p[c].view(n_sets, -1))
        for s in range(n_sets):
            values[s, c] = torch.dot(rows[2][s], _sorted_grad(rows[0][s], rows[1][s], counts[s], rows[3][s]))
        present[:, c] = rows[1].any(-1)
        d = grad_p[c]
        torch.where(fg, d.neg(), d, out=d)  # ∂|fg − p|/∂p = 1 − 2 fg
        if w is not None:
            d *= _class_view(w, axis, c, pixel_shape)
    return values, present, grad_p


def hinge_errors(zs, ts, ws, keep, n_sets):
    """Per set: hinge errors, integer keys, one radix sort; the values and ∂value/∂z."""
    import torch

    signs = 2.0 * ts - 1.0
    e = torch.mul(zs, signs).neg_().add_(1.0)  # 1 − z·s
    if ws is not None:
        e *= ws
    key = _descending_key(e, signed=True)
    fg, counts = ts, [None] * n_sets
    if keep is not None:
        fg = torch.where(keep, ts, 0.0)
        counts = _valid_counts(keep, key, n_sets)
        e.masked_fill_(~keep, 0.0)
    d = torch.empty_like(e)
    for s in range(n_sets):
        _sorted_grad(key[s], fg[s], counts[s], d[s])
    d.masked_fill_(e <= 0, 0.0)  # relu
    values = torch.sum(e.clamp_(min=0.0).mul_(d), dim=-1)
    d.mul_(signs).neg_()
    if ws is not None:
        d *= ws
    return values, d
