"""PyTorch bridge: one ``torch.autograd.Function`` for every declared loss.

Forward computes the value without recording a graph. Backward returns the loss's
closed-form gradient for ``pred``, computed with differentiable torch ops from the saved
inputs, so double backward (``create_graph=True``, ``gradgradcheck``) differentiates the
closed form. Gradients for any other input that requires them (soft targets, weights, array
options) come from autograd on the same declaration's value.
"""

from __future__ import annotations

import torch

from .._array import namespace
from .._loss import evaluate

_xp_cache: list = []


def _xp():
    if not _xp_cache:
        _xp_cache.append(namespace(torch.empty(0)))
    return _xp_cache[0]


class LossFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(call, pred, target, c, valid, *aux):
        return evaluate(call, pred, target, c, valid, aux, _xp(), "value")

    @staticmethod
    def setup_context(ctx, inputs, output):
        call, *args = inputs
        ctx.call = call
        # save_for_backward takes tensors only: remember where the Python values (c, floats) go
        ctx.is_tensor = [isinstance(a, torch.Tensor) for a in args]
        ctx.constants = [None if t else a for a, t in zip(args, ctx.is_tensor)]
        ctx.save_for_backward(*[a for a, t in zip(args, ctx.is_tensor) if t])

    @staticmethod
    def backward(ctx, grad_out):
        saved = iter(ctx.saved_tensors)
        args = [next(saved) if t else k for t, k in zip(ctx.is_tensor, ctx.constants)]
        pred, target, c, valid, *aux = args
        call = ctx.call
        xp = _xp()
        needs = ctx.needs_input_grad
        grads = [None] * (5 + len(aux))
        if needs[1]:
            # d(Σ c ℓ)/d pred scaled by the cotangent: the reduction rule with c' = c · grad_out
            upstream = c * grad_out
            grads[1] = evaluate(call, pred, target, upstream, valid, tuple(aux), xp, "grad")
        others = [i for i in range(2, 5 + len(aux)) if needs[i] and i != 4]
        if others:
            grads_other = _autograd_other_inputs(call, pred, target, c, valid, aux, grad_out, others)
            for i, g in zip(others, grads_other):
                grads[i] = g
        return tuple(grads)


def _autograd_other_inputs(call, pred, target, c, valid, aux, grad_out, indices):
    """Gradients for inputs other than ``pred`` by autograd through the plain value."""
    create_graph = torch.is_grad_enabled()
    inputs = [None, pred.detach(), target, c, valid, *aux]
    leaves = []
    with torch.enable_grad():
        for i in indices:
            leaf = inputs[i].detach().requires_grad_(True)
            inputs[i] = leaf
            leaves.append(leaf)
        value = evaluate(call, inputs[1], inputs[2], inputs[3], inputs[4], tuple(inputs[5:]), _xp(), "value")
        return torch.autograd.grad(value, leaves, grad_out, create_graph=create_graph, allow_unused=True)


def value(call, pred, target, c, valid, aux):
    """Loss value on torch tensors, with a closed-form backward when a graph is recorded."""
    if torch.is_grad_enabled() and (
        pred.requires_grad
        or target.requires_grad
        or (isinstance(c, torch.Tensor) and c.requires_grad)
        or any(isinstance(a, torch.Tensor) and a.requires_grad for a in aux)
    ):
        return LossFunction.apply(call, pred, target, c, valid, *aux)
    return evaluate(call, pred, target, c, valid, aux, _xp(), "value")
