"""Vocabulary-parallel cross-entropy on P gloo processes: bytes communicated per token, time and
peak memory per rank, losskit against the naive "all-gather the logits, then cross-entropy".

    python benchmarks/vocab_parallel.py                          # N=4096, H=1024, V=65536, P=4, float32
    python benchmarks/vocab_parallel.py --n 1024 --v 16384 --reps 2

Each method runs in its own launch of P processes (a fresh allocator per method, comparable
peak RSS), joined in one gloo group over a FileStore; every rank holds x (N, H), its rows
W_r (V/P, H) of the head and the targets, and runs forward + backward with gradients for x
and W_r (dx summed over the ranks, as a column-parallel head needs). One warm-up, then
``--reps`` timed passes; the median time of the slowest rank is printed. Peak memory is the
rise of each rank's peak RSS (VmHWM, reset before each pass) above its RSS before the pass;
the largest over the ranks is printed. Bytes are counted by wrapping ``dist.all_reduce`` and
``dist.all_gather`` (payload per rank: the tensor a rank hands to the collective; for
``all_gather`` the gathered output).

Methods:
  naive            z_r = x W_rᵀ, all_gather → the full N×V logits on every rank,
                   F.cross_entropy, backward; each rank keeps its slice of the logits gradient
                   (then dW_r = G_rᵀ x and dx = Σ_r G_r W_r with one all_reduce)
  losskit_logits   z_r = x W_rᵀ, lk.distributed.vocab_parallel_cross_entropy(z_r, y): only
                   per-token statistics travel; dx all-reduced once
  losskit          lk.distributed.vocab_parallel_linear_cross_entropy(x, W_r, y): the same
                   statistics, and the chunked kernel never holds the N×V/P logits
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _memory import peak as _peak, reset_peak as _reset_peak, rss as _rss  # noqa: E402

METHODS = ("naive", "losskit_logits", "losskit")


class Counter:
    """Bytes handed to collectives, by phase."""

    def __init__(self, dist):
        self.phase = "setup"
        self.bytes = {}
        self._all_reduce, self._all_gather = dist.all_reduce, dist.all_gather
        counter = self

        def all_reduce(t, *a, **k):
            counter.add(t.numel() * t.element_size())
            return counter._all_reduce(t, *a, **k)

        def all_gather(out, t, *a, **k):
            counter.add(sum(o.numel() * o.element_size() for o in out))
            return counter._all_gather(out, t, *a, **k)

        dist.all_reduce, dist.all_gather = all_reduce, all_gather

    def add(self, n):
        self.bytes[self.phase] = self.bytes.get(self.phase, 0) + n


def worker(method, rank, world, store, out, n, h, v, reps, dtype_name):
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    import losskit as lk

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world)
    counter = Counter(dist)
    dtype = getattr(torch, dtype_name)
    vr = v // world
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(n, h, generator=g) / h**0.5).to(dtype).requires_grad_(True)
    w_full = torch.randn(v, h, generator=g) * 0.02
    w = w_full[rank * vr:(rank + 1) * vr].clone().to(dtype).requires_grad_(True)
    del w_full
    y = torch.randint(0, v, (n,), generator=g)

    def step():
        x.grad = w.grad = None
        if method == "losskit":
            counter.phase = "forward"
            loss = lk.distributed.vocab_parallel_linear_cross_entropy(x, w, y, validate=False, vocab_start=rank * vr, num_classes=v)
            counter.phase = "backward"
            loss.backward()
            return loss
        z = x @ w.T
        if method == "losskit_logits":
            counter.phase = "forward"
            loss = lk.distributed.vocab_parallel_cross_entropy(z, y, validate=False, vocab_start=rank * vr, num_classes=v)
            counter.phase = "backward"
            loss.backward()
        else:
            counter.phase = "forward"
            parts = [torch.empty_like(z) for _ in range(world)]
            dist.all_gather(parts, z.detach())
            full = torch.cat(parts, dim=1).requires_grad_(True)
            del parts
            loss = F.cross_entropy(full, y)
            counter.phase = "backward"
            (g_full,) = torch.autograd.grad(loss, full)
            del full
            z.backward(g_full[:, rank * vr:(rank + 1) * vr])
            del g_full
        dist.all_reduce(x.grad)  # the column-parallel head: dx is the sum of every rank's share
        return loss

    step()  # warm-up
    counter.bytes = {}
    times, peaks = [], []
    value = None
    for _ in range(reps):
        dist.barrier()
        base = _rss()
        _reset_peak()
        t0 = time.perf_counter()
        value = float(step().detach())
        times.append(time.perf_counter() - t0)
        peaks.append(_peak() - base)
    per_token = {k: b / reps / n for k, b in counter.bytes.items()}
    dist.barrier()
    dist.destroy_process_group()
    Path(out).write_text(json.dumps({"time": statistics.median(times), "peak": max(peaks), "loss": value, "bytes_per_token": per_token}))


def launch(method, args):
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for rank in range(args.world):
            cmd = [sys.executable, __file__, "--worker", method, str(rank), str(args.world), os.path.join(tmp, "store"),
                   os.path.join(tmp, f"{rank}.json"), str(args.n), str(args.h), str(args.v), str(args.reps), args.dtype]
            procs.append(subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // args.world)))))
        codes = [p.wait(timeout=args.timeout) for p in procs]
        if any(codes):
            raise SystemExit(f"{method}: a rank failed ({codes})")
        return [json.loads(Path(tmp, f"{r}.json").read_text()) for r in range(args.world)]


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        m, rank, world, store, out, n, h, v, reps, dt = sys.argv[2:]
        worker(m, int(rank), int(world), store, out, int(n), int(h), int(v), int(reps), dt)
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--h", type=int, default=1024)
    p.add_argument("--v", type=int, default=65536)
    p.add_argument("--world", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--timeout", type=float, default=3600)
    args = p.parse_args()
    if args.v % args.world:
        raise SystemExit("--v must be a multiple of --world")
    print(f"N={args.n} H={args.h} V={args.v} P={args.world} {args.dtype}, gloo on CPU, {os.cpu_count()} cores, "
          f"median of {args.reps} after one warm-up; per rank: slowest rank's time, largest peak rise")
    rows = {}
    for method in args.methods.split(","):
        ranks = launch(method, args)
        rows[method] = {
            "time": max(r["time"] for r in ranks),
            "peak": max(r["peak"] for r in ranks) / 2**20,
            "loss": ranks[0]["loss"],
            "bytes": ranks[0]["bytes_per_token"],
        }
    print(f"{'method':<16}{'s/step':>9}{'peak MiB':>10}{'loss':>12}  bytes per token per rank (forward / backward)")
    for m, r in rows.items():
        b = r["bytes"]
        print(f"{m:<16}{r['time']:>9.3f}{r['peak']:>10.1f}{r['loss']:>12.6f}  {b.get('forward', 0):>10.1f} / {b.get('backward', 0):.1f}")
    if "naive" in rows:
        base = rows["naive"]
        for m, r in rows.items():
            if m == "naive":
                continue
            fwd = r["bytes"].get("forward", 0) or float("nan")
            print(f"{m} ÷ naive: time {r['time'] / base['time']:.3f}, peak {r['peak'] / base['peak']:.3f}, "
                  f"forward bytes {fwd / base['bytes'].get('forward', float('nan')):.2e} "
                  f"({fwd / 4:.0f} vs {base['bytes'].get('forward', 0) / 4:.0f} floats per token)")


if __name__ == "__main__":
    main()
