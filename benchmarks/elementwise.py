"""Binary cross-entropy on 10^7 float32 logits: value and gradient.

* PyTorch: losskit's forward+backward (closed-form backward through autograd) vs
  ``torch.nn.functional.binary_cross_entropy_with_logits`` forward+backward, same tensors.
* NumPy: ``lk.binary_cross_entropy.value_and_grad`` vs the plain two-expression formula
  ``np.mean(np.logaddexp(0, z) - y * z)`` and ``(1 / (1 + np.exp(-z)) - y) / n``.

Times are medians of interleaved repetitions (the two contenders alternate, so machine noise
hits both alike); ratios are peer time / losskit time (> 1: losskit is faster). Peak memory is
the rise of the process's peak resident set during one call, each contender in a fresh
process; ratio is losskit / peer (<= 1: losskit uses no more).

``--floor`` prints instead the boosting table of issue 16 (goal 4): for ``binary_cross_entropy``,
``mse``, ``huber`` and ``poisson_nll``, value + gradient and gradient + Hessian with
``reduction="none"`` on NumPy and torch CPU, each contender's time as a percentage of the
copy-bandwidth floor measured in the same run: ``np.copyto`` of the same bytes (both inputs
read, both outputs written) into preallocated arrays. Beside it, ``np.copy`` into new arrays:
what any function returning fresh outputs pays at least (first-touch page faults included).
Contenders, interleaved: losskit with its fused kernels (``accel``,
the optional Numba extra), losskit's reference array-API path (``LOSSKIT_ACCEL=0``), and torch's
own function where one exists (forward with ``reduction="none"`` + autograd backward).

``--weighted`` adds per-sample weights (what gradient-boosting libraries pass every round); the
floor stays two arrays in and two out, so the weighted percentages are lower bounds. ``--losses`` / ``--needs`` pick rows of the table.

Usage: python benchmarks/elementwise.py [--n 10000000] [--repeats 15] [--floor [--weighted]]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _memory import peak, reset_peak, rss  # noqa: E402

N_DEFAULT = 10_000_000


def make_inputs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal(n) * 3).astype(np.float32)
    y = (rng.random(n) < 0.5).astype(np.float32)
    return z, y


# --- contenders: each takes (z, y) in its own array type and returns (value, grad) -------


def torch_losskit(z, y):
    import losskit as lk

    zz = z.detach().requires_grad_(True)
    v = lk.binary_cross_entropy(zz, y)
    v.backward()
    return v, zz.grad


def torch_peer(z, y):
    import torch.nn.functional as F

    zz = z.detach().requires_grad_(True)
    v = F.binary_cross_entropy_with_logits(zz, y)
    v.backward()
    return v, zz.grad


def numpy_losskit(z, y):
    import losskit as lk

    return lk.binary_cross_entropy.value_and_grad(z, y)


def numpy_plain(z, y):
    n = z.size
    value = np.mean(np.logaddexp(0, z) - y * z)
    grad = (1 / (1 + np.exp(-z)) - y) / n
    return value, grad


CONTENDERS = {
    "torch_losskit": (torch_losskit, "torch"),
    "torch_peer": (torch_peer, "torch"),
    "numpy_losskit": (numpy_losskit, "numpy"),
    "numpy_plain": (numpy_plain, "numpy"),
}


def _convert(z, y, kind):
    if kind == "torch":
        import torch

        return torch.from_numpy(z), torch.from_numpy(y)
    return z, y


# --- peak memory, measured in a fresh process ---------------------------------------------


def peak_child(name: str, n: int) -> None:
    fn, kind = CONTENDERS[name]
    z, y = _convert(*make_inputs(n), kind)
    fn(z, y)  # warm-up: imports, lazy initialisation
    if not reset_peak():
        raise SystemExit("cannot reset the peak RSS counter (/proc/self/clear_refs)")
    base = rss()
    result = fn(z, y)
    top = peak()
    del result
    print(json.dumps({"peak_bytes": top - base}))


def measure_peak(name: str, n: int) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--peak-child", name, "--n", str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


# --- time, interleaved --------------------------------------------------------------------


def interleaved_medians(pair, args_by_name, repeats: int) -> dict:
    times = {name: [] for name in pair}
    for name in pair:  # warm-up
        CONTENDERS[name][0](*args_by_name[name])
    for _ in range(repeats):
        for name in pair:
            fn = CONTENDERS[name][0]
            t0 = time.perf_counter()
            fn(*args_by_name[name])
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def check_agreement(z, y) -> None:
    """Both contenders compute the same thing before we time them."""
    v1, g1 = numpy_losskit(z, y)
    v2, g2 = numpy_plain(z, y)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-12)


# --- the boosting call against the copy-bandwidth floor (--floor) --------------------------

FLOOR_LOSSES = ("binary_cross_entropy", "mse", "huber", "poisson_nll")
FLOOR_NEEDS = ("value_and_grad", "grad_hess")


def floor_inputs(name: str, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    if name == "binary_cross_entropy":
        return make_inputs(n, seed)
    if name == "poisson_nll":
        return rng.standard_normal(n).astype(np.float32), rng.poisson(2.5, n).astype(np.float32)
    return (rng.standard_normal(n) * 2).astype(np.float32), (rng.standard_normal(n) * 2).astype(np.float32)


def _torch_own(name: str):
    """torch's own per-element loss with its autograd gradient, where torch has the loss."""
    import torch
    import torch.nn.functional as F

    fn = {
        "binary_cross_entropy": F.binary_cross_entropy_with_logits,
        "mse": F.mse_loss,
        "huber": F.huber_loss,
        "poisson_nll": lambda z, y, reduction: F.poisson_nll_loss(z, y, log_input=True, full=False, reduction=reduction),
    }[name]

    def value_and_grad(z, y):
        zz = z.detach().requires_grad_(True)
        v = fn(zz, y, reduction="none")
        (g,) = torch.autograd.grad(v, zz, torch.ones_like(v))
        return v.detach(), g

    return value_and_grad


def floor_contenders(name: str, need: str, kind: str, z, y, w=None):
    """name -> zero-argument callable, all moving the same bytes (two arrays in, two out; with
    per-sample weights ``w`` losskit also reads them, the floor does not)."""
    import losskit as lk
    from losskit import _accel

    loss = getattr(lk, name)
    call = getattr(loss, need)
    wa = w
    if kind == "torch":
        import torch

        z, y = torch.from_numpy(z), torch.from_numpy(y)
        w = None if w is None else torch.from_numpy(w)
    out = {}
    # the floor: the fastest copy of the same bytes into preallocated arrays, either library
    za, ya = (z.numpy(), y.numpy()) if kind == "torch" else (z, y)
    a, b = np.empty_like(za), np.empty_like(ya)

    def numpy_copy():  # with weights too: the kernel also reads them, so its % is a lower bound
        np.copyto(a, za)
        np.copyto(b, ya)

    out["floor: np.copyto"] = numpy_copy
    # a function that returns new arrays also pays for fresh pages (the kernel zeroes them on
    # first touch): the copy into new arrays, shown beside the floor
    out["fresh: np.copy"] = lambda: (np.copy(za), np.copy(ya))
    kw = {"reduction": "none"} if w is None else {"reduction": "none", "weight": w}
    if _accel.available() and _accel.enabled():
        out["losskit accel"] = lambda: call(z, y, **kw)

    def reference():
        with _accel.disabled():
            return call(z, y, **kw)

    out["losskit reference"] = reference
    if kind == "torch" and need == "value_and_grad" and w is None:
        own = _torch_own(name)
        out["torch's own"] = lambda: own(z, y)
    return out


def floor_table(n: int, repeats: int, kinds, losses=FLOOR_LOSSES, needs=FLOOR_NEEDS, weighted=False) -> None:
    import losskit as lk
    from losskit import _accel

    moved = "2 arrays read + 2 written; the weighted calls also read the weights" if weighted else "2 arrays read + 2 written"
    print(f"reduction='none'{', per-sample weights' if weighted else ''}, n = {n:,} float32; median of {repeats} interleaved runs; "
          f"% of floor = floor time / contender time (bytes moved: {moved})")
    print(f"accelerator: {'Numba ' + __import__('numba').__version__ if _accel.available() else 'not installed'}"
          f"{'' if _accel.enabled() else ' (disabled by LOSSKIT_ACCEL)'}; threads: {os.cpu_count()}; load: {os.getloadavg()[0]:.2f}")
    for kind in kinds:
        for name in losses:
            if name not in lk.registry:
                continue
            z, y = floor_inputs(name, n)
            w = np.random.default_rng(1).uniform(0.5, 2.0, n).astype(np.float32) if weighted else None
            for need in needs:
                fns = floor_contenders(name, need, kind, z, y, w)
                t0 = time.perf_counter()
                for fn in fns.values():  # warm-up (and the first call's JIT compile, or cache load)
                    fn()
                warm = time.perf_counter() - t0
                times = {k: [] for k in fns}
                for _ in range(repeats):
                    for k, fn in fns.items():
                        t0 = time.perf_counter()
                        fn()
                        times[k].append(time.perf_counter() - t0)
                med = {k: statistics.median(v) for k, v in times.items()}
                floor = med["floor: np.copyto"]
                cells = "  ".join(f"{k} {med[k] * 1e3:.1f} ms ({100 * floor / med[k]:.0f}%)" for k in fns if not k.startswith("floor"))
                print(f"{kind:<6}{name:<22}{need:<15} floor {floor * 1e3:.1f} ms | {cells}   [warm-up {warm:.1f} s]")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=N_DEFAULT)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--floor", action="store_true", help="the boosting call's %% of the copy-bandwidth floor")
    ap.add_argument("--backends", default="numpy,torch", help="with --floor: numpy, torch or both")
    ap.add_argument("--losses", default=",".join(FLOOR_LOSSES), help="with --floor: which losses")
    ap.add_argument("--needs", default=",".join(FLOOR_NEEDS), help="with --floor: value_and_grad, grad_hess or both")
    ap.add_argument("--weighted", action="store_true", help="with --floor: per-sample weights (the boosting call)")
    ap.add_argument("--peak-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak_child:
        peak_child(args.peak_child, args.n)
        return
    if args.floor:
        kinds = [k for k in args.backends.split(",") if k]
        try:
            import torch  # noqa: F401
        except ImportError:
            kinds = [k for k in kinds if k != "torch"]
        floor_table(args.n, args.repeats, kinds, [s for s in args.losses.split(",") if s], [s for s in args.needs.split(",") if s], args.weighted)
        return

    z, y = make_inputs(args.n)
    check_agreement(z, y)
    pairs = [("torch_losskit", "torch_peer"), ("numpy_losskit", "numpy_plain")]
    try:
        import torch  # noqa: F401
    except ImportError:
        pairs = pairs[1:]
        print("torch not installed: skipping the PyTorch comparison")
    print(f"binary_cross_entropy value + gradient, n = {args.n:,} float32, median of {args.repeats} interleaved runs")
    print(f"{'contender':<16}{'median ms':>11}{'peak MiB':>10}   ratios (time: peer/losskit, memory: losskit/peer)")
    for ours, peer in pairs:
        kind = CONTENDERS[ours][1]
        converted = _convert(z, y, kind)
        med = interleaved_medians((ours, peer), {ours: converted, peer: converted}, args.repeats)
        peaks = {name: measure_peak(name, args.n) for name in (ours, peer)}
        for name in (ours, peer):
            print(f"{name:<16}{med[name] * 1e3:>11.1f}{peaks[name] / 2**20:>10.1f}")
        speed = med[peer] / med[ours]
        # small inputs can fit in heap the allocator already holds: no measurable rise
        memory = f"{peaks[ours] / peaks[peer]:.2f}" if peaks[peer] else "n/a (no measurable rise at this size)"
        print(f"  -> {kind}: losskit is {speed:.2f}x the speed of {peer}; peak memory ratio {memory}")


if __name__ == "__main__":
    main()
