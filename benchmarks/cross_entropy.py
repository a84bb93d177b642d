"""Plain cross-entropy on PyTorch, forward + backward: losskit (lean backward: saves logits and
the per-row LSE) vs ``torch.nn.functional.cross_entropy``.

    python benchmarks/cross_entropy.py                       # N=8192, V=32768, float32
    python benchmarks/cross_entropy.py --n 2048 --reps 5

Each method runs in its own process. Logits are created once (requires_grad, not counted);
per method one warm-up then ``--reps`` timed forward+backward passes (``.grad`` reset to None
each time so allocating it is counted). Peak memory: rise of the peak RSS (VmHWM, reset via
/proc/self/clear_refs) above the RSS just before the pass, plus the logits themselves, reported
as a multiple of the logits' size (the issue's bar: ≤ 2.2× = logits + gradient + slack).

Methods:
  torch            F.cross_entropy(z, y) then backward
  losskit          lk.cross_entropy(z, y) then backward (LeanLossFunction)
  losskit_generic  the generic closed-form bridge (lean kernel disabled), for reference
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _memory import peak as _peak, reset_peak as _reset_peak, rss as _rss  # noqa: E402

METHODS = ("torch", "losskit", "losskit_generic")


def worker(method: str, dtype_name: str, n: int, v: int, reps: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    z = (torch.randn(n, v) * 2).to(dtype).requires_grad_(True)
    y = torch.randint(0, v, (n,))
    if method == "torch":
        fn = lambda: F.cross_entropy(z, y)  # noqa: E731
    else:
        import losskit as lk

        if method == "losskit_generic":
            from losskit.interop import torch as bridge

            bridge.LEAN_KERNELS.clear()
        fn = lambda: lk.cross_entropy(z, y)  # noqa: E731
    times, peaks = [], []
    grad_fn = None
    for i in range(reps + 1):
        z.grad = None
        base = _rss()
        _reset_peak()
        t0 = time.perf_counter()
        loss = fn()
        loss.backward()
        dt = time.perf_counter() - t0
        peak = _peak() - base
        grad_fn = type(loss.grad_fn).__name__
        if i:
            times.append(dt)
            peaks.append(peak)
    logits = z.numel() * z.element_size()
    return {"method": method, "median_s": statistics.median(times), "times_s": times, "peak_bytes": max(peaks) + logits,
            "logits_bytes": logits, "loss": float(loss), "grad_fn": grad_fn}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--v", type=int, default=32768)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.dtype, args.n, args.v, args.reps)))
        return
    mib = 2**20
    res = {}
    for m in args.methods.split(","):
        cmd = [sys.executable, __file__, "--worker", m, "--n", str(args.n), "--v", str(args.v), "--reps", str(args.reps), "--dtype", args.dtype]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        res[m] = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"error": out.stderr.strip()[-300:]}
    print(f"cross-entropy fwd+bwd, N={args.n} V={args.v} {args.dtype}, median of {args.reps} (after 1 warm-up), one process per method")
    print(f"{'method':<16} {'median s':>9} {'peak MiB':>9} {'peak/logits':>12} {'loss':>10}  grad_fn / times")
    for m, r in res.items():
        if "error" in r:
            print(f"{m:<16} error: {r['error']}")
            continue
        print(f"{m:<16} {r['median_s']:>9.3f} {r['peak_bytes'] / mib:>9.1f} {r['peak_bytes'] / r['logits_bytes']:>12.2f} {r['loss']:>10.6f}  "
              f"{r['grad_fn']} {' '.join(f'{t:.3f}' for t in r['times_s'])}")
    if "median_s" in res.get("losskit", {}) and "median_s" in res.get("torch", {}):
        a, b = res["losskit"], res["torch"]
        print(f"ratio losskit / torch: time {a['median_s'] / b['median_s']:.3f}   peak memory {a['peak_bytes'] / b['peak_bytes']:.3f}")


if __name__ == "__main__":
    main()
