"""linear_cross_entropy under ``torch.compile`` and ``torch.autocast``.

* One compiled function (``fullgraph=True``, so any graph break fails) evaluates every option
  set at once, each on its own leaves, and is compared with the materialised float64
  reference (value and the gradients of x, W, b): one compilation for all options, because
  compiling costs seconds on CPU.
* A subprocess compares the peak-RSS rise of the compiled head with the eager one (the
  operator is opaque, so Inductor cannot fuse the chunk loop back into whole logits) and
  checks that compiling prints no Dynamo warning from losskit or array-api-compat.
* Autocast: the same numbers as explicitly cast bfloat16 inputs, and the materialised
  reference of torch's own autocast within the half-precision tolerances.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import losskit as lk

torch = pytest.importorskip("torch")
F = torch.nn.functional

from test_fused_linear_cross_entropy import IGNORE, _reference  # noqa: E402  (the float64 reference)

from losskit.interop import torch_fused  # noqa: E402

N, H, V = 37, 16, 203  # odd shapes; chunk_size=8 gives 5 chunks, the last one short

# name -> (options, reduction); "cw", "sw", "mask" are bound to tensors below
OPTION_SETS = {
    "plain_mean": ({}, "mean"),
    "ignore_sum": ({"ignore_index": IGNORE}, "sum"),
    "class_weight_ignore": ({"class_weight": "cw", "ignore_index": IGNORE}, "mean"),
    "smooth_pytorch_cw": ({"label_smoothing": 0.1, "class_weight": "cw", "ignore_index": IGNORE}, "mean"),
    "smooth_megatron_none": ({"label_smoothing": 0.1, "smoothing_formula": "megatron", "ignore_index": IGNORE}, "none"),
    "zloss_softcap": ({"z_loss": 1e-2, "softcap": 3.0, "ignore_index": IGNORE}, "mean"),
    "weights_mask_sum": ({"sample_weight": "sw", "mask": "mask", "ignore_index": IGNORE}, "sum"),
    "normalizer": ({"normalizer": 50.0, "ignore_index": IGNORE}, "mean"),
    "recompute_none": ({"grad_in_forward": False, "ignore_index": IGNORE}, "none"),
    "recompute_cw_mean": ({"grad_in_forward": False, "class_weight": "cw", "z_loss": 1e-3}, "mean"),
}
_REFERENCE_ONLY = ("grad_in_forward",)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, H, generator=g, dtype=torch.float64)
    w = torch.randn(V, H, generator=g, dtype=torch.float64) * 0.5
    b = torch.randn(V, generator=g, dtype=torch.float64) * 0.5
    y = torch.randint(0, V, (N,), generator=g)
    y_ign = torch.where(torch.rand(N, generator=g) < 0.2, torch.full_like(y, IGNORE), y)
    bound = {
        "cw": torch.rand(V, generator=g, dtype=torch.float64) + 0.5,
        "sw": torch.rand(N, generator=g, dtype=torch.float64) + 0.5,
        "mask": torch.rand(N, generator=g) > 0.2,
    }
    return x, w, b, y, y_ign, bound


def _options(opts, bound):
    return {k: bound[v] if isinstance(v, str) and v in bound else v for k, v in opts.items()}


def test_compiled_fullgraph_equals_materialised_reference_for_every_option():
    x, w, b, y, y_ign, bound = _data()
    names = list(OPTION_SETS)
    g_out = {name: torch.rand(N if OPTION_SETS[name][1] == "none" else (), dtype=torch.float64) + 0.5 for name in names}

    def all_losses(leaves, y, y_ign, cw, sw, mask):
        tensors = {"cw": cw, "sw": sw, "mask": mask}
        losses = []
        for (xl, wl, bl), name in zip(leaves, names):
            opts, reduction = OPTION_SETS[name]
            target = y_ign if "ignore_index" in opts else y
            losses.append(lk.linear_cross_entropy(xl, wl, target, bias=bl, reduction=reduction, chunk_size=8, **_options(opts, tensors)))
        extras = lk.linear_cross_entropy_with_extras(leaves[0][0], leaves[0][1], y_ign, bias=leaves[0][2], ignore_index=IGNORE, chunk_size=8)
        return losses, extras

    compiled = torch.compile(all_losses, fullgraph=True)  # a graph break raises
    leaves = [[a.detach().clone().requires_grad_(True) for a in (x, w, b)] for _ in names]
    losses, extras = compiled(leaves, y, y_ign, bound["cw"], bound["sw"], bound["mask"])
    sum(((loss * g_out[name]).sum() for loss, name in zip(losses, names))).backward()
    assert not torch_fused._STASH  # every gradient computed in forward was taken by its backward
    for (xl, wl, bl), loss, name in zip(leaves, losses, names):
        opts, reduction = OPTION_SETS[name]
        ref_opts = {k: v for k, v in _options(opts, bound).items() if k not in _REFERENCE_ONLY}
        if "z_loss" in ref_opts:
            ref_opts["z_loss_weight"] = ref_opts.pop("z_loss")
        target = y_ign if "ignore_index" in opts else y
        xr, wr, br = (a.detach().clone().requires_grad_(True) for a in (x, w, b))
        ref = _reference(xr, wr, br, target, reduction=reduction, **ref_opts)
        torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-12, msg=name)
        want = torch.autograd.grad((ref * g_out[name]).sum(), [xr, wr, br])
        for got, exp, what in zip((xl.grad, wl.grad, bl.grad), want, "xWb"):
            torch.testing.assert_close(got, exp, rtol=1e-9, atol=1e-12, msg=f"{name}: d{what}")
    ref = _reference(x, w, b, y_ign, reduction="mean", ignore_index=IGNORE)
    torch.testing.assert_close(extras.loss, ref, rtol=1e-10, atol=1e-12)
    z = x @ w.T + b
    valid = y_ign != IGNORE
    torch.testing.assert_close(extras.lse, torch.logsumexp(z, -1))
    assert not extras.lse.requires_grad and not extras.accuracy.requires_grad
    acc = ((z.argmax(-1) == y_ign) & valid).sum() / valid.sum()
    torch.testing.assert_close(extras.accuracy, acc.to(extras.accuracy.dtype))


def test_compiled_default_mode_and_no_grad():
    """Default ``torch.compile`` (graph breaks allowed, none expected) in float32, with and
    without a gradient, against eager."""
    x, w, b, y, y_ign, _ = _data()
    x, w, b = x.float(), w.float(), b.float()
    fn = torch.compile(lambda x, w, b, y: lk.linear_cross_entropy(x, w, y, bias=b, ignore_index=IGNORE, chunk_size=16))
    xs, ws, bs = (a.clone().requires_grad_(True) for a in (x, w, b))
    loss = fn(xs, ws, bs, y_ign)
    loss.backward()
    xe, we, be = (a.clone().requires_grad_(True) for a in (x, w, b))
    ref = lk.linear_cross_entropy(xe, we, y_ign, bias=be, ignore_index=IGNORE, chunk_size=16)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    for got, want in ((xs.grad, xe.grad), (ws.grad, we.grad), (bs.grad, be.grad)):
        torch.testing.assert_close(got, want)
    with torch.no_grad():
        torch.testing.assert_close(fn(x, w, b, y_ign), ref.detach())


def test_gradients_computed_in_forward_are_freed_with_an_unused_graph():
    """The ticket's entry lives as long as the graph: a loss dropped without backward frees its
    dx / dW (no leak), and the graph's backward takes them exactly once."""
    import gc

    x, w, b, y, _, _ = _data()
    xs, ws = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    loss = lk.linear_cross_entropy(xs, ws, y)
    assert len(torch_fused._STASH) == 1
    del loss
    gc.collect()
    assert not torch_fused._STASH
    loss = lk.linear_cross_entropy(xs, ws, y)
    loss.backward(retain_graph=True)
    assert not torch_fused._STASH
    with pytest.raises(RuntimeError, match="grad_in_forward=False"):
        loss.backward()


# --- autocast -------------------------------------------------------------------------------


@pytest.mark.parametrize("grad_in_forward", [None, False])
def test_autocast_equals_explicit_bfloat16_inputs(grad_in_forward):
    """Under autocast the projection runs in bfloat16 (as F.linear does) and the statistics in
    float32: exactly the numbers of bfloat16 inputs; float32 leaves get float32 gradients
    (the bfloat16 gradients, cast, as autograd of a cast gives)."""
    x, w, b, y, y_ign, _ = _data()
    x, w, b = x.float(), w.float(), b.float()
    xs, ws, bs = (a.clone().requires_grad_(True) for a in (x, w, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = lk.linear_cross_entropy(xs, ws, y_ign, bias=bs, ignore_index=IGNORE, chunk_size=8, grad_in_forward=grad_in_forward)
    loss.backward()
    xl, wl, bl = (a.to(torch.bfloat16).requires_grad_(True) for a in (x, w, b))
    ref = lk.linear_cross_entropy(xl, wl, y_ign, bias=bl, ignore_index=IGNORE, chunk_size=8, grad_in_forward=grad_in_forward)
    ref.backward()
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=0, atol=0)
    for got, want in ((xs.grad, xl.grad), (ws.grad, wl.grad), (bs.grad, bl.grad)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want.float(), rtol=0, atol=0)
    # the autocast result differs from the float32 one: the matmul really ran in bfloat16
    assert float(loss) != float(lk.linear_cross_entropy(x, w, y_ign, bias=b, ignore_index=IGNORE))


def test_autocast_against_torch_autocast_reference():
    """Within the half-precision tolerances of test_fused_linear_cross_entropy against torch's
    own autocast of ``F.cross_entropy(F.linear(x, W, b))`` (logits materialised)."""
    x, w, b, y, y_ign, _ = _data()
    x, w, b = x.float(), w.float(), b.float()
    xs, ws, bs = (a.clone().requires_grad_(True) for a in (x, w, b))
    xr, wr, br = (a.clone().requires_grad_(True) for a in (x, w, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = lk.linear_cross_entropy(xs, ws, y_ign, bias=bs, ignore_index=IGNORE, label_smoothing=0.1)
        ref = F.cross_entropy(F.linear(xr, wr, br).float(), y_ign, ignore_index=IGNORE, label_smoothing=0.1)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=0)
    for got, want in ((xs.grad, xr.grad), (ws.grad, wr.grad), (bs.grad, br.grad)):
        err = (got - want).abs().max() / want.abs().max()
        assert err < 5e-2, float(err)


def test_autocast_off_and_float64_are_untouched():
    x, w, b, y, _, _ = _data()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out64 = lk.linear_cross_entropy(x, w, y, bias=b)  # float64 is not an autocast dtype
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64, _reference(x, w, b, y, reduction="mean"), rtol=1e-10, atol=1e-12)


# --- memory and warnings of the compiled head (subprocess) ------------------------------------

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    sys.path.insert(0, sys.argv[1])
    from _memory import peak, reset_peak, rss
    import torch, losskit as lk
    torch.manual_seed(0)
    n, h, v = 2048, 64, 16384
    x = torch.randn(n, h, requires_grad=True)
    w = (torch.randn(v, h) * 0.05).requires_grad_(True)
    y = torch.randint(0, v, (n,))
    def head(x, w, y):
        return lk.linear_cross_entropy(x, w, y)
    def rise(fn):
        out = []
        for _ in range(3):
            x.grad = w.grad = None
            base = rss(); reset_peak()
            fn(x, w, y).backward()
            out.append(peak() - base)
        return min(out[1:]), float(fn(x, w, y).detach())
    eager, loss_eager = rise(head)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled, loss_compiled = rise(torch.compile(head, fullgraph=True))
    print(json.dumps({"eager": eager, "compiled": compiled, "loss": [loss_eager, loss_compiled],
                      "warnings": [str(c.message).splitlines()[0] for c in caught]}))
    """
)


def test_compiled_head_keeps_the_eager_memory_and_prints_no_dynamo_warning():
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, bench], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    logits = 2048 * 16384 * 4
    # eager: one 512-row float32 slab (32 MiB) + dW (4 MiB), far below the 128 MiB of logits
    assert res["eager"] < 0.5 * logits, res
    assert res["compiled"] <= 1.2 * res["eager"], res
    assert abs(res["loss"][0] - res["loss"][1]) < 1e-5, res
    ours = [m for m in res["warnings"] if "lru_cache" in m or "losskit" in m or "array_api_compat" in m]
    assert not ours, ours
