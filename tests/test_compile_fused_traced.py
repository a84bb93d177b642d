"""The traced form of linear_cross_entropy under ``torch.compile`` (``torch_fused.TRACED``).

``TracedLinearCrossEntropy`` is the chunk loop in torch ops that Inductor fuses; it is off by
default (slower than the operator in the compiled GPT step, see ``docs/linear_cross_entropy.md``),
so these tests switch it on. Each case is compiled with ``fullgraph=True`` and compared with the
materialised float64 reference ``F.cross_entropy(x @ W.T)`` for the value and the gradients of
x and W, on both sides of every switch: traced against operator (a bias sends the call to the
operator), one chunk against several, ignored rows, all rows ignored; and the eager error for
an out-of-range class id.
"""

from __future__ import annotations

import pytest

import losskit as lk

torch = pytest.importorskip("torch")
F = torch.nn.functional

from losskit.interop import torch_fused  # noqa: E402

N, H, V = 37, 16, 203
IGNORE = -100


@pytest.fixture
def traced(monkeypatch):
    calls = []
    original = torch_fused.traced_call

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch_fused, "TRACED", True)
    monkeypatch.setattr(torch_fused, "traced_call", counting)
    torch._dynamo.reset()
    yield calls
    torch._dynamo.reset()


def _data(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, H, generator=g, dtype=torch.float64)
    w = torch.randn(V, H, generator=g, dtype=torch.float64) * 0.5
    b = torch.randn(V, generator=g, dtype=torch.float64) * 0.5
    y = torch.randint(0, V, (N,), generator=g)
    y_ign = torch.where(torch.rand(N, generator=g) < 0.3, torch.full_like(y, IGNORE), y)
    return x.to(dtype), w.to(dtype), b.to(dtype), y, y_ign


def _reference(x, w, b, y, reduction, ignore_index):
    x, w = (a.detach().double().requires_grad_(True) for a in (x, w))
    z = x @ w.T + (0.0 if b is None else b.double())
    loss = F.cross_entropy(z, y, reduction=reduction, ignore_index=IGNORE if ignore_index is None else ignore_index)
    if ignore_index is not None and reduction == "mean" and not bool((y != ignore_index).any()):
        loss = z.sum() * 0.0  # losskit: an empty selection gives 0 with zero gradient (torch: NaN)
    gx, gw = torch.autograd.grad(loss, (x, w))
    return loss.detach(), gx, gw


# (chunk_size, reduction, ignore rows, bias) -> path: chunks 1 / several, ignore or not, bias -> operator
CASES = [
    (None, "mean", False, False),  # one chunk (37 rows < 512)
    (8, "sum", False, False),  # 5 chunks, the last one short
    (8, "mean", True, False),  # ignored rows across chunks
    (None, "sum", True, False),
    (8, "mean", True, True),  # a bias: the operator
]


def test_traced_equals_materialised_reference_on_both_sides_of_every_switch(traced):
    x, w, b, y, y_ign = _data()

    def losses(leaves, y, y_ign, b):
        out = []
        for (xl, wl), (cs, red, ign, bias) in zip(leaves, CASES):
            out.append(lk.linear_cross_entropy(xl, wl, y_ign if ign else y, bias=b if bias else None, chunk_size=cs, reduction=red,
                                               ignore_index=IGNORE if ign else None))
        return out

    leaves = [[a.clone().requires_grad_(True) for a in (x, w)] for _ in CASES]
    compiled = torch.compile(losses, fullgraph=True)
    out = compiled(leaves, y, y_ign, b)
    assert len(traced) == 4  # the cases without a bias took the traced form
    grad_out = torch.tensor(1.7, dtype=torch.float64)
    (sum(out) * grad_out).backward()
    for (xl, wl), loss, (cs, red, ign, bias) in zip(leaves, out, CASES):
        ref, gx, gw = _reference(x, w, b if bias else None, y_ign if ign else y, red, IGNORE if ign else None)
        name = f"chunk_size={cs} {red} ignore={ign} bias={bias}"
        torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12, msg=name)
        torch.testing.assert_close(xl.grad, gx * 1.7, rtol=1e-9, atol=1e-12, msg=name)
        torch.testing.assert_close(wl.grad, gw * 1.7, rtol=1e-9, atol=1e-12, msg=name)


def test_traced_all_rows_ignored_and_nan_hidden_state_of_ignored_rows(traced):
    x, w, _, y, y_ign = _data()
    x = x.clone()
    x[y_ign == IGNORE] = float("nan")  # padding may hold anything: it must not reach dW
    fn = torch.compile(lambda x, w, y: lk.linear_cross_entropy(x, w, y, ignore_index=IGNORE, chunk_size=8), fullgraph=True)
    xs, ws = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    loss = fn(xs, ws, y_ign)
    loss.backward()
    keep = y_ign != IGNORE
    ref, gx, gw = _reference(x[keep], w, None, y_ign[keep], "mean", IGNORE)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(xs.grad[keep], gx, rtol=1e-9, atol=1e-12)
    assert bool((xs.grad[~keep] == 0).all())
    torch.testing.assert_close(ws.grad, gw, rtol=1e-9, atol=1e-12)
    # every row ignored: 0 and zero gradients (the eager rule)
    xa, wa = _data()[0].requires_grad_(True), w.clone().requires_grad_(True)
    loss = fn(xa, wa, torch.full_like(y, IGNORE))
    loss.backward()
    assert float(loss.detach()) == 0.0 and not xa.grad.any() and not wa.grad.any()
    assert len(traced) == 2


def test_traced_float32_and_autocast_match_the_operator(traced):
    """float32, and autocast bfloat16 (matmuls in bfloat16, statistics and dW in float32): the
    operator's numbers within the tolerances the autocast tests use."""
    x, w, _, y, y_ign = _data(torch.float32)

    def head(x, w, y, amp):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            return lk.linear_cross_entropy(x, w, y, ignore_index=IGNORE, chunk_size=8)

    fn = torch.compile(head, fullgraph=True)
    for amp, rtol, gtol in ((False, 1e-5, 1e-5), (True, 2e-2, 5e-2)):
        xs, ws = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        loss = fn(xs, ws, y_ign, amp)
        loss.backward()
        xo, wo = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            ref = lk.linear_cross_entropy(xo, wo, y_ign, ignore_index=IGNORE, chunk_size=8)  # eager: the operator
        ref.backward()
        assert loss.dtype == torch.float32 and xs.grad.dtype == ws.grad.dtype == torch.float32
        torch.testing.assert_close(loss, ref, rtol=rtol, atol=0)
        for got, want in ((xs.grad, xo.grad), (ws.grad, wo.grad)):
            err = (got - want).abs().max() / want.abs().max()
            assert err < gtol, (amp, float(err))
    assert len(traced) == 2


def test_traced_raises_the_eager_class_id_error(traced):
    x, w, _, y, _ = _data()
    bad = y.clone()
    bad[5] = V
    with pytest.raises(ValueError) as eager:
        lk.linear_cross_entropy(x, w.clone().requires_grad_(True), bad)
    fn = torch.compile(lambda x, w, y: lk.linear_cross_entropy(x, w, y), fullgraph=True)
    with pytest.raises(Exception) as compiled:
        fn(x, w.clone().requires_grad_(True), bad)
    assert str(eager.value) in str(compiled.value)
