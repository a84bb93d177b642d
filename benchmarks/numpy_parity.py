"""NumPy ``value_and_grad`` of cross-entropy and BCE against the plain NumPy formula a user writes.

For each size, losskit (default options, ``validate=True``) and the two-expression formula are
timed interleaved, several repetitions each (CPU time of this process, so other processes on a
shared machine inflate neither side), and the ratio plain / losskit is printed: >= 1.0 means
losskit is at least as fast as the plain formula (it also validates the targets and keeps the
tiny losses of confident predictions to full relative precision, which the formula does not).

    python benchmarks/numpy_parity.py            # 1e2 ... 1e7 elements, classes 10 ... 32768
    python benchmarks/numpy_parity.py --quick    # tiny sizes (CI: proves the script runs)
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit

import numpy as np


def plain_cross_entropy(z, y):
    """Mean softmax cross-entropy of integer ids and its gradient, as commonly written."""
    m = z.max(-1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(-1, keepdims=True)
    rows = np.arange(len(y))
    loss = np.mean(np.log(s[:, 0]) + m[:, 0] - z[rows, y])
    g = e / s
    g[rows, y] -= 1
    g /= len(y)
    return loss, g


def plain_bce(z, y):
    """Mean BCE on logits (the stable softplus form) and its gradient, as commonly written."""
    loss = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
    g = (1 / (1 + np.exp(-z)) - y) / z.size
    return loss, g


CE_SIZES = [(10, 10), (100, 10), (1257, 10), (10_000, 10), (100_000, 10), (1_000_000, 10), (100, 1000), (10_000, 1000),
            (3, 32768), (30, 32768), (300, 32768)]
BCE_SIZES = [100, 400, 1000, 10_000, 100_000, 1_000_000, 10_000_000]
QUICK_CE, QUICK_BCE = [(10, 10), (4, 1000)], [100, 1000]


def _per_call(fn, elements: int, budget: float) -> float:
    number = max(1, int(budget // max(elements, 1)))
    return min(timeit.repeat(fn, number=number, repeat=3, timer=time.process_time)) / number


def compare(ours, peer, elements: int, repeats: int, budget: float):
    """Median per-call seconds of ``ours`` and ``peer``, measured interleaved."""
    ours(), peer()
    a, b = [], []
    for _ in range(repeats):
        a.append(_per_call(ours, elements, budget))
        b.append(_per_call(peer, elements, budget))
    return statistics.median(a), statistics.median(b)


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes only (seconds)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args(argv)
    import losskit as lk

    np.seterr(all="ignore")
    rng = np.random.default_rng(0)
    dtype = np.dtype(args.dtype)
    budget = 2e5 if args.quick else 3e6  # elements per timing loop
    repeats = 1 if args.quick else args.repeats
    rows = []
    print(f"NumPy {np.__version__}, {dtype}, value_and_grad, CPU time, median of {repeats} (interleaved)")
    print(f"{'loss':<14}{'shape':>14}{'elements':>11}{'losskit µs':>13}{'plain µs':>11}{'plain/losskit':>15}")
    for n, c in QUICK_CE if args.quick else CE_SIZES:
        z = rng.standard_normal((n, c)).astype(dtype)
        y = rng.integers(0, c, n)
        ours, theirs = compare(lambda: lk.cross_entropy.value_and_grad(z, y), lambda: plain_cross_entropy(z, y), n * c, repeats, budget)
        rows.append(("cross_entropy", (n, c), ours, theirs))
    for n in QUICK_BCE if args.quick else BCE_SIZES:
        z = (rng.standard_normal(n) * 3).astype(dtype)
        y = rng.random(n).astype(dtype)
        ours, theirs = compare(lambda: lk.binary_cross_entropy.value_and_grad(z, y), lambda: plain_bce(z, y), n, repeats, budget)
        rows.append(("bce", (n,), ours, theirs))
    for name, shape, ours, theirs in rows:
        size = int(np.prod(shape))
        print(f"{name:<14}{'x'.join(map(str, shape)):>14}{size:>11.0e}{ours * 1e6:>13.1f}{theirs * 1e6:>11.1f}{theirs / ours:>15.2f}")
    return rows


if __name__ == "__main__":
    main()
