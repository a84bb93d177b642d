"""CTC forward + backward on CPU: losskit vs ``torch.nn.functional.ctc_loss`` on torch tensors,
and losskit vs ``optax.ctc_loss`` under ``jax.jit(jax.grad)``, side by side.

    python benchmarks/ctc.py                           # B=16, T=200, C=32, L=50 (issue 13), float32
    python benchmarks/ctc.py --reps 15 --rounds 5      # five runs; the median of their ratios
    python benchmarks/ctc.py --b 4 --t 20 --l 5 --reps 3   # tiny: proves it runs

Both sides get the same random logits (batch-major for losskit, ``log_softmax`` + time-major
for torch, inside the timed region), targets with ragged lengths (input lengths T/2..T, target
lengths L/2..L, capped so an alignment exists). Each repetition times one forward+backward of
each method in turn (interleaved, so load drifts hit both); the printed figure is the ratio of
the medians, losskit / peer (below 1: losskit is faster); ``--rounds R`` repeats that R times
and also prints the median of the R ratios (the figure to quote on a shared, loaded machine).
Values and gradients are compared first. torch runs on one thread (``torch.set_num_threads(1)``,
as the peer); JAX/XLA keep their defaults.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _data(b, t, c, l, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((b, t, c)).astype(np.float32)
    targets = rng.integers(1, c, (b, l))
    il = rng.integers(t // 2, t + 1, b)
    il[0] = t
    tl = np.minimum(rng.integers(l // 2, l + 1, b), (il + 1) // 2)
    return z, targets, il, tl


def _median_ratio(fa, fb, reps):
    ta, tb = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        fa()
        t1 = time.perf_counter()
        fb()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return statistics.median(ta), statistics.median(tb)


def bench_torch(z, targets, il, tl, reps):
    import torch
    import torch.nn.functional as F

    import losskit as lk

    torch.set_num_threads(1)
    zt = torch.tensor(z, requires_grad=True)
    tg, ilt, tlt = torch.tensor(targets), torch.tensor(il), torch.tensor(tl)

    def ours():
        zt.grad = None
        lk.ctc(zt, tg, input_lengths=ilt, target_lengths=tlt, normalize_by="target_length").backward()
        return zt.grad

    def theirs():
        zt.grad = None
        F.ctc_loss(zt.log_softmax(-1).transpose(0, 1), tg, ilt, tlt).backward()
        return zt.grad

    np.testing.assert_allclose(ours().numpy(), theirs().numpy(), rtol=1e-3, atol=1e-6)
    return _median_ratio(ours, theirs, reps)


def bench_jax(z, targets, il, tl, reps):
    import jax
    import jax.numpy as jnp
    import optax

    import losskit as lk

    zj, tg, ilj, tlj = (jnp.asarray(a) for a in (z, targets, il, tl))
    logit_pad = jnp.asarray((np.arange(z.shape[1])[None, :] >= il[:, None]).astype(np.float32))
    label_pad = jnp.asarray((np.arange(targets.shape[1])[None, :] >= tl[:, None]).astype(np.float32))

    ours = jax.jit(jax.value_and_grad(lambda x: lk.ctc(x, tg, input_lengths=ilj, target_lengths=tlj, reduction="sum", validate=False)))
    theirs = jax.jit(jax.value_and_grad(lambda x: jnp.sum(optax.ctc_loss(x, logit_pad, tg, label_pad))))
    (va, ga), (vb, gb) = ours(zj), theirs(zj)
    np.testing.assert_allclose(float(va), float(vb), rtol=1e-3)
    np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), rtol=1e-2, atol=1e-4)
    return _median_ratio(lambda: jax.block_until_ready(ours(zj)), lambda: jax.block_until_ready(theirs(zj)), reps)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--b", type=int, default=16)
    ap.add_argument("--t", type=int, default=200)
    ap.add_argument("--c", type=int, default=32)
    ap.add_argument("--l", type=int, default=50)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    data = _data(args.b, args.t, args.c, args.l)
    print(f"CTC forward+backward, CPU, B={args.b} T={args.t} C={args.c} L={args.l}, float32, median of {args.reps}")
    try:
        import optax  # noqa: F401
    except ImportError:
        optax = None
        print("  jax: optax not installed, skipped")
    ratios = {"torch": [], "jax": []}
    for _ in range(args.rounds):
        a, b = bench_torch(*data, args.reps)
        ratios["torch"].append(a / b)
        print(f"  torch tensors: losskit {a * 1e3:8.2f} ms   torch.nn.functional.ctc_loss {b * 1e3:8.2f} ms   ratio {a / b:.2f}")
        if optax is not None:
            a, b = bench_jax(*data, args.reps)
            ratios["jax"].append(a / b)
            print(f"  jax (jit grad): losskit {a * 1e3:8.2f} ms   optax.ctc_loss {b * 1e3:8.2f} ms   ratio {a / b:.2f}")
    if args.rounds > 1:
        for name, peer in (("torch", "torch.nn.functional.ctc_loss"), ("jax", "optax.ctc_loss")):
            if ratios[name]:
                print(f"  median of {args.rounds} ratios, {name}: losskit / {peer} = {statistics.median(ratios[name]):.2f} (range {min(ratios[name]):.2f}-{max(ratios[name]):.2f})")


if __name__ == "__main__":
    main()
