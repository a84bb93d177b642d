"""One training step of a small GPT-style model with the fused head (``lk.linear_cross_entropy``)
against the unfused one (``F.cross_entropy(lm_head(h), y)``), eager and under
``torch.compile`` + ``torch.autocast(bfloat16)``: the median step time and the peak-RSS rise
of a step (workers run with ``MALLOC_MMAP_THRESHOLD_=131072``, so the rise is live memory, not
what glibc's heap happened to hold from earlier steps).

    python benchmarks/gpt_step.py                       # vocab 8192, d 256, 2 layers, 8 x 256 tokens
    python benchmarks/gpt_step.py --rounds 3 --steps 5  # more samples
    python benchmarks/gpt_step.py --quick               # tiny sizes, eager + autocast, one process (CI)

A step is forward, loss, backward, AdamW step and ``zero_grad(set_to_none=True)``. Every
variant runs in its own process (fresh allocator); with ``--rounds R`` the variants' processes
are started in turn R times. Per process: ``--warmup`` steps (compilation happens there), then
``--steps`` timed steps; time is the median over all timed steps of all rounds, memory the
largest rise of peak RSS (VmHWM reset before the step) above the RSS just before it.

Variants (``--variants``): ``unfused`` / ``fused`` eager in float32, ``unfused_amp`` /
``fused_amp`` under autocast bfloat16, and the ``_compiled`` versions of the autocast ones
(the whole step's model + loss compiled; the optimizer stays eager). A fused variant may name
its rows per chunk after ``@`` (``fused_amp_compiled@512``; default: ``chunk_size=None``), to
measure the memory / time trade-off of the chunk size side by side; a compiled fused variant
ending in ``_operator`` (``fused_amp_compiled_operator``) runs the opaque operator instead of
the traced chunk loop of ``interop.torch_fused`` (``TRACED``, the default; ``_traced`` names it
explicitly); a ``head_`` prefix
(``head_fused_amp_compiled``) times the loss head alone on a fixed hidden state (the model's
layers are skipped; the AdamW step updates the head's weight).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _memory import peak as _peak, reset_peak as _reset_peak, rss as _rss  # noqa: E402

VARIANTS = ("unfused", "fused", "unfused_amp", "fused_amp", "unfused_amp_compiled", "fused_amp_compiled")
QUICK = dict(vocab=512, d=32, layers=1, heads=2, seq=16, batch=2, steps=2, warmup=1)


def build(vocab, d, layers, heads, seq):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
            return x + self.out(F.gelu(self.fc(self.ln2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))
            self.ln = nn.LayerNorm(d)
            self.head = nn.Linear(d, vocab, bias=False)

        def hidden(self, idx):
            x = self.tok(idx) + self.pos.weight[: idx.shape[1]]
            for blk in self.blocks:
                x = blk(x)
            return self.ln(x)

    return GPT()


def worker(variant: str, a) -> dict:
    import torch
    import torch.nn.functional as F

    import losskit as lk

    if a.quick:
        torch.set_num_threads(1)  # tiny ops: no thread barriers to wait for on a shared machine
    torch.manual_seed(0)
    model = build(a.vocab, a.d, a.layers, a.heads, a.seq)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, a.vocab, (a.batch, a.seq + 1))
    x, y = idx[:, :-1], idx[:, 1:]
    variant, _, rows = variant.partition("@")
    chunk_size = int(rows) if rows else None
    traced = variant.endswith("_traced")  # torch_fused's traced form (TRACED, the default)
    operator = variant.endswith("_operator")  # the opaque operator instead
    if traced or operator:
        from losskit.interop import torch_fused

        torch_fused.TRACED = traced
        variant = variant.rpartition("_")[0]
    head_only = variant.startswith("head_")  # the loss head alone, on a fixed hidden state
    if head_only:
        variant = variant[len("head_"):]
        hidden = torch.randn(a.batch, a.seq, a.d, requires_grad=True)
    fused = variant.startswith("fused")
    amp = "_amp" in variant

    def loss_fn(x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            h = hidden if head_only else model.hidden(x)
            if fused:
                return lk.linear_cross_entropy(h, model.head.weight, y, chunk_size=chunk_size)
            return F.cross_entropy(model.head(h).float().flatten(0, 1), y.flatten())

    if variant.endswith("_compiled"):
        loss_fn = torch.compile(loss_fn)

    def step():
        loss = loss_fn(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    times, peaks, losses = [], [], []
    for i in range(a.warmup + a.steps):
        base = _rss()
        _reset_peak()
        t0 = time.perf_counter()
        losses.append(step())
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            times.append(dt)
            peaks.append(_peak() - base)
    return {"variant": ("head_" if head_only else "") + variant + ("_traced" if traced else "") + (f"@{rows}" if rows else ""), "times_s": times, "peak_bytes": max(peaks), "losses": losses}


def run_one(variant, a) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant] + [f"--{k}={getattr(a, k)}" for k in ("vocab", "d", "layers", "heads", "seq", "batch", "steps", "warmup")]
    # (a worker is never --quick: quick runs in-process). A fixed mmap threshold: glibc's
    # dynamic one lets freed blocks of up to 32 MiB stay in the heap, so a step's peak-RSS rise
    # depended on what earlier steps had left there (measured 32-99 MiB for the same step);
    # with every block >= 128 KiB mapped and unmapped, the rise is the step's live memory
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=os.environ.get("MALLOC_MMAP_THRESHOLD_", "131072"))
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        return {"variant": variant, "error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--variants", default=None, help=f"comma-separated, from {','.join(VARIANTS)}; a fused one may end in @ROWS (chunk_size)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, eager variants only: proves the script runs (CI)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        for k, val in QUICK.items():
            setattr(a, k, val)
    if a.worker:
        print(json.dumps(worker(a.worker, a)))
        return {}
    variants = (a.variants.split(",") if a.variants else [v for v in VARIANTS if not (a.quick and v.endswith("_compiled"))])
    res: dict = {}
    for _ in range(a.rounds):
        for v in variants:
            # --quick runs every variant in this process: it proves the script runs, in seconds
            r = worker(v, a) if a.quick else run_one(v, a)
            cur = res.get(v)
            if cur is None or "error" in cur:
                res[v] = r
            elif "error" not in r:
                cur["times_s"] += r["times_s"]
                cur["peak_bytes"] = max(cur["peak_bytes"], r["peak_bytes"])
    tokens = a.batch * a.seq
    mib = 2**20
    print(f"GPT step: vocab {a.vocab}, d {a.d}, {a.layers} layers, {a.batch} x {a.seq} tokens (logits {tokens * a.vocab * 4 / mib:.0f} MiB "
          f"in float32); median of {a.steps} steps x {a.rounds} rounds after {a.warmup} warm-up steps, one process per variant and round")
    print(f"{'variant':<22} {'median s':>9} {'peak MiB':>9}   first / last loss")
    for v, r in res.items():
        if "error" in r:
            print(f"{v:<22} error: {r['error']}")
            continue
        r["median_s"] = statistics.median(r["times_s"])
        print(f"{v:<22} {r['median_s']:>9.3f} {r['peak_bytes'] / mib:>9.1f}   {r['losses'][0]:.4f} / {r['losses'][-1]:.4f}")
    print("ratios (fused / unfused, same settings):")
    for v in variants:
        head, core = ("head_", v[5:]) if v.startswith("head_") else ("", v)
        base = head + "un" + core.partition("@")[0].removesuffix("_traced").removesuffix("_operator")
        if core.startswith("fused") and "median_s" in res.get(v, {}) and "median_s" in res.get(base, {}):
            f, u = res[v], res[base]
            print(f"  {head + (core[6:] if core.startswith('fused_') else 'eager float32' + core[5:]):<16} time {f['median_s'] / u['median_s']:.3f}   peak memory {f['peak_bytes'] / max(u['peak_bytes'], 1):.3f}")
    for r in res.values():
        if "losses" in r and not all(math.isfinite(l) for l in r["losses"]):
            raise SystemExit(f"{r['variant']}: non-finite loss {r['losses']}")
    return res


if __name__ == "__main__":
    main()
