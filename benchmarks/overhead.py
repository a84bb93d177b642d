"""Per-call cost on small batches, where Python dispatch and validation dominate.

A loss runs once per training step, often on small batches, so the fixed cost per call
matters as much as throughput. For each loss shared with ``torch.nn.functional`` this times
forward+backward on a (32, 10) float32 batch, losskit vs the peer, interleaved, and prints
medians in µs and the ratio losskit / peer (lower is better). It also times losskit's NumPy
``value_and_grad`` on the same batch (no peer: NumPy has no losses).

Usage: python benchmarks/overhead.py [--batch 32] [--classes 10] [--repeats 7] [--threads 1]
                                     [--clock wall|cpu] [--profile]

``--threads 1`` runs torch single-threaded: on a shared, loaded machine a (32, 10) op that
wakes OpenMP workers can wait milliseconds for a core, which swamps the per-call cost that
this benchmark is about (on both sides, but unevenly). ``--clock cpu`` (with ``--threads 1``)
times the CPU time of the calling thread instead of wall time: the time the process waits
for a core on a loaded machine is not counted.

``--profile`` prints, for each loss, where one call's time goes: forward and backward of
losskit and torch (backward through a kept graph), and losskit's parts: the cached plan
lookup, ``prepare`` (shape checks, layout), the value checks (``validate=True``), the
reduction multiplier, the loss's kernel (``value_and_grad`` of its declaration), the
reduction, and what the autograd bridge adds around its kernel call. (A (32, 10) call runs
the bridge's small-input path: value and gradient in the forward, one multiply in backward;
for ``cross_entropy`` 'kernel' is its recorded call, torch's own log_softmax and nll_loss;
for a loss whose Numba kernel opts in to small torch calls, ``_accel``'s ``small_torch``, it
is that kernel's call on the tensors' memory.)
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--number", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: the calling thread's CPU time")
    ap.add_argument("--profile", action="store_true", help="per-component times of one call (see the module docstring)")
    args = ap.parse_args()
    timer = time.perf_counter if args.clock == "wall" else time.thread_time

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
        return min(timeit.repeat(step, number=args.number, repeat=1, timer=timer)) / args.number * 1e6

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
    times = [min(timeit.repeat(lambda: lk.cross_entropy.value_and_grad(zn, yn), number=args.number, repeat=1, timer=timer)) / args.number * 1e6 for _ in range(args.repeats)]
    print(f"{'numpy cross_entropy.value_and_grad':<30}{statistics.median(times):>12.1f}")
    if args.profile:
        profile(cases, z, {"mse": y_real, "huber": y_real, "binary_cross_entropy": y_prob, "cross_entropy": y_ids, "kl_divergence": t_dist}, args, timer)


def profile(cases, z, targets, args, timer) -> None:
    """Per-component medians (µs) of one (32, 10) call; see the module docstring."""
    import torch

    import losskit as lk
    from losskit import _loss, _reduce
    from losskit._array import torch_scalar
    from losskit.interop import torch as bridge

    def us(fn) -> float:
        fn()
        return statistics.median(
            timeit.repeat(fn, number=args.number, repeat=args.repeats, timer=timer)
        ) / args.number * 1e6

    zd = z.detach()
    cols = ("lk fwd", "lk bwd", "torch fwd", "torch bwd", "plan", "prepare", "checks", "mult", "kernel", "reduce", "bridge")
    print(f"\nper component, µs (median of {args.repeats}); 'bridge' = the autograd bridge's recorded call minus its kernel call")
    print(f"{'loss':<22}" + "".join(f"{c:>10}" for c in cols))
    for name, target in targets.items():
        loss = lk.registry[name]
        spec = loss.spec
        ours, peer = cases[name]
        mine, theirs = ours(), peer()
        row = {
            "lk fwd": us(ours),
            "lk bwd": us(lambda: mine.backward(retain_graph=True)),
            "torch fwd": us(peer),
            "torch bwd": us(lambda: theirs.backward(retain_graph=True)),
        }
        plan_args = ("value", z, target, None, None, "mean", None, True, {})
        plan = loss._plan(*plan_args)
        xp = plan.xp
        row["plan"] = us(lambda: loss._plan(*plan_args))
        if spec.prepare is None:
            prep = _loss.Prepared(zd, target, tuple(zd.shape))
            row["prepare"] = us(lambda: _loss.elementwise_target(zd, target, plan.compute_dtype, xp, "pred", "target", name))  # what _run runs
        else:
            prep = spec.prepare(zd, target, dict(plan.options), xp, True, name)
            row["prepare"] = us(lambda: spec.prepare(zd, target, dict(plan.options), xp, True, name))
        o = {**plan.options, **prep.static}
        row["checks"] = us(lambda: spec.check_values(prep.pred, prep.target, o, xp, name, prep.valid)) if spec.check_values else 0.0
        row["mult"] = us(lambda: _reduce.multiplier(prep.sample_shape, None, prep.valid, prep.denom, "mean", None, plan.compute_dtype, xp, check=name))
        c = torch_scalar(1.0 / max(1, int(np.prod(prep.sample_shape))), zd)
        static = tuple([(k, o[k]) for k in loss._static_names] + list(prep.static.items()))
        call = _loss.Call(spec, "mean", static, spec.array_options)
        aux = tuple(o[k] for k in spec.array_options)
        lean = bridge._lean_kernel(call, prep.pred, prep.target, c, prep.valid, aux, True)
        n_samples = int(np.prod(prep.sample_shape))
        recorded = None if lean is None or getattr(lean, "recorded", None) is None else lean.recorded
        if recorded is not None and recorded(call, z, prep.target, 1.0 / n_samples, prep.valid, aux) is not None:
            # the small recorded call: torch's own ops recorded by autograd (no Python node)
            row["kernel"] = us(lambda: recorded(call, z, prep.target, 1.0 / n_samples, prep.valid, aux))
        elif lean is None and name in bridge._SMALL_ACCEL and bridge._small_accel(call, prep.pred, prep.target, c, prep.valid, aux) is not None:
            # the loss's Numba kernel on the tensors' memory (its entry declares small_torch)
            row["kernel"] = us(lambda: bridge._small_accel(call, prep.pred, prep.target, c, prep.valid, aux))
        elif lean is None:
            row["kernel"] = us(lambda: _loss.evaluate(call, prep.pred, prep.target, c, prep.valid, aux, xp, "value_and_grad"))
        elif getattr(lean, "value_and_grad", None) is not None:  # the bridge's small-input path: one pass
            row["kernel"] = us(lambda: lean.value_and_grad(call, prep.pred, prep.target, c, prep.valid, aux, xp))
        else:  # what the bridge's small-input path runs: the lean kernel's forward and backward
            def lean_value_and_grad():
                value, residual = lean.forward(call, prep.pred, prep.target, c, prep.valid, aux, xp)
                return value, lean.backward(call, prep.pred, prep.target, c, prep.valid, aux, residual, xp)

            row["kernel"] = us(lean_value_and_grad)
        per_sample = spec.value(prep.pred, prep.target, o, xp)
        row["reduce"] = us(lambda: _reduce.reduce_terms(per_sample, c, prep.valid, "mean", xp))
        zr = prep.pred.detach().requires_grad_(True)
        # the multiplier as _run hands it over (a Python float for a plain "mean")
        row["bridge"] = us(lambda: bridge.value(call, zr, prep.target, 1.0 / n_samples, prep.valid, aux)) - row["kernel"]
        print(f"{name:<22}" + "".join(f"{row[c]:>10.1f}" for c in cols))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
