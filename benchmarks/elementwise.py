"""Binary cross-entropy on 10^7 float32 logits: value and gradient.

* PyTorch: losskit's forward+backward (closed-form backward through autograd) vs
  ``torch.nn.functional.binary_cross_entropy_with_logits`` forward+backward, same tensors.
* NumPy: ``lk.binary_cross_entropy.value_and_grad`` vs the plain two-expression formula
  ``np.mean(np.logaddexp(0, z) - y * z)`` and ``(1 / (1 + np.exp(-z)) - y) / n``.

Times are medians of interleaved repetitions (the two contenders alternate, so machine noise
hits both alike); ratios are peer time / losskit time (> 1: losskit is faster). Peak memory is
the rise of the process's peak resident set during one call, each contender in a fresh
process; ratio is losskit / peer (<= 1: losskit uses no more).

Usage: python benchmarks/elementwise.py [--n 10000000] [--repeats 15]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=N_DEFAULT)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--peak-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak_child:
        peak_child(args.peak_child, args.n)
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
