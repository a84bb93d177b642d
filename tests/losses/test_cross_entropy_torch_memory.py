"""The lean torch backward of ``cross_entropy`` (``interop.torch.LEAN_KERNELS``): what it saves,
its peak memory, equality with ``F.cross_entropy``, double backward through the closed form,
and the cases that keep the generic bridge (torch.func). Layouts, empty batches, integer
dtypes and padding rows: ``test_cross_entropy_torch_lean.py``; under torch.compile (the
opaque operator that runs this kernel): ``test_cross_entropy_torch_compile.py``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import losskit as lk

torch = pytest.importorskip("torch")
F = torch.nn.functional

from test_cross_entropy_torch_lean import LEAN_NODES  # noqa: E402


def _saved_bytes(fn, *args):
    """Bytes of the tensors autograd saves for backward while building ``fn(*args)``."""
    sizes = []

    def pack(t):
        sizes.append((t.data_ptr(), t.numel() * t.element_size()))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args)
    return out, sum(dict(sizes).values())


@pytest.mark.parametrize("kw", [{}, {"ignore_index": -100}, {"class_weight": "cw"}, {"label_smoothing": 0.1}])
def test_saves_logits_but_no_softmax(kw):
    n, c = 256, 300  # above interop.torch.GRAD_IN_FORWARD_MAX (small inputs keep their gradient)
    z = torch.randn(n, c, requires_grad=True)
    y = torch.randint(0, c, (n,))
    if "class_weight" in kw:
        kw = {"class_weight": torch.rand(c)}
    out, saved = _saved_bytes(lambda p: lk.cross_entropy(p, y, **kw), z)
    assert type(out.grad_fn).__name__ == "LeanLossFunctionBackward", type(out.grad_fn).__name__
    logits = z.numel() * z.element_size()
    # logits (saved by reference, not copied) + per-row and per-class vectors; never a second N×C
    assert saved < logits + 16 * (n + c) + 1024, saved


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kw,tk", [({}, {}), ({"ignore_index": 3}, {"ignore_index": 3}), ({"label_smoothing": 0.2}, {"label_smoothing": 0.2}),
                                   ({"class_weight": "cw", "ignore_index": 3}, {"weight": "cw", "ignore_index": 3})])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_equals_torch_cross_entropy(dtype, kw, tk, reduction):
    g = torch.Generator().manual_seed(0)
    n, c = 300, 37  # several chunks would need more rows; _step is exercised in the peak test
    z = (torch.randn(n, c, generator=g) * 3).to(dtype).requires_grad_(True)
    y = torch.randint(0, c, (n,), generator=g)
    cw = torch.rand(c, generator=g) + 0.5
    kw = {k: (cw if v == "cw" else v) for k, v in kw.items()}
    tk = {k: (cw if v == "cw" else v) for k, v in tk.items()}
    out = lk.cross_entropy(z, y, reduction=reduction, **kw)
    zr = z.detach().float().requires_grad_(True)
    ref = F.cross_entropy(zr, y, reduction=reduction, **tk)
    g_out = torch.rand(ref.shape, generator=g) + 0.5
    (gz,) = torch.autograd.grad(out, z, g_out.to(out.dtype))
    (gr,) = torch.autograd.grad(ref, zr, g_out)
    tol = {torch.float64: 1e-6, torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)
    assert gz.dtype == dtype
    torch.testing.assert_close(gz.float(), gr, rtol=tol, atol=tol * 0.1)


def test_probability_targets_and_leading_axes():
    z = torch.randn(4, 5, 11, dtype=torch.float64, requires_grad=True)
    t = torch.softmax(torch.randn(4, 5, 11, dtype=torch.float64), -1)
    out = lk.cross_entropy(z, t, reduction="none")
    assert type(out.grad_fn).__name__ in LEAN_NODES
    ref = -(t * torch.log_softmax(z, -1)).sum(-1)
    torch.testing.assert_close(out, ref)
    g_out = torch.rand(4, 5, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(out, z, g_out)[0], torch.autograd.grad(ref, z, g_out)[0])


@pytest.mark.parametrize("kw", [{}, {"ignore_index": 1}, {"label_smoothing": 0.1}, {"target": "probs"}])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_and_gradgradcheck(kw, reduction):
    kw = dict(kw)
    z = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    if kw.pop("target", None) == "probs":
        y = torch.softmax(torch.randn(6, 5, dtype=torch.float64), -1)
    else:
        y = torch.tensor([0, 1, 2, 3, 4, 1])
    fn = lambda p: lk.cross_entropy(p, y, reduction=reduction, **kw)  # noqa: E731
    assert type(fn(z).grad_fn).__name__ in LEAN_NODES
    assert torch.autograd.gradcheck(fn, (z,))
    assert torch.autograd.gradgradcheck(fn, (z,))


def test_all_ignored_gives_zero_and_zero_grad():
    z = torch.randn(8, 5, requires_grad=True)
    y = torch.full((8,), -1)
    out = lk.cross_entropy(z, y, ignore_index=-1)
    out.backward()
    assert out.item() == 0.0 and torch.all(z.grad == 0)


def test_moved_class_axis_takes_the_lean_kernel():
    # class axis 1: the moved view is not a (rows, C) view; the kernel cuts it into blocks of
    # whole rows (above one chunk) or reads it strided (the small path); torch.func transforms
    # keep the generic bridge
    z = torch.randn(40, 7, 300, requires_grad=True)
    y = torch.randint(0, 7, (40, 300))
    out = lk.cross_entropy(z, y, axis=1)
    assert type(out.grad_fn).__name__ in LEAN_NODES
    out.backward()
    ref = z.detach().requires_grad_(True)
    F.cross_entropy(ref, y).backward()
    torch.testing.assert_close(out, F.cross_entropy(ref, y))
    torch.testing.assert_close(z.grad, ref.grad)
    small = torch.randn(4, 7, 3, requires_grad=True)
    y_small = torch.randint(0, 7, (4, 3))
    out = lk.cross_entropy(small, y_small, axis=1)
    assert type(out.grad_fn).__name__ in LEAN_NODES
    out.backward()
    ref = small.detach().requires_grad_(True)
    F.cross_entropy(ref, y_small).backward()
    torch.testing.assert_close(out, F.cross_entropy(ref, y_small))
    torch.testing.assert_close(small.grad, ref.grad)
    zf = torch.randn(5, 7)
    g = torch.func.grad(lambda p: lk.cross_entropy(p, torch.randint(0, 7, (5,))))(zf)
    assert g.shape == zf.shape


_PEAK_SCRIPT = textwrap.dedent(
    """
    import sys, torch, losskit as lk
    n, c = 2048, 4096  # 32 MiB of float32 logits
    axis = int(sys.argv[1])
    if axis == -1:
        z = torch.randn(n, c).requires_grad_(True)
        y = torch.randint(0, c, (n,))
    else:  # (N, C, L) with the class axis 1: the kernel sees a moved, non-contiguous view
        n, c = 32, 256
        z = torch.randn(n, c, 1024).requires_grad_(True)
        y = torch.randint(0, c, (n, 1024))
    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * 4096
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    lk.cross_entropy(z, y, axis=axis).backward()  # warm-up
    z.grad = None
    base = rss()
    open("/proc/self/clear_refs", "w").write("5")
    lk.cross_entropy(z, y, axis=axis).backward()
    print((hwm() - base) / (z.numel() * 4))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS via /proc")
@pytest.mark.parametrize("axis", [-1, 1], ids=["classes_last", "classes_moved"])
def test_peak_memory_is_about_logits_plus_gradient(axis):
    """Forward + backward allocate at most 1.2× the logits beyond the logits themselves (the
    gradient, one chunk, small vectors): peak ≤ 2.2× the logits' size. A moved class axis is
    cut into blocks (never copied in full) and its gradient is allocated in the caller's
    layout, so autograd does not copy it when accumulating."""
    # a fixed mmap threshold: every chunk-sized temporary is mapped and unmapped, so the peak
    # RSS is the live memory, not glibc's dynamic threshold keeping freed chunks on the heap
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    try:
        out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(axis)], capture_output=True, text=True, check=True, timeout=120, env=env)
    except subprocess.CalledProcessError as exc:  # e.g. /proc/self/clear_refs not writable
        pytest.skip(f"could not measure peak RSS: {exc.stderr.strip()[-200:]}")
    extra = float(out.stdout.strip())
    assert extra <= 1.2, f"fwd+bwd allocated {extra:.2f}x the logits"
