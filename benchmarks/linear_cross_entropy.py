"""Fused linear + cross-entropy, forward + backward: losskit vs eager PyTorch vs PyTorch's own
chunked ``F.linear_cross_entropy``, and the GEMM-bound floor.

    python benchmarks/linear_cross_entropy.py                  # N=4096, H=1024, V=32768, fp32 + bf16
    python benchmarks/linear_cross_entropy.py --n 1024 --reps 3 --dtypes float32
    python benchmarks/linear_cross_entropy.py --dtypes float32 --methods jax_naive,jax_losskit   # JAX under jit

Every method runs in its own process (fresh allocator, comparable peak RSS); with ``--rounds R``
the processes of all methods are started in turn, R times (A B C A B C ...), so a ratio compares
methods measured side by side on a shared machine, and the median is over all rounds. Per
process: one warm-up, then ``--reps`` timed forward+backward passes (gradients for x and W, ``.grad`` reset
to None each time so that allocating them is counted); the median time is printed. Peak memory
is the rise of the process's peak RSS (VmHWM, reset through /proc/self/clear_refs before each
pass) above its RSS just before the pass, i.e. everything the pass allocates: logits or slabs,
saved tensors, the gradients of x and W.

Methods:
  eager            F.cross_entropy(x @ W.T, y) then backward (logits materialised)
  torch_chunked    F.linear_cross_entropy(x, W, y, options=torch.nn.LinearCrossEntropyOptions())
  losskit          lk.linear_cross_entropy(x, W, y) (default: gradients computed in the forward pass)
  losskit_recompute  the same with grad_in_forward=False (saves x, W, y, LSE; recomputes logits)
  gemm             the three GEMMs of forward+backward alone (x Wᵀ, G W, Gᵀ x): the floor
  jax_naive        jax.jit(jax.value_and_grad(optax-style log_softmax(x @ W.T)[y] mean)), logits materialised
  jax_losskit      jax.jit(jax.value_and_grad(lk.linear_cross_entropy)) (custom_vjp over lax.scan)

The JAX methods time ``block_until_ready`` of the jitted value and gradients (compiled in the
warm-up); their peak memory is XLA's ``memory_analysis()`` of the compiled step (temporaries +
outputs), because XLA's CPU allocator keeps the warm-up's buffers and hides them from the RSS rise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _memory import peak as _peak, reset_peak as _reset_peak, rss as _rss  # noqa: E402

METHODS = ("eager", "torch_chunked", "losskit", "losskit_recompute", "gemm")
JAX_METHODS = ("jax_naive", "jax_losskit")


def jax_worker(method: str, dtype_name: str, n: int, h: int, v: int, reps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    dtype = getattr(jnp, dtype_name)
    x = jnp.asarray(rng.standard_normal((n, h), dtype=np.float32) / h**0.5, dtype=dtype)
    w = jnp.asarray(rng.standard_normal((v, h), dtype=np.float32) * 0.02, dtype=dtype)
    y = jnp.asarray(rng.integers(0, v, n))
    if method == "jax_naive":

        def loss_fn(x, w):
            logp = jax.nn.log_softmax((x @ w.T).astype(jnp.float32), axis=-1)
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))
    else:
        import losskit as lk

        def loss_fn(x, w):
            return lk.linear_cross_entropy(x, w, y, validate=False)

    step = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))
    # XLA's CPU allocator keeps what the warm-up allocated, so the RSS rise of a later pass
    # misses it: the peak memory of a JAX method is XLA's own count of the compiled step's
    # temporaries plus its outputs (the gradients), the same quantities the torch RSS rise holds
    mem = step.lower(x, w).compile().memory_analysis()
    xla_bytes = int(mem.temp_size_in_bytes + mem.output_size_in_bytes)
    times, losses = [], []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        value, grads = jax.block_until_ready(step(x, w))
        dt = time.perf_counter() - t0
        if i:
            times.append(dt)
            losses.append(float(value))
        del value, grads
    return {"method": method, "dtype": dtype_name, "median_s": statistics.median(times), "times_s": times, "peak_bytes": xla_bytes,
            "loss": losses[-1], "threads": None}


def worker(method: str, dtype_name: str, n: int, h: int, v: int, reps: int) -> dict:
    if method.startswith("jax"):
        return jax_worker(method, dtype_name, n, h, v, reps)
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    x = (torch.randn(n, h) / h**0.5).to(dtype).requires_grad_(True)
    w = (torch.randn(v, h) * 0.02).to(dtype).requires_grad_(True)
    y = torch.randint(0, v, (n,))
    if method == "losskit" or method == "losskit_recompute":
        import losskit as lk

        gif = None if method == "losskit" else False

        def step():
            loss = lk.linear_cross_entropy(x, w, y, grad_in_forward=gif)
            loss.backward()
            return loss
    elif method == "eager":

        def step():
            loss = F.cross_entropy(x @ w.T, y)
            loss.backward()
            return loss
    elif method == "torch_chunked":
        opts = torch.nn.LinearCrossEntropyOptions()

        def step():
            loss = F.linear_cross_entropy(x, w, y, options=opts)
            loss.backward()
            return loss
    elif method == "gemm":
        xd, wd = x.detach(), w.detach()
        g = torch.randn(n, v).to(dtype)

        def step():
            z = xd @ wd.T
            del z
            gx = g @ wd
            gw = g.T @ xd
            del gx, gw
    else:
        raise SystemExit(f"unknown method {method}")
    times, peaks, losses = [], [], []
    for i in range(reps + 1):
        x.grad = None
        w.grad = None
        base = _rss()
        _reset_peak()
        t0 = time.perf_counter()
        out = step()
        dt = time.perf_counter() - t0
        peak = _peak() - base
        if i:  # the first pass is the warm-up
            times.append(dt)
            peaks.append(peak)
            if out is not None:
                losses.append(float(out.detach()) if hasattr(out, "detach") else float(out))
        del out
    return {
        "method": method,
        "dtype": dtype_name,
        "median_s": statistics.median(times),
        "times_s": times,
        "peak_bytes": max(peaks),
        "loss": losses[-1] if losses else None,
        "threads": torch.get_num_threads(),
    }


def run_one(method, dtype, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--dtypes", dtype, "--n", str(args.n), "--h", str(args.h), "--v", str(args.v), "--reps", str(args.reps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"method": method, "dtype": dtype, "error": out.stderr.strip().splitlines()[-1] if out.stderr else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_rounds(methods, dtype, args) -> dict:
    """Every method's process in turn, ``args.rounds`` times; per method the median over all
    timed passes of all rounds and the largest peak."""
    res: dict = {}
    for _ in range(args.rounds):
        for m in methods:
            r = run_one(m, dtype, args)
            cur = res.get(m)
            if cur is None or ("error" in cur and "error" not in r):
                res[m] = r
            elif "error" not in r and "error" not in cur:
                cur["times_s"] = cur["times_s"] + r["times_s"]
                cur["peak_bytes"] = max(cur["peak_bytes"], r["peak_bytes"])
    for r in res.values():
        if "times_s" in r:
            r["median_s"] = statistics.median(r["times_s"])
    return res


def _ratios(res, ours, others):
    lk_ = res.get(ours, {})
    if "median_s" not in lk_:
        return
    print(f"ratios ({ours} / other):")
    for m in others:
        r = res.get(m, {})
        if "median_s" in r:
            print(f"  vs {m:<18} time {lk_['median_s'] / r['median_s']:.3f}   peak memory {lk_['peak_bytes'] / max(r['peak_bytes'], 1):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--h", type=int, default=1024)
    ap.add_argument("--v", type=int, default=32768)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1, help="start every method's process this many times, in turn")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.dtypes, args.n, args.h, args.v, args.reps)))
        return
    mib = 2**20
    print(f"linear + cross-entropy fwd+bwd, N={args.n} H={args.h} V={args.v}, median of {args.reps} x {args.rounds} rounds "
          f"(after 1 warm-up per process), one process per method and round, methods in turn")
    methods = args.methods.split(",")
    for dtype in args.dtypes.split(","):
        res = run_rounds(methods, dtype, args)
        logits = args.n * args.v * (4 if dtype == "float32" else 2)
        print(f"\n{dtype}  (logits would be {logits / mib:.0f} MiB)")
        print(f"{'method':<18} {'median s':>9} {'peak MiB':>9} {'loss':>10}   times")
        for m, r in res.items():
            if "error" in r:
                print(f"{m:<18} error: {r['error']}")
                continue
            loss = "" if r["loss"] is None else f"{r['loss']:.6f}"
            print(f"{m:<18} {r['median_s']:>9.3f} {r['peak_bytes'] / mib:>9.1f} {loss:>10}   {' '.join(f'{t:.3f}' for t in r['times_s'])}")
        _ratios(res, "losskit", ("eager", "torch_chunked", "losskit_recompute"))
        _ratios(res, "jax_losskit", ("jax_naive",))
        lk_ = res.get("losskit", {})
        g = res.get("gemm", {})
        if "median_s" in g and "median_s" in lk_:
            rate = 6 * args.n * args.h * args.v / g["median_s"]
            print(f"  vs GEMM floor ({g['median_s']:.3f} s = 6NHV at {rate / 1e9:.1f} GFLOP/s)   time {lk_['median_s'] / g['median_s']:.3f}")
            r = res.get("losskit_recompute", {})
            if "median_s" in r:
                print(f"  losskit_recompute vs GEMM floor   time {r['median_s'] / g['median_s']:.3f}")


if __name__ == "__main__":
    main()
