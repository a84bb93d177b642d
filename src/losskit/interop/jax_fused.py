"""JAX kernels for ``losskit.fused.linear_cross_entropy``: a ``jax.custom_vjp`` over
``lax.scan`` on row chunks, usable under ``jit``.

The custom-VJP function maps (x, W, b) to the per-row losses ℓ_i (and the per-row LSE); the
reduction (weights, masks, ``"mean"`` denominators) is applied outside it with the shared
``_reduce.reduce_terms``, so its cotangent arrives as per-row scales and ``reduction="none"``
with any incoming gradient is handled by the same code. Residuals: x, W, b, target, the
validity mask, class weights and the per-row LSE (N floats). The backward pass recomputes
each chunk's logits, forms G = ct_i·∂ℓ_i/∂z with the shared chunk math, and accumulates
dW, db in float32 (``preferred_element_type``) while emitting dx per chunk.

With ``"mean"`` / ``"sum"`` (and ``grad_in_forward`` not False) the cotangent is one scalar, so
a second ``custom_vjp`` (``_reduced``) maps (x, W, b) straight to the reduced loss and its
forward rule computes dx, dW, db for a unit cotangent in the same scan as the loss: three GEMMs
per chunk instead of four (no logits recomputed in backward), and backward only scales them.
Its primal rule (no gradient requested) computes the loss alone.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .._array import compute_dtype
from .._reduce import reduce_terms, scale_elementwise
from ..fused.linear_cross_entropy import (
    Config,
    Inputs,
    LinearCrossEntropyExtras,
    LinearCrossEntropyGrads,
    chunk_math,
    finish,
    masked_rows,
)


def _dot(a, b, cd):
    return jax.lax.dot_general(a, b, (((a.ndim - 1,), (0,)), ((), ())), preferred_element_type=cd)


def _pad_rows(a, rows, n_chunks):
    n = a.shape[0]
    pad = n_chunks * rows - n
    if pad:
        a = jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1))
    return a.reshape((n_chunks, rows) + a.shape[1:])


def _logits(xc, w, b, cd):
    z = _dot(xc, w.T, cd)
    return z if b is None else z + b.astype(cd)


def _geometry(cfg: Config, n: int):
    rows = max(1, min(cfg.chunk_size, max(n, 1)))
    return rows, -(-n // rows)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _rows(cfg: Config, extras: bool, x2, w, b, t, valid, cw):
    return _rows_fwd(cfg, extras, x2, w, b, t, valid, cw)[0]


def _rows_fwd(cfg, extras, x2, w, b, t, valid, cw):
    n = x2.shape[0]
    cd = compute_dtype(x2.dtype, jnp)
    rows, n_chunks = _geometry(cfg, n)
    if n == 0:
        empty = jnp.zeros((0,), cd)
        out = (empty, empty, empty, empty)
        return out, (x2, w, b, t, valid, cw, empty)

    def body(carry, inputs):
        xc, tc = inputs
        value, lse, _, ext = chunk_math(_logits(xc, w, b, cd), tc, cw, cfg, jnp, extras=extras)
        if ext is None:
            ext = (jnp.zeros_like(lse), jnp.zeros_like(lse))
        return carry, (value, lse, ext[0], ext[1].astype(cd))

    _, (values, lse, tlp, correct) = jax.lax.scan(body, None, (_pad_rows(x2, rows, n_chunks), _pad_rows(t, rows, n_chunks)))
    out = tuple(a.reshape(-1)[:n] for a in (values, lse, tlp, correct))
    return out, (x2, w, b, t, valid, cw, out[1])


def _rows_bwd(cfg, extras, res, cts):
    x2, w, b, t, valid, cw, lse = res
    ct = cts[0]  # cotangents of lse / extras are dropped: they are documented as constants
    n, h = x2.shape
    v = w.shape[0]
    cd = compute_dtype(x2.dtype, jnp)
    rows, n_chunks = _geometry(cfg, n)
    if n == 0:
        return (jnp.zeros_like(x2), jnp.zeros_like(w), None if b is None else jnp.zeros_like(b), None, None, None)
    ct = jnp.asarray(ct, cd)
    vmask = jnp.ones((n,), bool) if valid is None else valid

    def body(carry, inputs):
        gw, gb = carry
        xc, tc, ctc, vc, lsec = inputs
        _, _, g, _ = chunk_math(_logits(xc, w, b, cd), tc, cw, cfg, jnp, grad=True, lse=lsec)
        g = scale_elementwise(g, ctc, vc, True, jnp)
        gl = g.astype(x2.dtype)
        dx = _dot(gl, w, cd).astype(x2.dtype)
        # G is 0 on masked / ignored rows; zero their x too, or a NaN padding row gives 0·NaN in dW
        gw = gw + _dot(gl.T, xc if valid is None else masked_rows(xc, vc, jnp), cd)
        gb = gb + jnp.sum(g, axis=0)
        return (gw, gb), dx

    init = (jnp.zeros((v, h), cd), jnp.zeros((v,), cd))
    chunks = tuple(_pad_rows(a, rows, n_chunks) for a in (x2, t, ct, vmask, lse))
    (gw, gb), dx = jax.lax.scan(body, init, chunks)
    dx = dx.reshape(-1, h)[:n]
    return (dx, gw.astype(w.dtype), None if b is None else gb.astype(b.dtype), None, None, None)


_rows.defvjp(_rows_fwd, _rows_bwd)


def _row_scales(c, valid, n, cd):
    """The reduction multiplier as one scale per row, 0 on rows that are not valid."""
    s = jnp.broadcast_to(jnp.asarray(c, cd), (n,))
    return s if valid is None else jnp.where(valid, s, jnp.zeros_like(s))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _reduced(cfg: Config, x2, w, b, t, valid, cw, c):
    values = _rows(cfg, False, x2, w, b, t, valid, cw)[0]
    return reduce_terms(values, c, valid, cfg.reduction, jnp)


def _reduced_fwd(cfg, x2, w, b, t, valid, cw, c):
    n, h = x2.shape
    v = w.shape[0]
    cd = compute_dtype(x2.dtype, jnp)
    rows, n_chunks = _geometry(cfg, n)
    if n == 0:
        loss = jnp.zeros((), cd)
        return loss, (jnp.zeros_like(x2), jnp.zeros((v, h), cd), jnp.zeros((v,), cd), jnp.zeros((0,), w.dtype), None if b is None else jnp.zeros((0,), b.dtype))
    s = _row_scales(c, valid, n, cd)
    vmask = jnp.ones((n,), bool) if valid is None else valid

    def body(carry, inputs):
        gw, gb = carry
        xc, tc, sc, vc = inputs
        value, _, g, _ = chunk_math(_logits(xc, w, b, cd), tc, cw, cfg, jnp, grad=True)
        g = scale_elementwise(g, sc, vc, True, jnp)
        gl = g.astype(x2.dtype)
        dx = _dot(gl, w, cd).astype(x2.dtype)
        gw = gw + _dot(gl.T, xc if valid is None else masked_rows(xc, vc, jnp), cd)
        gb = gb + jnp.sum(g, axis=0)
        return (gw, gb), (value, dx)

    init = (jnp.zeros((v, h), cd), jnp.zeros((v,), cd))
    chunks = tuple(_pad_rows(a, rows, n_chunks) for a in (x2, t, s, vmask))
    (gw, gb), (values, dx) = jax.lax.scan(body, init, chunks)
    values = values.reshape(-1)[:n]
    loss = reduce_terms(values, c, valid, cfg.reduction, jnp)
    return loss, (dx.reshape(-1, h)[:n], gw, gb, jnp.zeros((0,), w.dtype), None if b is None else jnp.zeros((0,), b.dtype))


def _reduced_bwd(cfg, res, ct):
    dx, gw, gb, w_like, b_like = res  # w_like / b_like: empty arrays that carry the dtypes
    ct = jnp.asarray(ct)
    dx = (dx * ct.astype(dx.dtype)).astype(dx.dtype)
    gw = (gw * ct.astype(gw.dtype)).astype(w_like.dtype)
    gb = None if b_like is None else (gb * ct.astype(gb.dtype)).astype(b_like.dtype)
    return (dx, gw, gb, None, None, None, None)


_reduced.defvjp(_reduced_fwd, _reduced_bwd)


def _forward(inp: Inputs, x2, w, b, extras: bool):
    cfg = inp.cfg
    if not extras and cfg.reduction != "none" and cfg.grad_in_forward is not False:
        return _reduced(cfg, x2, w, b, inp.target, inp.valid, inp.class_weight, inp.c)
    values, lse, tlp, correct = _rows(inp.cfg, extras, x2, w, b, inp.target, inp.valid, inp.class_weight)
    if not extras:
        return finish(inp, values, None, None, None, jnp)
    sg = jax.lax.stop_gradient
    return finish(inp, values, sg(lse), sg(tlp), sg(correct) > 0.5, jnp)


def run(inp: Inputs, need: str, extras: bool):
    if need == "value_and_grad":
        args = (inp.x2, inp.weight) if inp.bias is None else (inp.x2, inp.weight, inp.bias)
        value, vjp = jax.vjp(lambda x_, w_, *b_: _forward(inp, x_, w_, b_[0] if b_ else None, False), *args)
        grads = vjp(jnp.ones_like(value))  # for reduction="none": the gradient of the sum
        gb = grads[2] if inp.bias is not None else None
        return value, LinearCrossEntropyGrads(grads[0].reshape(inp.x_shape), grads[1], gb)
    out = _forward(inp, inp.x2, inp.weight, inp.bias, extras)
    if extras:
        return LinearCrossEntropyExtras(*out)
    return out
