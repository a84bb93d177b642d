"""Cost against input size, losskit vs the peer on each backend: the data of docs/performance.md.

For binary cross-entropy (E elements) and cross-entropy (N × V logits, E = N·V elements) this
times one value-and-gradient call at E = 10² … 10⁸:

* NumPy: ``value_and_grad`` vs the plain NumPy formula (``benchmarks/numpy_parity.py``);
* torch (CPU): forward + backward vs ``torch.nn.functional``'s fused loss;
* JAX (CPU): ``jax.jit(jax.value_and_grad(...))`` vs optax's loss under the same transforms.

losskit and the peer are timed interleaved (median of ``--repeats``, wall time), so load on a
shared machine hits both. It prints a Markdown table (time per call and per element, and the
ratio losskit / peer: below 1 losskit is faster) and saves a log-log plot of time per element,
where a flat line is linear cost and the crossovers are where the curves meet.

    python benchmarks/scaling.py --out docs/performance_scaling.png   # 1e2 ... 1e8 (minutes)
    python benchmarks/scaling.py --quick --out /tmp/scaling.png       # tiny sizes (CI, seconds)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from numpy_parity import plain_bce, plain_cross_entropy  # noqa: E402

FULL_SIZES = [10**k for k in range(2, 9)]
QUICK_SIZES = [100, 1000]
CLASSES = 1000  # V of the N × V cross-entropy logits (fewer when E < V)


def ce_shape(elements: int) -> tuple:
    v = min(CLASSES, elements)
    return elements // v, v


def _time(fn, min_time: float) -> float:
    """Seconds per call: calls repeated until ``min_time`` has passed."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time:
            return elapsed / n


def _numpy_cases(rng, elements):
    import losskit as lk

    z = (rng.standard_normal(elements) * 3).astype(np.float32)
    y = rng.random(elements).astype(np.float32)
    n, v = ce_shape(elements)
    zc = rng.standard_normal((n, v)).astype(np.float32)
    yc = rng.integers(0, v, n)
    return {
        "binary_cross_entropy": (lambda: lk.binary_cross_entropy.value_and_grad(z, y), lambda: plain_bce(z, y)),
        "cross_entropy": (lambda: lk.cross_entropy.value_and_grad(zc, yc), lambda: plain_cross_entropy(zc, yc)),
    }


def _torch_cases(rng, elements):
    import torch
    import torch.nn.functional as F

    import losskit as lk

    z = torch.from_numpy((rng.standard_normal(elements) * 3).astype(np.float32)).requires_grad_(True)
    y = torch.from_numpy(rng.random(elements).astype(np.float32))
    n, v = ce_shape(elements)
    zc = torch.from_numpy(rng.standard_normal((n, v)).astype(np.float32)).requires_grad_(True)
    yc = torch.from_numpy(rng.integers(0, v, n))

    def step(loss, x):
        def run():
            x.grad = None
            loss().backward()
        return run

    return {
        "binary_cross_entropy": (step(lambda: lk.binary_cross_entropy(z, y), z), step(lambda: F.binary_cross_entropy_with_logits(z, y), z)),
        "cross_entropy": (step(lambda: lk.cross_entropy(zc, yc), zc), step(lambda: F.cross_entropy(zc, yc), zc)),
    }


def _jax_cases(rng, elements):
    import jax
    import jax.numpy as jnp
    import optax

    import losskit as lk

    z = jnp.asarray((rng.standard_normal(elements) * 3).astype(np.float32))
    y = jnp.asarray(rng.random(elements).astype(np.float32))
    n, v = ce_shape(elements)
    zc = jnp.asarray(rng.standard_normal((n, v)).astype(np.float32))
    yc = jnp.asarray(rng.integers(0, v, n).astype(np.int32))

    def jitted(f, *args):
        g = jax.jit(jax.value_and_grad(f))
        return lambda: jax.block_until_ready(g(*args))

    return {
        "binary_cross_entropy": (
            jitted(lambda a, b: lk.binary_cross_entropy(a, b), z, y),
            jitted(lambda a, b: optax.sigmoid_binary_cross_entropy(a, b).mean(), z, y),
        ),
        "cross_entropy": (
            jitted(lambda a, b: lk.cross_entropy(a, b), zc, yc),
            jitted(lambda a, b: optax.softmax_cross_entropy_with_integer_labels(a, b).mean(), zc, yc),
        ),
    }


PEERS = {
    "numpy": ("plain NumPy formula", _numpy_cases),
    "torch": ("torch.nn.functional", _torch_cases),
    "jax": ("optax (jit)", _jax_cases),
}


def measure(backends, sizes, repeats: int, min_time: float) -> list:
    rows = []
    rng = np.random.default_rng(0)
    for backend in backends:
        for elements in sizes:
            for loss, (ours, peer) in PEERS[backend][1](rng, elements).items():
                a, b = [], []
                for _ in range(repeats):  # interleaved
                    a.append(_time(ours, min_time))
                    b.append(_time(peer, min_time))
                shape = ce_shape(elements) if loss == "cross_entropy" else (elements,)
                rows.append(dict(backend=backend, loss=loss, elements=elements, shape=shape,
                                 losskit=statistics.median(a), peer=statistics.median(b)))
                print(_row(rows[-1]), flush=True)
    return rows


def _row(r) -> str:
    shape = "×".join(map(str, r["shape"]))
    e = r["elements"]
    return (f"| {r['backend']} | {r['loss']} | {shape} | {r['losskit'] * 1e6:.1f} | {r['peer'] * 1e6:.1f} | "
            f"{r['losskit'] / e * 1e9:.2f} | {r['peer'] / e * 1e9:.2f} | {r['losskit'] / r['peer']:.2f} |")


HEADER = ("| backend | loss | shape | losskit µs/call | peer µs/call | losskit ns/element | peer ns/element | losskit / peer |\n"
          "|---|---|---|---:|---:|---:|---:|---:|")


def plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = sorted({r["backend"] for r in rows}, key=list(PEERS).index)
    losses = ["binary_cross_entropy", "cross_entropy"]
    fig, axes = plt.subplots(len(losses), len(backends), figsize=(3.6 * len(backends), 5.6), squeeze=False, sharex=True)
    for j, backend in enumerate(backends):
        for i, loss in enumerate(losses):
            ax = axes[i][j]
            sel = [r for r in rows if r["backend"] == backend and r["loss"] == loss]
            x = [r["elements"] for r in sel]
            ax.loglog(x, [r["losskit"] / r["elements"] * 1e9 for r in sel], "o-", label="losskit")
            ax.loglog(x, [r["peer"] / r["elements"] * 1e9 for r in sel], "s--", label=PEERS[backend][0])
            ax.set_title(f"{backend}: {loss}", fontsize=9)
            ax.grid(True, which="major", alpha=0.3)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel("ns per element", fontsize=8)
            if i == len(losses) - 1:
                ax.set_xlabel("elements (N×V for cross-entropy)", fontsize=8)
            ax.legend(fontsize=7)
    fig.suptitle("value + gradient, float32, CPU: time per element (flat = linear cost)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="sizes 1e2 and 1e3, one repetition (seconds)")
    ap.add_argument("--backends", default="numpy,torch,jax")
    ap.add_argument("--max-elements", type=float, default=1e8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds of calls per timing")
    ap.add_argument("--out", default=None, help="where to save the plot (PNG)")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = ap.parse_args(argv)
    np.seterr(all="ignore")
    if args.torch_threads and "torch" in args.backends:
        import torch

        torch.set_num_threads(args.torch_threads)
    backends = []
    for b in args.backends.split(","):
        try:
            __import__({"numpy": "numpy", "torch": "torch", "jax": "optax"}[b])
            backends.append(b)
        except ImportError:
            print(f"skipping {b}: not installed")
    sizes = QUICK_SIZES if args.quick else [s for s in FULL_SIZES if s <= args.max_elements]
    repeats, min_time = (1, 0.01) if args.quick else (args.repeats, args.min_time)
    print(HEADER)
    rows = measure(backends, sizes, repeats, min_time)
    if args.out:
        plot(rows, args.out)
        print(f"plot: {args.out}")
    return rows


if __name__ == "__main__":
    main()
