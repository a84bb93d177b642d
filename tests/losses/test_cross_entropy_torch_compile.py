"""``lk.cross_entropy`` under ``torch.compile``: one opaque ``losskit::cross_entropy`` operator
(``interop/torch_lean.py``) that runs the eager lean kernel, except for the plain case (float32/64
class ids on the last axis, ``ignore_index``, no other option), which is traced for Inductor to
fuse (``interop/torch_compiled.py``, ``test_cross_entropy_torch_compile_traced.py``).

* One compiled function (``fullgraph=True``: a graph break fails) evaluates every option set at
  once, each on its own leaf, on both sides of the kernel's chunk threshold, and is compared
  with the materialised float64 reference of ``test_cross_entropy_torch_lean`` (value and
  gradient under a non-uniform cotangent): one compilation for all options, because compiling
  costs seconds on CPU.
* Default mode in bfloat16, with and without a gradient: the same numbers as eager.
* The stashed graph: ``retain_graph`` backwards, freed with an unused graph.
* A subprocess compares the peak-RSS rise of a compiled training step with the eager one and
  checks that compiling prints no Dynamo warning from losskit or array-api-compat.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap

import pytest

import losskit as lk

torch = pytest.importorskip("torch")

from test_cross_entropy_torch_lean import reference  # noqa: E402  (F.cross_entropy in float64, rules written out)

from losskit.interop import torch_lean  # noqa: E402

IGNORE = -100
N, C = 37, 23  # 851 elements: above MIN_CHUNK = 64 of the "chunked" run, below the real 65536

# name -> (options, reduction); "cw", "sw", "mask" are bound to tensors, "probs" picks soft targets,
# "axis": 1 puts the classes in the middle of (N, C, 3) logits
OPTION_SETS = {
    "plain_mean": ({}, "mean"),
    "ignore_sum": ({"ignore_index": IGNORE}, "sum"),
    "class_weight_ignore_mean": ({"class_weight": "cw", "ignore_index": IGNORE}, "mean"),
    "smooth_class_weight_none": ({"label_smoothing": 0.1, "class_weight": "cw", "ignore_index": IGNORE}, "none"),
    "megatron_mean": ({"label_smoothing": 0.1, "smoothing_formula": "megatron"}, "mean"),
    "z_loss_ignore_mean": ({"z_loss": 1e-2, "ignore_index": IGNORE}, "mean"),
    "weight_mask_sum": ({"weight": "sw", "mask": "mask", "ignore_index": IGNORE}, "sum"),
    "normalizer_mean": ({"normalizer": 50.0, "ignore_index": IGNORE}, "mean"),
    "probs_smooth_mean": ({"probs": True, "label_smoothing": 0.2}, "mean"),
    "axis1_ignore_none": ({"axis": 1, "ignore_index": IGNORE}, "none"),
}


def _data():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(N, C, generator=g, dtype=torch.float64) * 2
    z3 = torch.randn(N, C, 3, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, C, (N,), generator=g)
    y_ign = torch.where(torch.rand(N, generator=g) < 0.2, torch.full_like(y, IGNORE), y)
    y3 = torch.randint(0, C, (N, 3), generator=g)
    y3[0, 1] = IGNORE
    probs = torch.softmax(torch.randn(N, C, generator=g, dtype=torch.float64), -1)
    bound = {
        "cw": torch.rand(C, generator=g, dtype=torch.float64) + 0.5,
        "sw": torch.rand(N, generator=g, dtype=torch.float64) + 0.5,
        "mask": torch.rand(N, generator=g) > 0.2,
    }
    return z, z3, y, y_ign, y3, probs, bound


def _inputs(name, z, z3, y, y_ign, y3, probs, bound):
    """(logits, target, keyword arguments of lk.cross_entropy) of one option set."""
    opts, reduction = OPTION_SETS[name]
    kw = {k: bound[v] if isinstance(v, str) and v in bound else v for k, v in opts.items() if k != "probs"}
    if opts.get("probs"):
        return z, probs, kw
    if opts.get("axis") == 1:
        return z3, y3, kw
    return z, (y_ign if "ignore_index" in opts else y), kw


def _reference(logits, target, kw, reduction):
    kw = dict(kw)
    if kw.pop("smoothing_formula", "pytorch") == "megatron":  # α of the PyTorch formula: α·C/(C − 1)
        kw["label_smoothing"] = kw["label_smoothing"] * C / (C - 1)
    normalizer = kw.pop("normalizer", None)
    value, leaf = reference(logits, target, reduction="sum" if normalizer else reduction, **kw)
    return (value / normalizer if normalizer else value), leaf


@pytest.fixture(scope="module")
def compiled_all_options():
    """One ``fullgraph=True`` compilation that evaluates every option set."""
    names = list(OPTION_SETS)

    def all_losses(leaves, y, y_ign, y3, probs, cw, sw, mask):
        bound = {"cw": cw, "sw": sw, "mask": mask}
        out = []
        for (z, z3), name in zip(leaves, names):
            logits, target, kw = _inputs(name, z, z3, y, y_ign, y3, probs, bound)
            out.append(lk.cross_entropy(logits, target, reduction=OPTION_SETS[name][1], **kw))
        return out

    return torch.compile(all_losses, fullgraph=True)


@pytest.mark.parametrize("chunked", [False, True], ids=["one_chunk", "chunked"])
def test_compiled_fullgraph_equals_materialised_reference_for_every_option(compiled_all_options, monkeypatch, chunked):
    if chunked:  # the thresholds are read when the operator runs (eagerly): 851 elements > 64
        monkeypatch.setattr(torch_lean, "MIN_CHUNK", 64)
        monkeypatch.setattr(torch_lean, "MAX_CHUNK", 128)
    z, z3, y, y_ign, y3, probs, bound = _data()
    names = list(OPTION_SETS)
    leaves = [(z.clone().requires_grad_(True), z3.clone().requires_grad_(True)) for _ in names]
    losses = compiled_all_options(leaves, y, y_ign, y3, probs, bound["cw"], bound["sw"], bound["mask"])
    g = torch.Generator().manual_seed(1)
    g_out = [torch.rand(loss.shape, generator=g, dtype=torch.float64) + 0.5 for loss in losses]
    sum((loss * go).sum() for loss, go in zip(losses, g_out)).backward()
    assert not torch_lean._STASH  # the graph's backward ran and was freed: its tickets are gone
    for (zl, z3l), loss, go, name in zip(leaves, losses, g_out, names):
        logits, target, kw = _inputs(name, z, z3, y, y_ign, y3, probs, bound)
        ref, leaf = _reference(logits, target, kw, OPTION_SETS[name][1])
        torch.testing.assert_close(loss, ref.detach(), rtol=1e-10, atol=1e-12, msg=name)
        (want,) = torch.autograd.grad(ref, leaf, go)
        got = z3l.grad if OPTION_SETS[name][0].get("axis") == 1 else zl.grad
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12, msg=name)


def test_compiled_default_mode_equals_eager_in_bfloat16():
    """Default ``torch.compile`` runs the eager kernel: the same numbers (bfloat16 logits, a
    float32 loss, a bfloat16 gradient), with and without a gradient; the class-id check still
    runs inside the operator."""
    dtype = torch.bfloat16
    z, _, _, y_ign, _, _, bound = _data()
    z = z.to(dtype)
    fn = torch.compile(lambda z, y, cw: lk.cross_entropy(z, y, ignore_index=IGNORE, class_weight=cw))
    zc, ze = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    loss = fn(zc, y_ign, bound["cw"])
    loss.backward()
    ref = lk.cross_entropy(ze, y_ign, ignore_index=IGNORE, class_weight=bound["cw"])
    ref.backward()
    assert loss.dtype == ref.dtype and zc.grad.dtype == dtype
    torch.testing.assert_close(loss, ref, rtol=0, atol=0)
    torch.testing.assert_close(zc.grad, ze.grad, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(fn(z, y_ign, bound["cw"]), ref.detach(), rtol=0, atol=0)
    assert not torch_lean._STASH
    with pytest.raises(ValueError, match="target"):
        fn(z, torch.full_like(y_ign, C), bound["cw"])  # out of range: the eager check raises
    plain = torch.compile(lambda z, y: lk.cross_entropy(z, y, ignore_index=IGNORE), fullgraph=True)
    zc, ze = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    loss, ref = plain(zc, y_ign), lk.cross_entropy(ze, y_ign, ignore_index=IGNORE)
    (loss + ref).backward()  # half logits without options: the operator too, the same numbers
    torch.testing.assert_close(loss, ref, rtol=0, atol=0)
    torch.testing.assert_close(zc.grad, ze.grad, rtol=0, atol=0)


def test_retain_graph_and_an_unused_graph_free_the_stash():
    z, _, y, _, _, _, bound = _data()
    # class weights: the operator (an unweighted call is traced and stashes nothing)
    fn = torch.compile(lambda z, y: lk.cross_entropy(z, y, reduction="sum", class_weight=bound["cw"]), fullgraph=True)
    zc = z.clone().requires_grad_(True)
    loss = fn(zc, y)
    assert len(torch_lean._STASH) == 1
    loss.backward(retain_graph=True)
    first = zc.grad.clone()
    loss.backward()
    torch.testing.assert_close(zc.grad, 2 * first)
    del loss
    gc.collect()
    assert not torch_lean._STASH
    loss = fn(zc, y)
    del loss
    gc.collect()
    assert not torch_lean._STASH


def test_what_the_operator_does_not_take_is_traced_and_still_correct():
    """A gradient for the sample weights, or a 0-d tensor ``label_smoothing``: the operator
    declines (``compiled_call`` returns NotImplemented) and the generic bridge is traced
    (default mode: the weights' gradient takes ``torch.autograd.grad``, a graph break)."""
    z, _, y, _, _, _, bound = _data()
    zc, w = z.clone().requires_grad_(True), bound["sw"].clone().requires_grad_(True)
    fn = torch.compile(lambda z, y, w, a: lk.cross_entropy(z, y, weight=w, label_smoothing=a))
    loss = fn(zc, y, w, torch.tensor(0.1, dtype=torch.float64))
    loss.backward()
    ze, we = z.clone().requires_grad_(True), bound["sw"].clone().requires_grad_(True)
    ref = lk.cross_entropy(ze, y, weight=we, label_smoothing=0.1)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(zc.grad, ze.grad)
    torch.testing.assert_close(w.grad, we.grad)


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    sys.path.insert(0, sys.argv[1])
    from _memory import peak, reset_peak, rss
    import torch, losskit as lk
    torch.manual_seed(0)
    n, c = 2048, 4096  # 32 MiB of float32 logits
    z = torch.randn(n, c, requires_grad=True)
    y = torch.randint(0, c, (n,))
    y[::7] = -100
    cw = torch.rand(c) + 0.5
    def step(z, y, cw):
        return lk.cross_entropy(z, y, ignore_index=-100, class_weight=cw)
    y_all = y.clamp(min=0)
    def plain(z, y, cw):  # no option: traced for Inductor (interop/torch_compiled.py)
        return lk.cross_entropy(z, y_all)
    def rise(fn):
        out = []
        for _ in range(3):
            z.grad = None
            base = rss(); reset_peak()
            fn(z, y, cw).backward()
            out.append(peak() - base)
        return min(out[1:]), float(fn(z, y, cw).detach())
    eager, loss_eager = rise(step)
    res = {"eager": eager, "loss": [loss_eager], "warnings": []}
    for fullgraph in (False, True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch._dynamo.reset()
            res[f"compiled_fullgraph_{fullgraph}"], loss = rise(torch.compile(step, fullgraph=fullgraph))
        res["loss"].append(loss)
        res["warnings"] += [str(w.message).splitlines()[0] for w in caught]
    res["plain_eager"] = rise(plain)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch._dynamo.reset()
        res["plain_compiled"], loss = rise(torch.compile(plain, fullgraph=True))
    res["plain_loss"] = [float(plain(z, y, cw).detach()), loss]
    res["warnings"] += [str(w.message).splitlines()[0] for w in caught]
    print(json.dumps(res))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS via /proc")
def test_compiled_step_keeps_the_eager_memory_and_prints_no_dynamo_warning():
    """Class weights + ignore_index, the case whose traced closed form peaked at 2x eager: the
    compiled step's peak-RSS rise is within 1.2x the eager one, in default mode and with
    ``fullgraph=True``, and compiling warns about nothing in losskit or array-api-compat. The
    same for a call without options (compiled cold: nothing of the eager fast call is traced),
    which Inductor compiles from traced torch ops."""
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")
    # a fixed mmap threshold: chunk temporaries are unmapped when freed, so RSS is live memory
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="131072")
    proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, bench], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    logits = 2048 * 4096 * 4
    assert res["eager"] < 1.3 * logits, res  # the gradient and one chunk
    for fullgraph in (False, True):
        assert res[f"compiled_fullgraph_{fullgraph}"] <= 1.2 * res["eager"], res
    assert max(res["loss"]) - min(res["loss"]) < 1e-5, res
    assert res["plain_compiled"] <= 1.2 * res["plain_eager"], res  # the traced path: nothing N×C saved
    assert abs(res["plain_loss"][0] - res["plain_loss"][1]) < 1e-5, res
    ours = [m for m in res["warnings"] if "lru_cache" in m or "losskit" in m or "array_api_compat" in m]
    assert not ours, ours
