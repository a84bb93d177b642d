"""Dice, Jaccard, Tversky and Lovász-Softmax (multiclass, integer targets), and Lovász hinge
(binary: the first class's logits, class 0 as foreground, one set for the batch as smp's
default) against segmentation_models_pytorch 0.6: forward + backward time and peak memory,
side by side.

    python benchmarks/segmentation.py [--device cuda] [--repeat 9] [--shape 8,6,256,256] [--threads 1]
    python benchmarks/segmentation.py --shape 4,8,128,128,128 --repeat 1 --losses dice,jaccard,tversky

On a CPU shared with other work, ``--threads 1`` (torch.set_num_threads) keeps both sides
out of thread oversubscription, where every parallel region waits for a descheduled thread
and wall times grow several-fold for both. The two sides run interleaved (smp, losskit, smp, losskit, ...) and each time is the median;
the ratio is losskit / smp. Peak memory of one forward + backward above what was allocated
before it: CUDA's max_memory_allocated on a GPU; on the CPU the resident-set peak
(benchmarks/_memory.py, Linux) with glibc told to serve every block above 1 MiB by mmap, so
that freed tensors leave the resident set at once and the peak is what the pass held at one
time (without it, malloc's reuse of freed blocks hides most of a pass's allocations).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import sys
import time

import torch

import losskit as lk

try:
    from _memory import peak as _peak, reset_peak as _reset_peak, rss as _rss
except ImportError:  # run from elsewhere
    from benchmarks._memory import peak as _peak, reset_peak as _reset_peak, rss as _rss
from losskit.losses.segmentation import _smp_losses

_M_MMAP_THRESHOLD = -3


def _mmap_large_blocks() -> bool:
    """glibc: blocks above 1 MiB by mmap, returned to the OS when freed."""
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 1 << 20))
    except (OSError, AttributeError):
        return False


def _step(fn, z, t):
    x = z.detach().requires_grad_(True)
    fn(x, t).backward()
    return x.grad


def _time(fn, z, t, device):
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    _step(fn, z, t)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _memory(fn, z, t, device):
    """MiB allocated at the peak of one forward + backward, above the live inputs."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _step(fn, z, t)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    if not _reset_peak():
        return float("nan")
    base = _rss()
    _step(fn, z, t)
    return (_peak() - base) / 2**20


def compare_time(ref, ours, z, t, repeat, device):
    """(median time ref, median time ours), interleaved."""
    _step(ref, z, t), _step(ours, z, t)  # warm-up
    t_ref, t_our = [], []
    for _ in range(repeat):
        t_ref.append(_time(ref, z, t, device))
        t_our.append(_time(ours, z, t, device))
    return statistics.median(t_ref), statistics.median(t_our)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--shape", default="8,6,256,256", help="N,C,spatial... of the logits")
    parser.add_argument("--losses", default="dice,jaccard,tversky,lovasz,lovasz_hinge")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_only and args.device == "cpu" and not _mmap_large_blocks():
        print("# glibc mallopt unavailable: CPU peaks are not measurable", file=sys.stderr)
    shape = tuple(int(s) for s in args.shape.split(","))
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(*shape, generator=gen, dtype=dtype).to(args.device)
    t = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=gen).to(args.device)
    smp = _smp_losses()
    pairs = {
        "dice": (smp.DiceLoss("multiclass", from_logits=True), lambda x, y: lk.dice(x, y)),
        "jaccard": (smp.JaccardLoss("multiclass", from_logits=True), lambda x, y: lk.jaccard(x, y)),
        "tversky": (smp.TverskyLoss("multiclass", from_logits=True, alpha=0.3, beta=0.7), lambda x, y: lk.tversky(x, y, alpha=0.3, beta=0.7)),
        "lovasz": (smp.LovaszLoss("multiclass"), lambda x, y: lk.lovasz_softmax(x, y)),
        "lovasz_hinge": (smp.LovaszLoss("binary"), lambda x, y: lk.lovasz_hinge(x, y, per_image=False)),
    }
    binary = (z[:, :1].contiguous(), (t[:, None] == 0).to(dtype))
    inputs = {name: binary if name == "lovasz_hinge" else (z, t) for name in pairs}
    names = args.losses.split(",")
    if args.memory_only:  # the child process of the memory probe: one line per loss
        for name in names:
            ref, ours = pairs[name]
            x, y = inputs[name]
            _step(ref, x, y), _step(ours, x, y)  # warm-up
            print(name, _memory(ref, x, y, args.device), _memory(ours, x, y, args.device))
        return
    # memory in a fresh process (the allocator's mmap threshold set before any tensor), then
    # the times with the allocator as users have it
    if args.device == "cpu":
        child = subprocess.run([sys.executable, __file__, "--memory-only", *sys.argv[1:]], capture_output=True, text=True, check=True)
        memory = {line.split()[0]: tuple(float(v) for v in line.split()[1:]) for line in child.stdout.splitlines()}
    else:
        memory = {name: (_memory(pairs[name][0], *inputs[name], args.device), _memory(pairs[name][1], *inputs[name], args.device)) for name in names}
    times = {name: compare_time(*pairs[name], *inputs[name], args.repeat, args.device) for name in names}
    mmap = args.device == "cpu"
    logits_mib = z.numel() * z.element_size() / 2**20
    print(
        f"device={args.device} threads={torch.get_num_threads()} dtype={args.dtype} logits={'x'.join(map(str, shape))} ({logits_mib:.0f} MiB), integer targets, "
        f"time: interleaved, median of {args.repeat}; memory: one pass each{' (malloc mmap threshold 1 MiB)' if mmap else ''}"
    )
    print(f"{'loss':12s} {'smp ms':>9s} {'losskit ms':>11s} {'time ratio':>11s} {'smp MiB':>9s} {'losskit MiB':>12s} {'mem ratio':>10s}")
    for name in names:
        t_ref, t_our = times[name]
        m_ref, m_our = memory[name]
        ratio = m_our / m_ref if m_ref > 0 else float("nan")
        print(f"{name:12s} {t_ref * 1e3:9.2f} {t_our * 1e3:11.2f} {t_our / t_ref:11.2f} {m_ref:9.1f} {m_our:12.1f} {ratio:10.2f}")


if __name__ == "__main__":
    main()
