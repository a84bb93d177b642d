"""``lk.cross_entropy`` under ``torch.compile``, the traced path (``interop/torch_compiled.py``):
float32/64 logits, class ids on the last axis, ``ignore_index``, label smoothing, z-loss, any
reduction, without weights, mask, class weights or normalizer, are traced in torch ops that
Inductor fuses; everything else stays the opaque operator
(``test_cross_entropy_torch_compile.py``).

* One ``fullgraph=True`` Inductor compilation evaluates every reduction × ``ignore_index`` ×
  ``validate`` case (plus (B, T, C) logits, int32 ids, and the edge rows: a confident right
  prediction, tied maxima, NaN logits on an ignored row, a batch with every row ignored), each
  compared with an independent reference: ``F.cross_entropy`` in float64, or the closed form in
  ``math`` where float64 ``log_softmax`` itself rounds the tiny loss away. The (B, T, C)
  logits are a transposed view: nothing is reshaped (an N×C copy for strided logits).
  The traced kernel's label smoothing (both formulas) and z-loss, on logits with −inf entries,
  against Σ_k q_k (LSE − z_k) + λ·LSE² written out in float64.
* Dynamic shapes (``dynamic=True``: the mean's scale from a symbolic row count).
* Which path a call takes, on both sides of every condition of ``covers`` (a recording Dynamo
  backend: no Inductor, cheap).
* The eager error for an out-of-range id, raised by the check operator inside the graph.
* ``retain_graph`` backwards.
(Peak memory and the absence of Dynamo warnings: the subprocess test of
``test_cross_entropy_torch_compile.py`` runs this path too.)
"""

from __future__ import annotations

import math

import pytest

import losskit as lk

torch = pytest.importorskip("torch")

from test_cross_entropy_torch_lean import reference  # noqa: E402  (F.cross_entropy in float64, rules written out)

from losskit.interop import torch_compiled, torch_lean  # noqa: E402

IGNORE = -100
N, C = 29, 17

# name -> (reduction, ignore_index, validate)
CASES = {
    f"{red}_{'ign' if ii == IGNORE else 'ign2' if ii == 2 else 'noign'}_{'val' if val else 'noval'}": (red, ii, val)
    for red in ("mean", "sum", "none")
    for ii in (None, IGNORE, 2)
    for val in (True, False)
}


# label smoothing α, z-loss λ, formula, reduction: the traced kernel on logits with -inf entries
SMOOTHING = ((0.1, 0.0, "pytorch", "mean"), (0.2, 1e-2, "megatron", "none"), (0.0, 1e-3, "pytorch", "sum"))


def _closed_form(z, y, alpha, lam, reduction):
    """Σ_k q_k (LSE − z_k) + λ·LSE² in float64, q = (1 − α)·onehot + (α/C)·[z_k > −inf] (the
    −inf classes stay out of the α/C term), 0 on ignored rows, then the reduction: (value, leaf)."""
    leaf = z.detach().to(torch.float64).requires_grad_(True)
    c = z.shape[-1]
    lse = torch.logsumexp(leaf, -1, keepdim=True)
    valid = y != IGNORE
    q = (1 - alpha) * torch.nn.functional.one_hot(torch.where(valid, y, 0), c).double()
    q = q + (alpha / c) * (z != -math.inf).double()
    per = torch.where(q > 0, q * (lse - leaf), torch.zeros_like(leaf)).sum(-1) + lam * lse[..., 0] ** 2
    per = torch.where(valid, per, torch.zeros_like(per))
    if reduction == "none":
        return per, leaf
    return (per.sum() / valid.sum() if reduction == "mean" else per.sum()), leaf


def _data(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(N, C, generator=g, dtype=torch.float64) * 3).to(dtype)
    y = torch.randint(0, C, (N,), generator=g)
    y[::5] = IGNORE
    y[3] = 2  # an id that ignore_index=2 ignores
    return z, y


@pytest.fixture(scope="module")
def compiled_cases():
    names = list(CASES)

    def run(leaves, y, z3, y3, edge, y_edge, all_ignored, y_all, smooth_leaves, y_smooth):
        out = []
        for z, name in zip(leaves, names):
            reduction, ii, validate = CASES[name]
            yy = y if ii == IGNORE else torch.where(y == IGNORE, 0, y)
            out.append(lk.cross_entropy(z, yy, reduction=reduction, ignore_index=ii, validate=validate))
        # (B, T, C) logits strided as a (T, B, C) tensor seen transposed, int32 ids
        out.append(lk.cross_entropy(z3.transpose(0, 1), y3, reduction="none", ignore_index=IGNORE))
        out.append(lk.cross_entropy(edge, y_edge, reduction="none", ignore_index=IGNORE))
        out.append(lk.cross_entropy(all_ignored, y_all, ignore_index=IGNORE))
        for zs, (alpha, lam, formula, reduction) in zip(smooth_leaves, SMOOTHING):  # the kernel itself
            out.append(torch_compiled.traced_cross_entropy(zs, y_smooth, reduction, True, IGNORE, alpha, lam, formula))
        return out

    return torch.compile(run, fullgraph=True)


def _edge_rows(dtype):
    """Row 0: a confident right prediction (ℓ = log1p(2e^-60) ≈ 1.75e-26, which float64
    log_softmax rounds to 0); row 1: y tied with another maximum (ℓ = log(2 + e^-1)); row 2:
    NaN logits, ignored (ℓ = 0, gradient exactly 0); row 3: an ordinary row."""
    e = torch.full((4, 5), -3.0, dtype=torch.float64)
    e[0] = torch.tensor([0.0, -60.0, -60.0, -math.inf, -math.inf])
    e[1] = torch.tensor([1.0, 1.0, 0.0, -math.inf, -math.inf])
    e[2] = math.nan
    e[3] = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0])
    y = torch.tensor([0, 1, IGNORE, 4])
    return e.to(dtype), y


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_traced_path_equals_the_float64_reference(compiled_cases, dtype):
    tight = dtype == torch.float64
    rtol_v, rtol_g = (1e-12, 1e-11) if tight else (2e-6, 2e-5)
    z, y = _data(dtype)
    names = list(CASES)
    leaves = [z.clone().requires_grad_(True) for _ in names]
    g = torch.Generator().manual_seed(1)
    z3 = (torch.randn(6, 2, C, generator=g, dtype=torch.float64) * 2).to(dtype).requires_grad_(True)
    y3 = torch.randint(0, C, (2, 6), generator=g, dtype=torch.int32)
    y3[1, 2] = IGNORE
    edge, y_edge = _edge_rows(dtype)
    edge.requires_grad_(True)
    all_ignored = z[:4].clone().requires_grad_(True)
    y_all = torch.full((4,), IGNORE)
    z_inf = z.clone()
    z_inf[1, 3] = z_inf[2, [0, 5, 9]] = -math.inf  # impossible classes (never the label below)
    y_smooth = y.clone()
    y_smooth[1], y_smooth[2] = 4, 1
    smooth_leaves = [z_inf.clone().requires_grad_(True) for _ in SMOOTHING]
    assert not torch_lean._STASH
    losses = compiled_cases(leaves, y, z3, y3, edge, y_edge, all_ignored, y_all, smooth_leaves, y_smooth)
    n_smooth = len(SMOOTHING)
    smooth_losses, losses = losses[-n_smooth:], losses[:-n_smooth]
    assert not torch_lean._STASH  # no operator ran: the traced path
    g_out = [torch.rand(v.shape, generator=g, dtype=torch.float64).to(v.dtype) + 0.5 for v in losses + smooth_losses]
    g_out, g_smooth = g_out[: len(losses)], g_out[len(losses) :]
    sum((v * go).sum() for v, go in zip(losses + smooth_losses, g_out + g_smooth)).backward()

    for leaf, loss, go, (alpha, lam, formula, reduction) in zip(smooth_leaves, smooth_losses, g_smooth, SMOOTHING):
        a = alpha * C / (C - 1) if formula == "megatron" else alpha
        ref, rleaf = _closed_form(z_inf, y_smooth, a, lam, reduction)
        assert loss.dtype == dtype and loss.shape == ref.shape, (alpha, lam, formula)
        torch.testing.assert_close(loss.double(), ref.detach(), rtol=rtol_v, atol=0, msg=str((alpha, lam, formula)))
        (want,) = torch.autograd.grad(ref, rleaf, go.double())
        torch.testing.assert_close(leaf.grad.double(), want, rtol=rtol_g, atol=rtol_g * 1e-3, msg=str((alpha, lam, formula)))

    for leaf, loss, go, name in zip(leaves, losses, g_out, names):
        reduction, ii, _ = CASES[name]
        yy = y if ii == IGNORE else torch.where(y == IGNORE, 0, y)
        ref, rleaf = reference(z, yy, reduction=reduction, ignore_index=ii)
        assert loss.dtype == dtype and loss.shape == ref.shape, name
        torch.testing.assert_close(loss.double(), ref.detach(), rtol=rtol_v, atol=0, msg=name)
        (want,) = torch.autograd.grad(ref, rleaf, go.double())
        torch.testing.assert_close(leaf.grad.double(), want, rtol=rtol_g, atol=rtol_g * 1e-3, msg=name)

    ref, rleaf = reference(z3.transpose(0, 1), y3, reduction="none", ignore_index=IGNORE)
    assert losses[-3].shape == (2, 6)
    torch.testing.assert_close(losses[-3].double(), ref.detach(), rtol=rtol_v, atol=0)
    (want,) = torch.autograd.grad(ref, rleaf, g_out[-3].double())
    torch.testing.assert_close(z3.grad.transpose(0, 1).double(), want, rtol=rtol_g, atol=rtol_g * 1e-3)

    v = losses[-2].double()
    exact = [math.log1p(2 * math.exp(-60.0)), math.log(2 + math.exp(-1.0)), 0.0]
    torch.testing.assert_close(v[:3], torch.tensor(exact, dtype=torch.float64), rtol=4 * torch.finfo(dtype).eps, atol=0)
    ref, rleaf = reference(edge[3:], y_edge[3:], reduction="none")
    torch.testing.assert_close(v[3:], ref.detach(), rtol=rtol_v, atol=0)
    p0 = torch.softmax(edge[0].detach().double(), -1)  # row 0's gradient, p − onehot, against float64
    want0 = (p0 - torch.nn.functional.one_hot(torch.tensor(0), 5)) * g_out[-2][0].double()
    torch.testing.assert_close(edge.grad[0].double(), want0, rtol=rtol_g, atol=1e-30)
    assert torch.equal(edge.grad[2], torch.zeros(5, dtype=dtype))  # NaN logits, ignored: exact zeros

    assert float(losses[-1]) == 0.0 and torch.equal(all_ignored.grad, torch.zeros_like(all_ignored))


def _graph_ops(fn, *args):
    """The graphs Dynamo captures for ``fn(*args)`` (no Inductor, compiled cold), as text;
    asserts that tracing warned about nothing in losskit or array-api-compat."""
    import warnings

    graphs = []

    def backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    torch._dynamo.reset()
    getattr(torch._dynamo.utils, "warn_once_cache", set()).clear()  # Dynamo warns once per process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.compile(fn, backend=backend, fullgraph=True)(*args)
    ours = [str(w.message) for w in caught if any(k in str(w.message) for k in ("lru_cache", "losskit", "array_api_compat"))]
    assert not ours, ours[0]
    return "\n".join(graphs)


def _paths():
    z, y = _data(torch.float32)
    zl = z.clone().requires_grad_(True)
    cw, w, mask = torch.ones(C), torch.ones(N), torch.ones(N, dtype=torch.bool)
    ce = lk.cross_entropy
    yi = torch.where(y == IGNORE, 0, y)
    return {
        # name: (fn, args, traced?)
        "plain": (lambda z, y: ce(z, y), (zl, yi), True),
        "ignore_sum": (lambda z, y: ce(z, y, ignore_index=IGNORE, reduction="sum"), (zl, y), True),
        "float64_none": (lambda z, y: ce(z, y, reduction="none"), (z.double().requires_grad_(True), yi), True),
        "axis_last_3d": (lambda z, y: ce(z, y, axis=2), (z.reshape(1, N, C), yi.reshape(1, N)), True),
        "bfloat16": (lambda z, y: ce(z, y), (z.bfloat16().requires_grad_(True), yi), False),
        "float16": (lambda z, y: ce(z, y), (z.half().requires_grad_(True), yi), False),
        "axis_0": (lambda z, y: ce(z, y, axis=0), (z[:C].T.contiguous().requires_grad_(True), yi[:C]), False),
        "one_d": (lambda z, y: ce(z, y), (z[0].clone().requires_grad_(True), yi[0]), False),
        "class_weight": (lambda z, y, cw: ce(z, y, class_weight=cw), (zl, yi, cw), False),
        "weight": (lambda z, y, w: ce(z, y, weight=w), (zl, yi, w), False),
        "mask": (lambda z, y, m: ce(z, y, mask=m), (zl, yi, mask), False),
        "normalizer": (lambda z, y: ce(z, y, normalizer=5.0), (zl, yi), False),
        "label_smoothing": (lambda z, y: ce(z, y, label_smoothing=0.1), (zl, yi), True),
        "megatron_z_loss": (lambda z, y: ce(z, y, label_smoothing=0.1, smoothing_formula="megatron", z_loss=1e-3, ignore_index=IGNORE), (zl, y), True),
        "probabilities": (lambda z, t: ce(z, t), (zl, torch.softmax(z, -1)), False),
    }


@pytest.mark.parametrize("name", list(_paths()))
def test_which_path_a_compiled_call_takes(name):
    """Both sides of every condition of ``covers``: the traced form (an autograd.Function and
    the id-check operator, no ``losskit::cross_entropy``) or the opaque operator; neither
    makes Dynamo warn about losskit code (a first call compiled cold included)."""
    fn, args, traced = _paths()[name]
    text = _graph_ops(fn, *args)
    assert ("losskit.cross_entropy.default" not in text) is traced, text
    assert ("losskit.cross_entropy_check_ids" in text) is traced, text


@pytest.mark.parametrize("options", [{"label_smoothing": 1.5}, {"label_smoothing": 0.99, "smoothing_formula": "megatron"},
                                     {"z_loss": -1.0}, {"smoothing_formula": "other"}], ids=str)
def test_option_values_the_rules_reject_raise_the_eager_error(options):
    """Out-of-range smoothing (Megatron's α·C/(C − 1) > 1 too) or z-loss, an unknown formula:
    ``covers`` declines, and the operator raises the eager error."""
    z, y = _data(torch.float32)
    y = torch.where(y == IGNORE, 0, y)
    with pytest.raises(ValueError) as eager:
        lk.cross_entropy(z, y, **options)
    fn = torch.compile(lambda z, y: lk.cross_entropy(z, y, **options), backend="aot_eager", fullgraph=True)
    with pytest.raises(ValueError) as compiled:
        fn(z.clone().requires_grad_(True), y)
    assert str(compiled.value) == str(eager.value)


def test_disabled_and_unvalidated_calls():
    z, y = _data(torch.float32)
    zl = z.clone().requires_grad_(True)
    text = _graph_ops(lambda z, y: lk.cross_entropy(z, y, ignore_index=IGNORE, validate=False), zl, y)
    assert "losskit.cross_entropy" not in text  # validate=False: no check operator either
    try:
        torch_compiled.ENABLED = False
        text = _graph_ops(lambda z, y: lk.cross_entropy(z, y, ignore_index=IGNORE), zl, y)
    finally:
        torch_compiled.ENABLED = True
    assert "losskit.cross_entropy.default" in text


@pytest.mark.parametrize("bad", [C, -1])
def test_out_of_range_id_raises_the_eager_message(bad):
    z, y = _data(torch.float32)
    y = y.clone()
    y[7] = bad
    with pytest.raises(ValueError) as eager:
        lk.cross_entropy(z, y, ignore_index=IGNORE)
    fn = torch.compile(lambda z, y: lk.cross_entropy(z, y, ignore_index=IGNORE), backend="aot_eager", fullgraph=True)
    with pytest.raises(ValueError) as compiled:
        fn(z.clone().requires_grad_(True), y)
    assert str(compiled.value) == str(eager.value)
    assert "target[7]" in str(compiled.value)
    unchecked = torch.compile(lambda z, y: lk.cross_entropy(z, y, ignore_index=IGNORE, validate=False), backend="aot_eager", fullgraph=True)
    with pytest.raises(RuntimeError, match="index"):  # never a silent loss at a substitute id
        unchecked(z.clone().requires_grad_(True), y)


def test_dynamic_shapes():
    """Batch sizes that change between calls (symbolic row counts in the mean's scale)."""
    fn = torch.compile(lambda z, y: lk.cross_entropy(z, y, ignore_index=IGNORE), backend="aot_eager", dynamic=True, fullgraph=True)
    for n in (7, 12):
        z, y = _data(torch.float64)
        zc = z[:n].clone().requires_grad_(True)
        loss = fn(zc, y[:n])
        loss.backward()
        ref, leaf = reference(z[:n], y[:n], ignore_index=IGNORE)
        ref.backward()
        torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=0)
        torch.testing.assert_close(zc.grad, leaf.grad, rtol=1e-11, atol=1e-15)


def test_retain_graph_backwards_twice():
    z, y = _data(torch.float64)
    fn = torch.compile(lambda z, y: lk.cross_entropy(z, y, ignore_index=IGNORE, reduction="sum"), backend="aot_eager", fullgraph=True)
    zc = z.clone().requires_grad_(True)
    loss = fn(zc, y)
    loss.backward(retain_graph=True)
    first = zc.grad.clone()
    loss.backward()
    torch.testing.assert_close(zc.grad, 2 * first)
    ref, leaf = reference(z, y, reduction="sum", ignore_index=IGNORE)
    ref.backward()
    torch.testing.assert_close(first, leaf.grad)
