"""Dice, Jaccard and Tversky (multiclass, integer targets) against segmentation_models_pytorch
0.6: forward + backward time and peak memory on an 8 x 6 x 256 x 256 batch, side by side.

    python benchmarks/segmentation.py [--device cuda] [--repeat 20]

Peak memory of one forward + backward above the inputs: CUDA's max_memory_allocated on a GPU,
the resident-set peak (benchmarks/_memory.py, Linux) on the CPU.
"""

from __future__ import annotations

import argparse
import time

import torch

import losskit as lk

try:
    from _memory import peak as _peak, reset_peak as _reset_peak, rss as _rss
except ImportError:  # run from elsewhere
    from benchmarks._memory import peak as _peak, reset_peak as _reset_peak, rss as _rss
from losskit.losses.segmentation import _smp_losses


def _step(fn, z, t):
    x = z.detach().requires_grad_(True)
    fn(x, t).backward()
    return x.grad


def measure(fn, z, t, repeat, device):
    _step(fn, z, t)  # warm-up
    cpu_peak = float("nan")
    if device == "cpu" and _reset_peak():
        base = _rss()
        _step(fn, z, t)
        cpu_peak = (_peak() - base) / 2**20
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        _step(fn, z, t)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else cpu_peak
    times.sort()
    return times[len(times) // 2], peak


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(8, 6, 256, 256, generator=gen, dtype=dtype).to(args.device)
    t = torch.randint(0, 6, (8, 256, 256), generator=gen).to(args.device)
    smp = _smp_losses()
    pairs = {
        "dice": (smp.DiceLoss("multiclass", from_logits=True), lambda x, y: lk.dice(x, y)),
        "jaccard": (smp.JaccardLoss("multiclass", from_logits=True), lambda x, y: lk.jaccard(x, y)),
        "tversky": (smp.TverskyLoss("multiclass", from_logits=True, alpha=0.3, beta=0.7), lambda x, y: lk.tversky(x, y, alpha=0.3, beta=0.7)),
        "lovasz": (smp.LovaszLoss("multiclass"), lambda x, y: lk.lovasz_softmax(x, y)),
    }
    print(f"device={args.device} dtype={args.dtype} batch=8x6x256x256 (integer targets), median of {args.repeat}")
    print(f"{'loss':10s} {'smp ms':>9s} {'losskit ms':>11s} {'time ratio':>11s} {'smp MiB':>9s} {'losskit MiB':>12s} {'mem ratio':>10s}")
    for name, (ref, ours) in pairs.items():
        t_ref, m_ref = measure(ref, z, t, args.repeat, args.device)
        t_our, m_our = measure(ours, z, t, args.repeat, args.device)
        print(f"{name:10s} {t_ref * 1e3:9.2f} {t_our * 1e3:11.2f} {t_our / t_ref:11.2f} {m_ref:9.1f} {m_our:12.1f} {(m_our / m_ref if m_ref > 0 else float('nan')):10.2f}")


if __name__ == "__main__":
    main()
