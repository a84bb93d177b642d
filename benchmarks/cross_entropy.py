"""Plain cross-entropy on PyTorch, forward + backward: losskit (lean backward: saves logits and
the per-row LSE) vs ``torch.nn.functional.cross_entropy``, eager and under ``torch.compile``.

    python benchmarks/cross_entropy.py                       # N=8192, V=32768, float32
    python benchmarks/cross_entropy.py --n 2048 --reps 5
    python benchmarks/cross_entropy.py --n 4096 --v 8192 --ignore-index --interleave --reps 9
    python benchmarks/cross_entropy.py --n 4096 --v 8192 --ignore-index --label-smoothing 0.1 --interleave

Each method runs in its own process. Logits are created once (requires_grad, not counted);
per method one warm-up (and compilation) then ``--reps`` timed forward+backward passes
(``.grad`` reset to None each time so allocating it is counted). Peak memory: rise of the peak
RSS (VmHWM, reset via /proc/self/clear_refs) above the RSS just before the pass, plus the
logits themselves, reported as a multiple of the logits' size (the issue's bar: ≤ 2.2× =
logits + gradient + slack). Workers run with ``MALLOC_MMAP_THRESHOLD_=131072`` (freed buffers
go back to the system, so RSS is live memory).

``--interleave`` times every method in ONE process, round-robin, median of ``--reps`` rounds
(the figure to quote on a shared machine: load drifts alike for every method), and prints each
method's time as a ratio to torch in the same mode (eager / compiled); peak memory is not
measured there, and ``losskit_generic`` (which turns the lean kernel off process-wide) is left
out.

Methods:
  torch                      F.cross_entropy(z, y) then backward
  losskit                    lk.cross_entropy(z, y) then backward (LeanLossFunction)
  losskit_generic            the generic closed-form bridge (lean kernel disabled), for reference
  torch_compiled             torch.compile of the torch call (default mode)
  losskit_compiled           torch.compile of the losskit call: the traced precise formulation
                             Inductor fuses (interop/torch_compiled.py): ids, ignore_index,
                             label smoothing, z-loss
  losskit_compiled_operator  the same, forced through the opaque losskit::cross_entropy operator
                             (the eager lean kernel), as for the options the traced form lacks
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _memory import peak as _peak, reset_peak as _reset_peak, rss as _rss  # noqa: E402

METHODS = ("torch", "losskit", "losskit_generic", "torch_compiled", "losskit_compiled", "losskit_compiled_operator")
IGNORE = -100


def _setup(dtype_name: str, n: int, v: int, ignore: bool):
    import torch

    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    z = (torch.randn(n, v) * 2).to(dtype).requires_grad_(True)
    y = torch.randint(0, v, (n,))
    if ignore:
        y[::7] = IGNORE  # padding rows, as in a language-model batch
    return z, y


def make_step(method: str, ignore: bool, smoothing: float = 0.0, z_loss: float = 0.0):
    """A function ``(z, y) -> loss`` for ``method``; the operator method flips
    ``torch_compiled.ENABLED`` around its own calls only. ``z_loss`` (losskit only: torch has
    none) is left out of the torch methods."""
    import torch
    import torch.nn.functional as F

    kw = {"ignore_index": IGNORE} if ignore else {}
    if smoothing:
        kw["label_smoothing"] = smoothing
    if method.startswith("torch"):
        fn = lambda z, y: F.cross_entropy(z, y, **kw)  # noqa: E731
    else:
        import losskit as lk

        if method == "losskit_generic":
            from losskit.interop import torch as bridge

            bridge.LEAN_KERNELS.clear()
        if z_loss:
            kw["z_loss"] = z_loss
        fn = lambda z, y: lk.cross_entropy(z, y, **kw)  # noqa: E731
    if not method.endswith(("compiled", "operator")):
        return fn
    compiled = torch.compile(fn)
    if method != "losskit_compiled_operator":
        return compiled
    from losskit.interop import torch_compiled

    def operator(z, y):
        torch_compiled.ENABLED = False  # a guard of the compiled code: its own cache entry
        try:
            return compiled(z, y)
        finally:
            torch_compiled.ENABLED = True

    return operator


def _pass(fn, z, y):
    z.grad = None
    t0 = time.perf_counter()
    loss = fn(z, y)
    loss.backward()
    return time.perf_counter() - t0, loss


def worker(method: str, dtype_name: str, n: int, v: int, reps: int, ignore: bool, smoothing: float, z_loss: float) -> dict:
    z, y = _setup(dtype_name, n, v, ignore)
    fn = make_step(method, ignore, smoothing, z_loss)
    times, peaks = [], []
    grad_fn = None
    for i in range(reps + 1):
        z.grad = None  # before the baseline: allocating the gradient is counted
        base = _rss()
        _reset_peak()
        dt, loss = _pass(fn, z, y)
        peak = _peak() - base
        grad_fn = type(loss.grad_fn).__name__
        if i:
            times.append(dt)
            peaks.append(peak)
    logits = z.numel() * z.element_size()
    return {"method": method, "median_s": statistics.median(times), "times_s": times, "peak_bytes": max(peaks) + logits,
            "logits_bytes": logits, "loss": float(loss), "grad_fn": grad_fn}


def interleave(methods, dtype_name: str, n: int, v: int, reps: int, ignore: bool, smoothing: float, z_loss: float) -> None:
    # losskit_generic turns the lean kernel off for the whole process: not in a shared one
    methods = [m for m in methods if m != "losskit_generic"]
    z, y = _setup(dtype_name, n, v, ignore)
    fns = {m: make_step(m, ignore, smoothing, z_loss) for m in methods}
    for fn in fns.values():  # warm-up (compiles)
        _pass(fn, z, y)
        _pass(fn, z, y)
    times = {m: [] for m in methods}
    for _ in range(reps):
        for m, fn in fns.items():
            times[m].append(_pass(fn, z, y)[0])
    med = {m: statistics.median(t) for m, t in times.items()}
    opts = (", ignore_index on 1/7 of rows" if ignore else "") + (f", label_smoothing={smoothing}" if smoothing else "")
    opts += f", z_loss={z_loss} (losskit only)" if z_loss else ""
    print(f"cross-entropy fwd+bwd, N={n} V={v} {dtype_name}{opts}, "
          f"one process, {reps} interleaved rounds (after 2 warm-ups), median")
    print(f"{'method':<26} {'median s':>9} {'÷ torch (same mode)':>20}")
    for m in methods:
        peer = "torch_compiled" if "compiled" in m else "torch"
        ratio = f"{med[m] / med[peer]:.3f}" if peer in med else "-"
        print(f"{m:<26} {med[m]:>9.4f} {ratio:>20}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--v", type=int, default=32768)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--ignore-index", action="store_true", help="ignore_index=-100 on every 7th row")
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--z-loss", type=float, default=0.0, help="losskit's z-loss (torch methods run without)")
    ap.add_argument("--interleave", action="store_true", help="time all methods in one process, round-robin")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    methods = args.methods.split(",")
    if args.interleave:
        interleave(methods, args.dtype, args.n, args.v, args.reps, args.ignore_index, args.label_smoothing, args.z_loss)
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.dtype, args.n, args.v, args.reps, args.ignore_index, args.label_smoothing, args.z_loss)))
        return
    mib = 2**20
    res = {}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    for m in methods:
        cmd = [sys.executable, __file__, "--worker", m, "--n", str(args.n), "--v", str(args.v), "--reps", str(args.reps), "--dtype", args.dtype]
        if args.ignore_index:
            cmd.append("--ignore-index")
        cmd += ["--label-smoothing", str(args.label_smoothing), "--z-loss", str(args.z_loss)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        res[m] = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"error": out.stderr.strip()[-300:]}
    print(f"cross-entropy fwd+bwd, N={args.n} V={args.v} {args.dtype}, median of {args.reps} (after 1 warm-up), one process per method")
    print(f"{'method':<26} {'median s':>9} {'peak MiB':>9} {'peak/logits':>12} {'loss':>10}  grad_fn / times")
    for m, r in res.items():
        if "error" in r:
            print(f"{m:<26} error: {r['error']}")
            continue
        print(f"{m:<26} {r['median_s']:>9.3f} {r['peak_bytes'] / mib:>9.1f} {r['peak_bytes'] / r['logits_bytes']:>12.2f} {r['loss']:>10.6f}  "
              f"{r['grad_fn']} {' '.join(f'{t:.3f}' for t in r['times_s'])}")
    for ours, peer in (("losskit", "torch"), ("losskit_compiled", "torch_compiled"), ("losskit_compiled_operator", "torch_compiled")):
        if "median_s" in res.get(ours, {}) and "median_s" in res.get(peer, {}):
            a, b = res[ours], res[peer]
            print(f"ratio {ours} / {peer}: time {a['median_s'] / b['median_s']:.3f}   peak memory {a['peak_bytes'] / b['peak_bytes']:.3f}")


if __name__ == "__main__":
    main()
