"""info_nce on large batches, PyTorch CPU, forward + backward: peak memory and time of losskit
(above 4096 queries the similarity matrix is recomputed in blocks of 1024 query rows) vs the
materialised composition ``F.cross_entropy(q @ k.T / τ, arange(N))``.

    python benchmarks/info_nce.py                       # N=16384, d=256 (issue 13), float32
    python benchmarks/info_nce.py --n 512 --d 32 --reps 1  # tiny: proves it runs
    python benchmarks/info_nce.py --symmetric           # CLIP: both directions

Each method runs in its own process. q and k (requires_grad) are created first and not
counted; per method one warm-up, then ``--reps`` timed forward+backward passes. Peak memory:
the rise of the peak RSS (VmHWM, reset via /proc/self/clear_refs) above the RSS just before
the pass, in MiB and as a multiple of one N × N float32 matrix. Time: median per pass. The
printed ratios are losskit / composition (memory and time), from one run of both.
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

METHODS = ("composition", "losskit")


def worker(method: str, n: int, d: int, reps: int, symmetric: bool) -> dict:
    import torch
    import torch.nn.functional as F

    import losskit as lk

    torch.manual_seed(0)
    q = F.normalize(torch.randn(n, d), dim=-1).requires_grad_(True)
    k = F.normalize(q.detach() + 0.1 * torch.randn(n, d), dim=-1).requires_grad_(True)
    tau = 0.07
    ids = torch.arange(n)

    def run():
        q.grad = k.grad = None
        if method == "losskit":
            loss = lk.info_nce(q, k, temperature=tau, symmetric=symmetric)
        else:
            s = q @ k.T / tau
            loss = F.cross_entropy(s, ids)
            if symmetric:
                loss = (loss + F.cross_entropy(s.T, ids)) / 2
        loss.backward()
        return loss.item()

    value = run()
    times, rises = [], []
    for _ in range(reps):
        base = _rss()
        ok = _reset_peak()
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        rises.append((_peak() - base) if ok else float("nan"))
    return {"value": value, "time": statistics.median(times), "peak": max(rises)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--symmetric", action="store_true")
    ap.add_argument("--worker", choices=METHODS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.d, args.reps, args.symmetric)))
        return
    out = {}
    for method in METHODS:
        cmd = [sys.executable, __file__, "--worker", method, "--n", str(args.n), "--d", str(args.d), "--reps", str(args.reps)]
        if args.symmetric:
            cmd.append("--symmetric")
        out[method] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    matrix = args.n * args.n * 4
    print(f"info_nce forward+backward, torch CPU float32, N={args.n} d={args.d}{' symmetric' if args.symmetric else ''}, median of {args.reps}")
    for method in METHODS:
        r = out[method]
        print(f"  {method:12s} value {r['value']:.6f}  peak rise {r['peak'] / 2**20:9.1f} MiB ({r['peak'] / matrix:5.2f} x N²·4 B)  time {r['time'] * 1e3:9.1f} ms")
    a, b = out["losskit"], out["composition"]
    assert abs(a["value"] - b["value"]) <= 1e-4 * abs(b["value"]), (a["value"], b["value"])
    print(f"  ratio losskit / composition: memory {a['peak'] / b['peak']:.3f}  time {a['time'] / b['time']:.2f}")


if __name__ == "__main__":
    main()
