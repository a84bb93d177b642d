"""Edges of the torch fast paths of ``cross_entropy`` (the lean kernel of
``interop/torch_lean.py``) and of ``linear_cross_entropy`` (``interop/torch_fused.py``), by
class of failure:

* layout: the class axis last or not (a moved, non-contiguous view), for every target kind and
  option, on both sides of every chunk threshold;
* empty batches (N = 0);
* class ids of every integer dtype;
* masked / ignored rows holding NaN or ±inf (padding): exactly zero gradient, value unaffected;
  valid NaN rows still propagate;
* option combinations against the NumPy path (the reference implementation).

Every output (the value and the ``.backward()`` gradient) and every reduction is compared with
an independent reference: ``torch.nn.functional.cross_entropy`` in float64 on the materialised
logits (with the documented weight / mask / mean rule written out here), or losskit's NumPy
path. The thresholds are tested at their real values (``MIN_CHUNK``: numel <= 65536 takes the
one-chunk path) and, through ``small_chunks``, at small values so that ``MAX_CHUNK`` and the
block cutting of moved-axis layouts are reached with small arrays.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import losskit as lk

torch = pytest.importorskip("torch")
F = torch.nn.functional
lean = pytest.importorskip("losskit.interop.torch_lean")

REDUCTIONS = ["mean", "sum", "none"]
INT_DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.uint16, torch.uint32, torch.uint64]


def _probe(fn) -> bool:
    """True when ``fn()`` raises: used to mark tests that need a fix outside the files of the
    torch fast paths (see the reasons); once fixed, those tests run as ordinary tests."""
    try:
        fn()
    except Exception:
        return True
    return False


# _validate.check_class_ids tests ``ids.size == 0``; on torch ``.size`` is a method, so the
# early exit never fires and ``min`` of an empty tensor raises.
EMPTY_IDS_BUG = _probe(lambda: lk.cross_entropy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64)))
# classification._ce_prepare gathers class_weight[ids] and compares ids with ignore_index in
# the ids' own dtype: torch's index_select wants int32/int64, ``uint8 != -100`` wraps -100 to
# 156, and torch has no min/max for uint16/32/64 (check_class_ids).
PREPARE_INT_BUG = _probe(lambda: lk.cross_entropy(torch.zeros(1, 2), torch.zeros(1, dtype=torch.int8), class_weight=torch.ones(2)))
UINT_VALIDATE_BUG = _probe(lambda: lk.cross_entropy(torch.zeros(1, 2), torch.zeros(1, dtype=torch.uint16)))


def _uint8_ignore_wraps() -> bool:
    try:
        z, y = torch.zeros(1, 200), torch.tensor([156], dtype=torch.uint8)
        return lk.cross_entropy(z, y, ignore_index=-100, reduction="sum").item() == 0.0
    except Exception:
        return True


UINT8_IGNORE_BUG = _uint8_ignore_wraps()

# the autograd nodes that run the lean kernel: small float32/float64 inputs with a scalar
# reduction (interop.torch.GRAD_IN_FORWARD_MAX) take its backward already in the forward
LEAN_NODES = ("LeanLossFunctionBackward", "GradInForwardLossFunctionBackward", *lean.CrossEntropyKernel.recorded_nodes)


@pytest.fixture()
def small_chunks(monkeypatch):
    """Thresholds of 64 / 512 elements: one-chunk path up to 64, then chunks of numel // 8
    clamped to [64, 512], so arrays of a few thousand elements hit the MAX_CHUNK cap and cut
    moved-axis layouts inside their inner axes."""
    monkeypatch.setattr(lean, "MIN_CHUNK", 64)
    monkeypatch.setattr(lean, "MAX_CHUNK", 512)
    return 64, 512


# --- an independent reference ------------------------------------------------------------------


def reference(z, y, *, axis=-1, reduction="mean", ignore_index=None, class_weight=None, label_smoothing=0.0, weight=None, mask=None,
              z_loss=0.0):
    """losskit's documented cross_entropy from F.cross_entropy in float64: per-sample losses
    from torch (plus z_loss·logsumexp(z)², PaLM's z-loss), then weights, masks and the "mean"
    rule (Σ over valid samples of w_i·d_i with d_i = class_weight[y_i] for ids) written out.
    Returns (value, leaf) with ``leaf`` the float64 copy of ``z`` that the value is
    differentiable in."""
    leaf = z.detach().to(torch.float64).requires_grad_(True)
    zr = leaf.movedim(axis, 1) if leaf.ndim > 1 else leaf[None]
    ids = not torch.is_floating_point(y)
    if ids:
        t = y.to(torch.int64)
        if leaf.ndim == 1:
            t = t[None]
    else:
        t = y.to(torch.float64).movedim(axis, 1) if y.ndim > 1 else y.to(torch.float64)[None]
    cw = None if class_weight is None else class_weight.to(torch.float64)
    ii = -100 if ignore_index is None else ignore_index
    kw = {"ignore_index": ii} if ids else {}
    per = F.cross_entropy(zr, t, weight=cw, label_smoothing=label_smoothing, reduction="none", **kw)
    if z_loss:
        per = per + z_loss * torch.logsumexp(zr, 1) ** 2
    if leaf.ndim == 1:
        per = per[0]
    valid = torch.ones(per.shape, dtype=torch.bool)
    if ids and ignore_index is not None:
        valid &= y != ignore_index
    if mask is not None:
        valid &= mask
    per = torch.where(valid, per, torch.zeros_like(per))
    w = torch.ones_like(per) if weight is None else weight.to(torch.float64)
    terms = per * w
    if reduction == "none":
        return terms, leaf
    if reduction == "sum":
        return terms.sum(), leaf
    d = torch.ones_like(per)
    if ids and cw is not None:
        d = cw[torch.where(valid, y.to(torch.int64), 0)]
    denom = torch.where(valid, w * d, torch.zeros_like(w)).sum()
    return (terms.sum() / denom if denom != 0 else terms.sum() * 0.0), leaf


def check_against_reference(z, y, kw, *, reduction, grad, rtol=1e-9, atol=1e-11, lean_expected=True, seed=0):
    """Value (and the .backward() gradient under a non-uniform cotangent) of lk.cross_entropy
    on ``z`` against ``reference``."""
    zz = z.detach().clone().requires_grad_(grad)
    out = lk.cross_entropy(zz, y, reduction=reduction, **kw)
    ref, leaf = reference(z, y, reduction=reduction, **kw)
    assert out.shape == ref.shape
    torch.testing.assert_close(out.to(torch.float64), ref.detach(), rtol=rtol, atol=atol)
    if not grad:
        assert not out.requires_grad
        return out, None
    if lean_expected:
        assert type(out.grad_fn).__name__ in LEAN_NODES
    g = torch.Generator().manual_seed(seed)
    g_out = torch.rand(ref.shape, generator=g, dtype=torch.float64) + 0.5
    (gz,) = torch.autograd.grad(out, zz, g_out.to(out.dtype))
    (gr,) = torch.autograd.grad(ref, leaf, g_out)
    assert gz.dtype == z.dtype and gz.shape == z.shape
    torch.testing.assert_close(gz.to(torch.float64), gr, rtol=rtol, atol=atol)
    return out, gz


# --- layouts ------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("kw", [{}, {"ignore_index": 2, "class_weight": True}, {"probs": True}], ids=["ids", "ignore_cw", "probs"])
def test_z_loss_on_both_sides_of_min_chunk(small_chunks, kw, size, reduction):
    """z_loss (λ·LSE² per sample) on the one-chunk path and the chunked one: the fused
    log_softmax chunks do not compute it, so z_loss takes the declaration's math per chunk."""
    n = 4 if size == "small" else 60  # 4×16 = MIN_CHUNK elements; 60×16 = 960: chunks of 7 rows (120 elements)
    z, y = _draw((n, 16), -1, "probs" if kw.get("probs") else "ids", seed=3)
    opts = {"z_loss": 0.05}
    if kw.get("class_weight"):
        opts.update(ignore_index=2, class_weight=torch.rand(16, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.5)
    check_against_reference(z, y, opts, reduction=reduction, grad=True)


# (logits shape, class axis). "last" layouts are plain (rows, C) views; the others reach the
# kernel as moved, non-contiguous views.
def _layout(position, numel_side):
    c = 16
    if numel_side == "small":  # exactly MIN_CHUNK elements: the one-chunk path
        b, l = 64, 64
    else:  # just above MIN_CHUNK: chunked (several chunks of MIN_CHUNK elements)
        b, l = 64, 67
    assert (b * c * l <= 65536) == (numel_side == "small")
    return ((b, l, c), -1) if position == "last" else ((b, c, l), 1)


def _draw(shape, axis, kind, seed=0, num_classes=None):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    c = shape[axis]
    sample = tuple(d for i, d in enumerate(shape) if i != axis % len(shape))
    if kind == "ids":
        y = torch.randint(0, c, sample, generator=g)
    else:
        y = torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64) * 2, axis)
    return z, y


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "nograd"])
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("kind", ["ids", "probs"])
@pytest.mark.parametrize("position", ["last", "not_last"])
def test_layout_by_target_kind_by_smoothing_at_min_chunk(position, kind, smoothing, size, grad, reduction):
    """The crash of the review: class axis not last + probabilities or label smoothing made
    ``applies`` accept a layout the chunked kernel could not view as rows."""
    shape, axis = _layout(position, size)
    z, y = _draw(shape, axis, kind)
    check_against_reference(z, y, {"axis": axis, "label_smoothing": smoothing}, reduction=reduction, grad=grad)


# Layouts past the small path on the monkeypatched thresholds: 2-D strided, 3-D / 4-D with the
# class axis inside (blocks cut along outer and inner axes), a permutation of the leading axes
# with classes last, a 1-D single sample.
LAYOUTS = {
    "rows": ((300, 11), -1),
    "classes_first_2d": ((11, 300), 0),
    "mid_3d": ((5, 11, 70), 1),
    "mid_4d": ((3, 7, 5, 11), 1),
    "first_4d": ((7, 3, 5, 11), 0),
    "one_sample_big": ((1, 9, 400), 1),
    "single_row": ((700,), 0),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.1}, {"probs": True}, {"ignore_index": 2, "class_weight": True}],
                         ids=["ids", "smooth", "probs", "ignore_cw"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_across_chunk_and_max_chunk(small_chunks, layout, kw, reduction):
    shape, axis = LAYOUTS[layout]
    kw = dict(kw)
    kind = "probs" if kw.pop("probs", False) else "ids"
    z, y = _draw(shape, axis, kind, seed=3)
    if kw.pop("class_weight", False):
        kw["class_weight"] = torch.linspace(0.5, 1.5, shape[axis], dtype=torch.float64)
    if "ignore_index" in kw and y.ndim:
        y = y.clone()
        y.view(-1)[::4] = kw["ignore_index"]
    numel = math.prod(shape)
    assert numel > small_chunks[0]  # past the one-chunk path; most past the MAX_CHUNK cap too
    check_against_reference(z, y, {"axis": axis, **kw}, reduction=reduction, grad=True)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.1}], ids=["ids", "smooth"])
@pytest.mark.parametrize("layout", ["classes_first_2d", "mid_3d", "mid_4d"])
def test_moved_axis_in_low_precision(small_chunks, layout, kw, dtype, tol):
    shape, axis = LAYOUTS[layout]
    z, y = _draw(shape, axis, "ids", seed=4)
    zl = z.to(dtype)
    out, gz = check_against_reference(zl, y, {"axis": axis, **kw}, reduction="mean", grad=True, rtol=tol, atol=tol * 1e-2)
    assert out.dtype == (torch.float32 if dtype != torch.float64 else dtype)


def test_moved_axis_gradient_has_the_callers_layout():
    """G is allocated with the strides of the moved view, so the gradient autograd hands back
    for (N, C, L) logits is dense in their layout (no copy when accumulated)."""
    z = torch.randn(8, 16, 600, requires_grad=True)
    y = torch.randint(0, 16, (8, 600))
    lk.cross_entropy(z, y, axis=1).backward()
    assert z.grad.is_contiguous()
    ref = z.detach().clone().requires_grad_(True)
    F.cross_entropy(ref, y).backward()
    torch.testing.assert_close(z.grad, ref.grad)


# --- empty batches ------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape,axis", [((0, 5), -1), ((0, 5, 3), 1), ((2, 5, 0), 1)])
@pytest.mark.parametrize("kind", ["ids", "probs"])
@pytest.mark.parametrize("validate", [True, False])
def test_empty_batch_cross_entropy(kind, shape, axis, reduction, validate):
    if kind == "ids" and validate and EMPTY_IDS_BUG:
        pytest.xfail("needs _validate.check_class_ids to detect empty torch ids (ids.size is a method on torch)")
    z, y = _draw(shape, axis, kind)
    zz = z.clone().requires_grad_(True)
    out = lk.cross_entropy(zz, y, axis=axis, reduction=reduction, validate=validate)
    sample = tuple(d for i, d in enumerate(shape) if i != axis % len(shape))
    if reduction == "none":
        assert out.shape == sample
    else:
        assert out.shape == () and out.item() == 0.0
    out.sum().backward()
    assert zz.grad.shape == shape
    # NumPy, the reference implementation, agrees
    ref = lk.cross_entropy(z.numpy(), y.numpy(), axis=axis, reduction=reduction)
    np.testing.assert_array_equal(out.detach().numpy(), ref)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("grad_in_forward", [None, False])
@pytest.mark.parametrize("kw", [{}, {"ignore_index": -100, "class_weight": True}, {"label_smoothing": 0.1}, {"probs": True}],
                         ids=["ids", "ignore_cw", "smooth", "probs"])
def test_empty_batch_linear_cross_entropy(kw, grad_in_forward, reduction):
    kw = dict(kw)
    h, v = 4, 7
    x = torch.zeros(0, h, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    b = torch.randn(v, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(0, v, dtype=torch.float64) if kw.pop("probs", False) else torch.zeros(0, dtype=torch.int64)
    if kw.pop("class_weight", False):
        kw["class_weight"] = torch.rand(v, dtype=torch.float64)
    out = lk.linear_cross_entropy(x, w, y, bias=b, reduction=reduction, grad_in_forward=grad_in_forward, **kw)
    if reduction == "none":
        assert out.shape == (0,)
    else:
        assert out.shape == () and out.item() == 0.0
    out.sum().backward()
    assert x.grad.shape == (0, h)
    assert torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))
    value, grads = lk.linear_cross_entropy.value_and_grad(x.detach(), w.detach(), y, bias=b.detach(), reduction=reduction, **kw)
    assert value.shape == out.shape and grads.x.shape == (0, h) and not grads.weight.any() and not grads.bias.any()


# --- integer class ids ---------------------------------------------------------------------------


def _int_ids(dtype, n, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, c, (n,), generator=g).to(dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.1}, {"class_weight": True}, {"ignore_index": 3, "class_weight": True}],
                         ids=["plain", "smooth", "cw", "ignore_cw"])
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_every_integer_dtype_cross_entropy(dtype, kw, size, reduction):
    kw = dict(kw)
    n, c = (40, 10) if size == "small" else (7000, 10)  # 400 and 70000 logits: both sides of MIN_CHUNK
    if kw.pop("class_weight", False):
        if PREPARE_INT_BUG and dtype not in (torch.int32, torch.int64):
            pytest.xfail("needs classification._ce_prepare to convert torch ids to int64 (class_weight[ids])")
        kw["class_weight"] = torch.linspace(0.5, 1.5, c, dtype=torch.float64)
    validate = True
    if UINT_VALIDATE_BUG and dtype in (torch.uint16, torch.uint32, torch.uint64):
        validate = False  # torch has no min/max for these: the id check needs int64 ids first (see report)
    z, _ = _draw((n, c), -1, "ids")
    y = _int_ids(dtype, n, c)
    zz = z.clone().requires_grad_(True)
    out = lk.cross_entropy(zz, y, reduction=reduction, validate=validate, **kw)
    ref, leaf = reference(z, y.to(torch.int64), reduction=reduction, **kw)
    torch.testing.assert_close(out, ref.detach(), rtol=1e-10, atol=1e-12)
    g_out = torch.rand(ref.shape, dtype=torch.float64) + 0.5
    torch.testing.assert_close(torch.autograd.grad(out, zz, g_out)[0], torch.autograd.grad(ref, leaf, g_out)[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("grad_in_forward", [None, False])
@pytest.mark.parametrize("kw", [{}, {"ignore_index": 3, "class_weight": True}, {"label_smoothing": 0.1, "mask": True}],
                         ids=["plain", "ignore_cw", "smooth_mask"])
@pytest.mark.parametrize("dtype", INT_DTYPES, ids=str)
def test_every_integer_dtype_linear_cross_entropy(dtype, kw, grad_in_forward):
    kw = dict(kw)
    n, h, v = 50, 6, 13
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, h, generator=g, dtype=torch.float64)
    w = torch.randn(v, h, generator=g, dtype=torch.float64)
    y64 = torch.randint(0, v, (n,), generator=g)
    if kw.pop("class_weight", False):
        kw["class_weight"] = torch.linspace(0.5, 1.5, v, dtype=torch.float64)
    if kw.pop("mask", False):
        kw["mask"] = torch.rand(n, generator=g) > 0.3
    want = lk.linear_cross_entropy.value_and_grad(x, w, y64, chunk_size=16, **kw)
    xs, ws = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    out = lk.linear_cross_entropy(xs, ws, y64.to(dtype), chunk_size=16, grad_in_forward=grad_in_forward, **kw)
    out.backward()
    torch.testing.assert_close(out, want[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(xs.grad, want[1].x, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(ws.grad, want[1].weight, rtol=1e-10, atol=1e-13)
    # against the materialised reference too
    ref, leaf = reference(x @ w.T, y64, reduction="mean", **kw)
    torch.testing.assert_close(out, ref.detach(), rtol=1e-10, atol=1e-12)


def test_uint8_ids_are_not_confused_with_a_negative_ignore_index():
    """-100 does not fit in uint8; comparing in uint8 would wrap it to 156 and ignore class 156."""
    x = torch.randn(2, 3, dtype=torch.float64)
    w = torch.randn(200, 3, dtype=torch.float64)
    y = torch.tensor([156, 3], dtype=torch.uint8)
    got = lk.linear_cross_entropy(x, w, y, ignore_index=-100, reduction="none")
    want = F.cross_entropy(x @ w.T, y.long(), reduction="none")
    torch.testing.assert_close(got, want)


@pytest.mark.xfail(UINT8_IGNORE_BUG, reason="needs classification._ce_prepare to compare ids with ignore_index as int64", strict=True)
def test_uint8_ids_cross_entropy_negative_ignore_index():
    z = torch.randn(2, 200, dtype=torch.float64)
    y = torch.tensor([156, 3], dtype=torch.uint8)
    got = lk.cross_entropy(z, y, ignore_index=-100, reduction="none")
    torch.testing.assert_close(got, F.cross_entropy(z, y.long(), reduction="none"))


# --- masked / ignored rows holding NaN or inf -------------------------------------------------


PADDING = {"nan": float("nan"), "posinf": float("inf"), "neginf": float("-inf"), "mixed": None}


def _pad(z, rows, how):
    z = z.clone()
    if how == "mixed":
        z[rows] = torch.tensor([float("nan"), float("inf"), float("-inf"), 1e300], dtype=z.dtype).repeat(z.shape[-1] // 4 + 1)[: z.shape[-1]].to(z.dtype)
    else:
        z[rows] = PADDING[how]
    return z


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("how", list(PADDING))
@pytest.mark.parametrize("select", ["ignore_index", "mask", "mask_probs", "ignore_smooth", "ignore_cw_weight"])
def test_padding_rows_get_exact_zero_gradient(select, how, size, reduction):
    n, c = (40, 12) if size == "small" else (6000, 12)  # 480 and 72000 logits
    g = torch.Generator().manual_seed(5)
    z = torch.randn(n, c, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=g)
    pad = torch.zeros(n, dtype=torch.bool)
    pad[1::3] = True
    kw = {}
    if select.startswith("ignore"):
        y = torch.where(pad, torch.full_like(y, -1), y)
        kw["ignore_index"] = -1
        if select == "ignore_smooth":
            kw["label_smoothing"] = 0.1
        if select == "ignore_cw_weight":
            kw["class_weight"] = torch.linspace(0.5, 2.0, c, dtype=torch.float64)
            kw["weight"] = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    else:
        kw["mask"] = ~pad
        if select == "mask_probs":
            y = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64), -1)
    zp = _pad(z, pad, how).requires_grad_(True)
    out = lk.cross_entropy(zp, y, reduction=reduction, **kw)
    assert type(out.grad_fn).__name__ in LEAN_NODES
    assert torch.isfinite(out).all()
    # the reference runs on logits whose padding rows are clean: they must not matter
    ref, leaf = reference(z, y, reduction=reduction, **kw)
    torch.testing.assert_close(out, ref.detach(), rtol=1e-10, atol=1e-12)
    g_out = torch.rand(ref.shape, dtype=torch.float64) + 0.5
    (gz,) = torch.autograd.grad(out, zp, g_out)
    (gr,) = torch.autograd.grad(ref, leaf, g_out)
    assert torch.equal(gz[pad], torch.zeros_like(gz[pad]))
    torch.testing.assert_close(gz, gr, rtol=1e-10, atol=1e-12)
    # NumPy (the reference implementation) agrees on the padded input itself
    npkw = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    with np.errstate(all="ignore"):
        np_val, np_grad = lk.cross_entropy.value_and_grad(zp.detach().numpy(), y.numpy(), reduction=reduction, **npkw)
    np.testing.assert_allclose(out.detach().numpy(), np_val, rtol=1e-10, atol=1e-12)
    (g_sum,) = torch.autograd.grad(lk.cross_entropy(zp, y, reduction=reduction, **kw).sum(), zp)
    np.testing.assert_allclose(g_sum.numpy(), np_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", ["rows", "mid_3d", "mid_4d"])
@pytest.mark.parametrize("kw", [{"ignore_index": -1}, {"ignore_index": -1, "label_smoothing": 0.2}], ids=["ignore", "ignore_smooth"])
def test_padding_rows_every_chunk_threshold(small_chunks, layout, kw, reduction):
    """On the monkeypatched thresholds, padding rows straddle chunk and block boundaries."""
    shape, axis = LAYOUTS[layout]
    z, y = _draw(shape, axis, "ids", seed=6)
    pad = torch.zeros(y.shape, dtype=torch.bool)
    pad.view(-1)[::5] = True
    y = torch.where(pad, torch.full_like(y, -1), y)
    zm = z.movedim(axis, -1).clone()
    zm[pad] = float("nan")
    zp = zm.movedim(-1, axis).contiguous().requires_grad_(True)
    out = lk.cross_entropy(zp, y, axis=axis, reduction=reduction, **kw)
    assert torch.isfinite(out).all()
    ref, leaf = reference(z, y, axis=axis, reduction=reduction, **kw)
    torch.testing.assert_close(out, ref.detach(), rtol=1e-10, atol=1e-12)
    g_out = torch.rand(ref.shape, dtype=torch.float64) + 0.5
    (gz,) = torch.autograd.grad(out, zp, g_out)
    (gr,) = torch.autograd.grad(ref, leaf, g_out)
    assert torch.equal(gz.movedim(axis, -1)[pad], torch.zeros(int(pad.sum()), shape[axis], dtype=gz.dtype))
    torch.testing.assert_close(gz, gr, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("size", ["small", "large"])
def test_padding_rows_low_precision(dtype, size):
    n, c = (40, 12) if size == "small" else (6000, 12)
    z = torch.randn(n, c).to(dtype)
    y = torch.randint(0, c, (n,))
    y[::2] = -1
    z[::2] = float("nan")
    z[2::4] = float("inf")
    zz = z.requires_grad_(True)
    out = lk.cross_entropy(zz, y, ignore_index=-1)
    out.backward()
    assert torch.isfinite(out) and torch.equal(zz.grad[::2], torch.zeros_like(zz.grad[::2]))
    assert torch.isfinite(zz.grad).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.1}, {"ignore_index": -1}], ids=["ids", "smooth", "ignore"])
def test_valid_nan_rows_still_propagate(kw, size, reduction):
    n, c = (40, 12) if size == "small" else (6000, 12)
    z = torch.randn(n, c, dtype=torch.float64)
    y = torch.randint(0, c, (n,))
    if "ignore_index" in kw:
        y[5] = -1
    z[3, 2] = float("nan")
    zz = z.requires_grad_(True)
    out = lk.cross_entropy(zz, y, reduction=reduction, **kw)
    if reduction == "none":
        assert torch.isnan(out[3]) and torch.isfinite(out[torch.arange(n) != 3]).all()
    else:
        assert torch.isnan(out)
    out.sum().backward()
    assert torch.isnan(zz.grad[3]).all()
    if "ignore_index" in kw:
        assert torch.equal(zz.grad[5], torch.zeros(c, dtype=zz.dtype))


@pytest.mark.parametrize("how", list(PADDING))
@pytest.mark.parametrize("select", ["ignore_index", "mask", "ignore_smooth", "ignore_softcap_zloss"])
@pytest.mark.parametrize("grad_in_forward", [None, False])
def test_linear_cross_entropy_padding_hidden_states(select, how, grad_in_forward):
    """Ignored / masked tokens whose hidden state is NaN or inf: their dx rows are 0, and dW,
    db are finite and equal to the reference without those tokens."""
    n, h, v = 37, 5, 29
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, h, generator=g, dtype=torch.float64)
    w = torch.randn(v, h, generator=g, dtype=torch.float64) * 0.5
    b = torch.randn(v, generator=g, dtype=torch.float64)
    y = torch.randint(0, v, (n,), generator=g)
    pad = torch.zeros(n, dtype=torch.bool)
    pad[2::5] = True
    kw = {}
    if select == "mask":
        kw["mask"] = ~pad
    else:
        y = torch.where(pad, torch.full_like(y, -100), y)
        kw["ignore_index"] = -100
        if select == "ignore_smooth":
            kw["label_smoothing"] = 0.1
        if select == "ignore_softcap_zloss":
            kw.update(softcap=3.0, z_loss_weight=1e-2)
    xp = x.clone()
    if how == "mixed":
        xp[pad] = torch.tensor([float("nan"), float("inf"), float("-inf"), 1e300, 0.0], dtype=x.dtype)
    else:
        xp[pad] = PADDING[how]
    xs, ws, bs = (a.clone().requires_grad_(True) for a in (xp, w, b))
    for reduction in REDUCTIONS:
        for leaf in (xs, ws, bs):
            leaf.grad = None
        out = lk.linear_cross_entropy(xs, ws, y, bias=bs, reduction=reduction, chunk_size=8, grad_in_forward=grad_in_forward, **kw)
        assert torch.isfinite(out).all()
        out.sum().backward()
        assert torch.equal(xs.grad[pad], torch.zeros_like(xs.grad[pad]))
        for leaf in (xs, ws, bs):
            assert torch.isfinite(leaf.grad).all()
        # the same without the padding: x rows replaced by zeros
        xc = torch.where(pad[:, None], torch.zeros_like(x), x)
        want_v, want_g = lk.linear_cross_entropy.value_and_grad(xc, w, y, bias=b, reduction=reduction, chunk_size=8, **kw)
        torch.testing.assert_close(out.detach(), want_v, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ws.grad, want_g.weight, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(bs.grad, want_g.bias, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(xs.grad[~pad], want_g.x[~pad], rtol=1e-10, atol=1e-12)
    if select != "ignore_softcap_zloss":
        # materialised float64 reference: F.cross_entropy on the logits of the clean rows
        # G = d ref / d logits, then dW = Gᵀx, db = Σ G, dx = G W
        xr = torch.where(pad[:, None], torch.zeros_like(x), x)
        ref, logits = reference(xr @ w.T + b, y, **kw)
        (G,) = torch.autograd.grad(ref, logits)
        for leaf in (xs, ws, bs):
            leaf.grad = None
        out = lk.linear_cross_entropy(xs, ws, y, bias=bs, chunk_size=8, grad_in_forward=grad_in_forward, **kw)
        torch.testing.assert_close(out, ref.detach(), rtol=1e-10, atol=1e-12)
        out.backward()
        torch.testing.assert_close(ws.grad, G.T @ xr, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(bs.grad, G.sum(0), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(xs.grad[~pad], (G @ w)[~pad], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_linear_cross_entropy_padding_hidden_states_numpy_jax(backend):
    n, h, v = 23, 4, 11
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, h))
    w = rng.standard_normal((v, h))
    y = rng.integers(0, v, n)
    y[::4] = -100
    xp_ = x.copy()
    xp_[::4] = np.nan
    xp_[4::8] = np.inf
    xc = np.where((y == -100)[:, None], 0.0, x)
    want_v, want_g = lk.linear_cross_entropy.value_and_grad(xc, w, y, ignore_index=-100, chunk_size=5)
    if backend == "numpy":
        with np.errstate(all="ignore"):
            got_v, got_g = lk.linear_cross_entropy.value_and_grad(xp_, w, y, ignore_index=-100, chunk_size=5)
        gx, gw = got_g.x, got_g.weight
    else:
        jax = pytest.importorskip("jax")  # float64 is enabled in conftest
        jnp = jax.numpy
        f = lambda a, b: lk.linear_cross_entropy(a, b, jnp.asarray(y), ignore_index=-100, chunk_size=5)  # noqa: E731
        got_v, (gx, gw) = jax.value_and_grad(f, argnums=(0, 1))(jnp.asarray(xp_), jnp.asarray(w))
        got_v, gx, gw = (np.asarray(a) for a in (got_v, gx, gw))
    np.testing.assert_allclose(got_v, want_v, rtol=1e-10)
    assert np.all(gx[::4] == 0) and np.isfinite(gw).all()
    np.testing.assert_allclose(gw, want_g.weight, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(gx[y != -100], want_g.x[y != -100], rtol=1e-10, atol=1e-13)


# --- option combinations against the NumPy path ------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("n", [5461, 5462, 5470], ids=["numel_65532", "numel_65544", "numel_65640"])
@pytest.mark.parametrize("combo", ["cw_ignore", "cw_ignore_mask", "cw_ignore_mask_weight", "mask_weight_smooth", "all_smooth"])
def test_options_match_numpy_across_min_chunk(combo, n, reduction):
    """class_weight + ignore_index + mask + weight on both sides of MIN_CHUNK (C = 12, so 5461
    rows are 65532 logits: one chunk; 5462 rows are 65544: chunked)."""
    c = 12
    rng = np.random.default_rng(n)
    z = rng.standard_normal((n, c)) * 2
    y = rng.integers(0, c, n)
    kw = {}
    if "ignore" in combo or combo == "all_smooth":
        y[rng.random(n) < 0.15] = -7
        kw["ignore_index"] = -7
    if "cw" in combo or combo == "all_smooth":
        kw["class_weight"] = rng.uniform(0.2, 2.0, c)
    if "mask" in combo or combo == "all_smooth":
        kw["mask"] = rng.random(n) > 0.2
    if "weight" in combo or combo == "all_smooth":
        kw["weight"] = rng.uniform(0.5, 1.5, n)
    if "smooth" in combo:
        kw["label_smoothing"] = 0.15
    np_val, np_grad = lk.cross_entropy.value_and_grad(z, y, reduction=reduction, **kw)
    tkw = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    zt = torch.from_numpy(z).requires_grad_(True)
    out = lk.cross_entropy(zt, torch.from_numpy(y), reduction=reduction, **tkw)
    assert type(out.grad_fn).__name__ in LEAN_NODES
    np.testing.assert_allclose(out.detach().numpy(), np_val, rtol=1e-11, atol=1e-13)
    out.sum().backward()  # for "none": the gradient of the sum, which is what NumPy's grad returns
    np.testing.assert_allclose(zt.grad.numpy(), np_grad, rtol=1e-10, atol=1e-14)
    with torch.no_grad():
        np.testing.assert_allclose(lk.cross_entropy(zt, torch.from_numpy(y), reduction=reduction, **tkw).numpy(), np_val, rtol=1e-11, atol=1e-13)
