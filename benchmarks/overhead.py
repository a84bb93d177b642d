"""Per-call cost on small batches, where Python dispatch and validation dominate.

A loss runs once per training step, often on small batches, so the fixed cost per call
matters as much as throughput. For each loss shared with ``torch.nn.functional`` this times
forward+backward on a (32, 10) float32 batch, losskit vs the peer, interleaved, and prints
medians in µs and the ratio losskit / peer (lower is better). It also times losskit's NumPy
``value_and_grad`` on the same batch (no peer: NumPy has no losses).

Usage: python benchmarks/overhead.py [--batch 32] [--classes 10] [--repeats 7] [--threads 1]

``--threads 1`` runs torch single-threaded: on a shared, loaded machine a (32, 10) op that
wakes OpenMP workers can wait milliseconds for a core, which swamps the per-call cost that
this benchmark is about (on both sides, but unevenly).
"""

from __future__ import annotations

import argparse
import statistics
import timeit

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--number", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    import losskit as lk

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, c = args.batch, args.classes
    z = torch.randn(n, c, requires_grad=True)
    y_real = torch.randn(n, c)
    y_prob = torch.rand(n, c)
    y_ids = torch.randint(0, c, (n,))
    t_dist = torch.softmax(torch.randn(n, c), -1)

    cases = {
        "mse": (lambda: lk.mse(z, y_real), lambda: F.mse_loss(z, y_real)),
        "huber": (lambda: lk.huber(z, y_real), lambda: F.huber_loss(z, y_real)),
        "binary_cross_entropy": (lambda: lk.binary_cross_entropy(z, y_prob), lambda: F.binary_cross_entropy_with_logits(z, y_prob)),
        "cross_entropy": (lambda: lk.cross_entropy(z, y_ids), lambda: F.cross_entropy(z, y_ids)),
        "cross_entropy validate=False": (lambda: lk.cross_entropy(z, y_ids, validate=False), lambda: F.cross_entropy(z, y_ids)),
        "kl_divergence": (
            lambda: lk.kl_divergence(z, t_dist),
            lambda: F.kl_div(F.log_softmax(z, -1), t_dist, reduction="batchmean"),
        ),
    }

    def per_call_us(fn) -> float:
        def step():
            fn().backward()

        step()
        return min(timeit.repeat(step, number=args.number, repeat=1)) / args.number * 1e6

    print(f"forward+backward on a ({n}, {c}) float32 batch, torch {torch.__version__} ({torch.get_num_threads()} threads), median of {args.repeats}")
    print(f"{'loss':<30}{'losskit µs':>12}{'torch µs':>10}{'ratio':>8}")
    for name, (ours, peer) in cases.items():
        mine, theirs = [], []
        for _ in range(args.repeats):  # interleaved
            mine.append(per_call_us(ours))
            theirs.append(per_call_us(peer))
        m, t = statistics.median(mine), statistics.median(theirs)
        print(f"{name:<30}{m:>12.1f}{t:>10.1f}{m / t:>8.2f}")

    zn, yn = z.detach().numpy(), y_ids.numpy()
    times = [min(timeit.repeat(lambda: lk.cross_entropy.value_and_grad(zn, yn), number=args.number, repeat=1)) / args.number * 1e6 for _ in range(args.repeats)]
    print(f"{'numpy cross_entropy.value_and_grad':<30}{statistics.median(times):>12.1f}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
