"""The small-batch gradient-in-forward path of ``cross_entropy`` on torch
(``CrossEntropyKernel.value_and_grad``: log_softmax, nll_loss and its backward ops), both
sides of every condition that selects it, against torch's own ``F.cross_entropy`` in float64."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import losskit as lk  # noqa: E402
from losskit.interop import torch_lean  # noqa: E402


@pytest.fixture
def spy(monkeypatch):
    """Records the calls of the small paths' nll_loss: "recorded" (``recorded``: torch's ops
    recorded by autograd) or "in_forward" (``value_and_grad``, inside the bridge's Function)."""
    calls = []
    for attr, tag in (("_NLL", "in_forward"), ("_NLL_FORWARD", "recorded")):
        real = getattr(torch_lean, attr)

        def counted(*args, real=real, tag=tag):
            calls.append(tag)
            return real(*args)

        monkeypatch.setattr(torch_lean, attr, counted)
    return calls


def _check(z0, y, lk_kw, peer_kw, *, axis=-1, rtol, recorded=False):
    """Value and gradient (cotangent 3) of lk vs F.cross_entropy on the float64 logits."""
    z = z0.clone().requires_grad_(True)
    out = lk.cross_entropy(z, y, axis=axis, **lk_kw)
    assert type(out.grad_fn).__name__ == ("NllLossBackward0" if recorded else "GradInForwardLossFunctionBackward")
    (g,) = torch.autograd.grad(3.0 * out, z)
    zr = z0.detach().double().requires_grad_(True)
    zp = zr if axis in (-1, z0.ndim - 1) or z0.ndim < 2 else zr.movedim(axis, 1)
    if z0.ndim > 2 and axis in (-1, z0.ndim - 1):
        zp = zr.movedim(-1, 1)
    want = F.cross_entropy(zp, y, **peer_kw)
    (wg,) = torch.autograd.grad(3.0 * want, zr)
    assert out.dtype == z0.dtype and g.dtype == z0.dtype and g.shape == z0.shape
    torch.testing.assert_close(out.double(), want, rtol=rtol, atol=0)
    torch.testing.assert_close(g.double(), wg, rtol=rtol, atol=rtol * 1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["2d", "1d", "3d_last", "moved_axis"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_small_path_equals_torch(dtype, layout, weighted, reduction, spy):
    g = torch.Generator().manual_seed(3)
    shape, axis = {"2d": ((7, 5), -1), "1d": ((5,), -1), "3d_last": ((3, 4, 5), -1), "moved_axis": ((3, 5, 4), 1)}[layout]
    z = (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype)
    samples = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    y = torch.randint(0, 5, samples, generator=g)
    cw = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
    lk_kw = {"reduction": reduction, **({"class_weight": cw.to(dtype)} if weighted else {})}
    peer_kw = {"reduction": reduction, **({"weight": cw} if weighted else {})}
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    recorded = layout == "2d" and not weighted  # (N, C) without class weights: torch's ops recorded
    _check(z, y, lk_kw, peer_kw, axis=axis, rtol=rtol, recorded=recorded)
    # a moved class axis whose rows do not merge into a (rows, C) view keeps the other path
    assert spy == ([] if layout == "moved_axis" else ["recorded" if recorded else "in_forward"])


@pytest.mark.parametrize(
    "case",
    ["ignore_index", "ignore_index_none_ignored", "mask", "weight", "label_smoothing", "int32_ids", "above_chunk"],
)
def test_other_side_of_each_condition_equals_torch(case, spy, monkeypatch):
    """Rows that may be ignored or masked, per-sample weights, smoothing and large inputs keep
    forward-then-backward; int32 ids are converted and take the small path."""
    g = torch.Generator().manual_seed(5)
    z = torch.randn(8, 6, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 6, (8,), generator=g)
    lk_kw, peer_kw, taken = {}, {}, 0
    if case == "ignore_index":
        y[2] = -100
        lk_kw, peer_kw = {"ignore_index": -100}, {"ignore_index": -100}
    elif case == "ignore_index_none_ignored":  # valid is an array even when nothing is ignored
        lk_kw, peer_kw = {"ignore_index": 7}, {"ignore_index": 7}
    elif case == "mask":
        m = torch.ones(8, dtype=torch.bool)
        m[[1, 4]] = False
        z = z.clone()
        z[1] = float("nan")  # masked rows get exact zeros, whatever their logits
        lk_kw = {"mask": m}
        y2 = y.clone()
        y2[~m] = -100
        peer_kw = {"ignore_index": -100}
        y_peer = y2
    elif case == "weight":
        w = torch.rand(8, generator=g, dtype=torch.float64)
        zz = z.clone().requires_grad_(True)
        out = lk.cross_entropy(zz, y, weight=w)
        zr = z.clone().requires_grad_(True)
        want = (F.cross_entropy(zr, y, reduction="none") * w).sum() / w.sum()
        torch.testing.assert_close(out, want, rtol=1e-12, atol=0)
        torch.testing.assert_close(torch.autograd.grad(out, zz)[0], torch.autograd.grad(want, zr)[0], rtol=1e-12, atol=1e-15)
        assert not spy
        return
    elif case == "label_smoothing":
        lk_kw, peer_kw = {"label_smoothing": 0.1}, {"label_smoothing": 0.1}
    elif case == "int32_ids":
        taken = 1
        y = y.to(torch.int32)
    elif case == "above_chunk":
        monkeypatch.setattr(torch_lean, "MIN_CHUNK", z.numel() - 1)
    if case != "mask":
        y_peer = y.long()
    zz = z.clone().requires_grad_(True)
    out = lk.cross_entropy(zz, y, **lk_kw)
    (gz,) = torch.autograd.grad(3.0 * out, zz)
    zr = z.clone().requires_grad_(True)
    want = F.cross_entropy(zr, y_peer, **peer_kw)
    (wg,) = torch.autograd.grad(3.0 * want, zr)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=0)
    if case == "mask":
        assert torch.equal(gz[1], torch.zeros(6, dtype=gz.dtype))  # not NaN: exact zeros
        keep = torch.ones(8, dtype=torch.bool)
        keep[1] = False
        torch.testing.assert_close(gz[keep], wg[keep], rtol=1e-12, atol=1e-15)
    else:
        torch.testing.assert_close(gz, wg, rtol=1e-12, atol=1e-15)
    assert len(spy) == taken
    # at the chunk threshold itself the small path runs
    if case == "above_chunk":
        monkeypatch.setattr(torch_lean, "MIN_CHUNK", z.numel())
        lk.cross_entropy(z.clone().requires_grad_(True), y)
        assert len(spy) == 1


def test_small_path_non_finite_logits_and_errors(spy):
    z = torch.tensor([[0.0, 1.0, float("-inf")], [float("nan"), 0.0, 1.0], [float("-inf"), 2.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([1, 2, 0])
    zz = z.clone().requires_grad_(True)
    out = lk.cross_entropy(zz, y, reduction="sum")
    (g,) = torch.autograd.grad(out, zz)
    assert torch.isnan(out)  # the NaN row propagates
    assert torch.isnan(g[1]).all() and torch.isfinite(g[0]).all() and g[0, 2] == 0
    # a label at −inf: infinite loss; the other rows' gradients as torch's
    out0 = lk.cross_entropy(z[[0, 2]].clone().requires_grad_(True), y[[0, 2]], reduction="none")
    assert out0[1] == float("inf") and out0[0] == F.cross_entropy(z[[0]], y[[0]])
    zr = z[[0]].clone().requires_grad_(True)
    za = z[[0]].clone().requires_grad_(True)
    torch.testing.assert_close(torch.autograd.grad(lk.cross_entropy(za, y[[0]]), za)[0],
                               torch.autograd.grad(F.cross_entropy(zr, y[[0]]), zr)[0], rtol=1e-12, atol=1e-15)
    assert len(spy) >= 2
    zb = torch.randn(4, 3, requires_grad=True)
    with pytest.raises(ValueError, match=r"class id 3 at target\[2\] is out of range for 3 classes"):
        lk.cross_entropy(zb, torch.tensor([0, 1, 3, 2]))
    with pytest.raises((RuntimeError, IndexError)):  # validate=False: torch's own error, never a silent value
        lk.cross_entropy(zb, torch.tensor([0, 1, 3, 2]), validate=False)
    with pytest.raises((RuntimeError, IndexError)):
        lk.cross_entropy(zb, torch.tensor([0, -1, 1, 2]), validate=False)


def test_small_path_double_backward_and_kept_graph(spy):
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 1, 1, 2])
    cw = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: lk.cross_entropy(a, y, class_weight=cw), (z,))
    assert torch.autograd.gradgradcheck(lambda a: lk.cross_entropy(a, y, class_weight=cw), (z,))
    out = lk.cross_entropy(z, y)
    (g1,) = torch.autograd.grad(out, z, retain_graph=True)
    (g2,) = torch.autograd.grad(out, z)
    assert torch.equal(g1, g2)
    assert spy


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_class_id_check_eager_cpu_both_sides(dtype):
    """``check_class_ids``' written-out eager CPU path: in-range ids pass, out-of-range ids (the
    general path then locates them) raise the documented error; empty targets pass."""
    z = torch.randn(4, 3, requires_grad=True)
    lk.cross_entropy(z, torch.tensor([0, 2, 1, 2], dtype=dtype)).backward()
    with pytest.raises(ValueError, match=r"class id 3 at target\[1\] is out of range for 3 classes"):
        lk.cross_entropy(z, torch.tensor([0, 3, 1, 2], dtype=dtype))
    if dtype != torch.uint8:
        with pytest.raises(ValueError, match=r"class id -1 at target\[3\] is out of range"):
            lk.cross_entropy(z, torch.tensor([0, 2, 1, -1], dtype=dtype))
    out = lk.cross_entropy(torch.randn(0, 3, requires_grad=True), torch.zeros(0, dtype=dtype))
    assert out.item() == 0.0


# --- the recorded path (``CrossEntropyKernel.recorded``) and the fast call's deferred id check --


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_recorded_path_is_torch_bit_for_bit(dtype, reduction, spy):
    """(N, C) logits and int64 ids: the value is F.cross_entropy's own (same ops), on the first
    (general) call and on the fast call after it; gradients equal the float64 reference."""
    g = torch.Generator().manual_seed(11)
    for seed in range(3):
        z = (torch.randn(9, 7, generator=g, dtype=torch.float64) * 4).to(dtype)
        y = torch.randint(0, 7, (9,), generator=g)
        zz = z.clone().requires_grad_(True)
        out = lk.cross_entropy(zz, y, reduction=reduction)
        assert type(out.grad_fn).__name__ == "NllLossBackward0"
        assert torch.equal(out, F.cross_entropy(z, y, reduction=reduction))
        (gz,) = torch.autograd.grad(2.5 * out, zz)
        zr = z.double().requires_grad_(True)
        (wg,) = torch.autograd.grad(2.5 * F.cross_entropy(zr, y, reduction=reduction), zr)
        rtol = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(gz.double(), wg, rtol=rtol, atol=rtol * 1e-1 if dtype == torch.float32 else rtol * 1e-3)
    assert spy == ["recorded"] * 3


@pytest.mark.parametrize(
    "case", ["one_row_1d", "class_weight", "ignore_index", "normalizer", "weight", "smoothing", "above_chunk", "no_grad"]
)
def test_recorded_path_other_side_equals_torch(case, spy, monkeypatch):
    """Each condition of ``recorded`` on its other side: the in-forward path (or the generic
    bridge), still equal to F.cross_entropy in float64."""
    g = torch.Generator().manual_seed(12)
    z = torch.randn(8, 5, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, 5, (8,), generator=g)
    cw = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
    lk_kw, peer = {}, lambda a: F.cross_entropy(a, y)
    want_tags = ["in_forward"]
    if case == "one_row_1d":
        z, y = z[0], y[0]
        peer = lambda a: F.cross_entropy(a[None], y[None])  # noqa: E731
    elif case == "class_weight":
        lk_kw, peer = {"class_weight": cw}, lambda a: F.cross_entropy(a, y, weight=cw)  # noqa: E731
    elif case == "ignore_index":
        y[3] = -1
        lk_kw, peer = {"ignore_index": -1}, lambda a: F.cross_entropy(a, y, ignore_index=-1)  # noqa: E731
    elif case == "normalizer":  # a multiplier other than 1/N
        lk_kw, peer = {"normalizer": 3.0}, lambda a: F.cross_entropy(a, y, reduction="sum") / 3.0  # noqa: E731
    elif case == "weight":
        w = torch.rand(8, generator=g, dtype=torch.float64)
        lk_kw = {"weight": w}
        peer = lambda a: (F.cross_entropy(a, y, reduction="none") * w).sum() / w.sum()  # noqa: E731
    elif case == "smoothing":
        lk_kw, peer = {"label_smoothing": 0.2}, lambda a: F.cross_entropy(a, y, label_smoothing=0.2)  # noqa: E731
    elif case == "above_chunk":
        monkeypatch.setattr(torch_lean, "MIN_CHUNK", z.numel() - 1)
        want_tags = []
    zz = z.clone().requires_grad_(True)
    if case == "no_grad":
        with torch.no_grad():
            out = lk.cross_entropy(zz, y)
        torch.testing.assert_close(out, peer(z), rtol=1e-12, atol=0)
        assert spy == []
        return
    if case in ("ignore_index", "weight", "smoothing"):
        want_tags = []  # ignored rows, per-sample multipliers, smoothing: the lean forward, then backward
    out = lk.cross_entropy(zz, y, **lk_kw)
    assert type(out.grad_fn).__name__ != "NllLossBackward0"
    zr = z.clone().requires_grad_(True)
    want = peer(zr)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.autograd.grad(out, zz)[0], torch.autograd.grad(want, zr)[0], rtol=1e-12, atol=1e-15)
    assert spy == want_tags
    if case == "above_chunk":  # at the threshold itself the recorded path runs
        monkeypatch.setattr(torch_lean, "MIN_CHUNK", z.numel())
        assert type(lk.cross_entropy(z.clone().requires_grad_(True), y).grad_fn).__name__ == "NllLossBackward0"


def test_recorded_path_double_backward_and_kept_graph():
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 1, 1, 2])
    for _ in range(2):  # the general call, then the fast call
        assert type(lk.cross_entropy(z, y).grad_fn).__name__ == "NllLossBackward0"
        assert torch.autograd.gradcheck(lambda a: lk.cross_entropy(a, y), (z,))
        assert torch.autograd.gradgradcheck(lambda a: lk.cross_entropy(a, y, reduction="sum"), (z,))
    out = lk.cross_entropy(z, y)
    (g1,) = torch.autograd.grad(out, z, retain_graph=True)
    (g2,) = torch.autograd.grad(out, z)
    assert torch.equal(g1, g2)


@pytest.mark.parametrize(
    "dtype, bad",
    [(torch.int64, "too_large"), (torch.int64, "negative"), (torch.int64, "int64_min"),
     (torch.int32, "too_large"), (torch.int32, "negative"), (torch.uint8, "too_large")],
)
def test_fast_call_deferred_id_check_gives_the_documented_error(dtype, bad, spy):
    """On the fast call the range check of ids is nll_loss's own (validate=True, CPU); a bad id
    raises the documented error, word for word the general path's (first call of a signature);
    the id nll_loss would skip (the least int64) is caught by its total weight."""
    z = torch.randn(6, 4, requires_grad=True)
    good = torch.tensor([0, 3, 1, 2, 2, 0], dtype=dtype)
    for _ in range(2):
        lk.cross_entropy(z, good).backward()  # builds the fast call, then takes it
    assert spy == ["recorded", "recorded"]
    y = good.clone()
    y[4] = {"too_large": 4, "negative": -3, "int64_min": -(1 << 63)}[bad]
    with pytest.raises(ValueError) as fast:
        lk.cross_entropy(z, y)
    lk.cross_entropy._fast.clear()
    with pytest.raises(ValueError) as general:
        lk.cross_entropy(z, y)
    assert str(fast.value) == str(general.value)
    assert f"class id {int(y[4])} at target[4] is out of range for 4 classes" in str(fast.value)
    out = lk.cross_entropy(z, good)  # and the next good call is fine
    torch.testing.assert_close(out, F.cross_entropy(z, good.long()))
