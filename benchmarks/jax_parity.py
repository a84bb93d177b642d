"""JAX ``value_and_grad`` under ``jax.jit``: losskit against optax's equivalent, float32.

Each pair is compiled once, then timed interleaved (losskit, optax, losskit, optax, ...): each
repetition times a loop of calls of each side back to back (wall clock, ``block_until_ready``),
and the printed ratio is the median over repetitions of losskit / optax (<= 1.1 is the goal of
issue 16; < 1 means losskit is faster). The optax side is what a user writes:

* cross_entropy   ``optax.losses.softmax_cross_entropy_with_integer_labels(z, y).mean()``
* kl_divergence   ``optax.losses.kl_divergence(jax.nn.log_softmax(z), t).sum(-1).mean()``
                  (optax takes *log*-predictions first and the target distribution second)
* binary_cross_entropy  ``optax.sigmoid_binary_cross_entropy(z, t).mean()``
* mse             ``optax.losses.squared_error(p, y).mean()`` (= 2 x ``l2_loss``)
* huber           ``optax.losses.huber_loss(p, y, delta=1.0).mean()``

losskit runs with its defaults (``validate=True``, ``reduction="mean"``).

    python benchmarks/jax_parity.py                  # (256, 10), (4096, 1000), (16384, 8192)
    python benchmarks/jax_parity.py --quick          # tiny shapes (CI: proves the script runs)
    python benchmarks/jax_parity.py --losses cross_entropy,kl_divergence --shapes 4096x1000
    python benchmarks/jax_parity.py --hlo            # also count the fusions in each compiled step
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import numpy as np

SHAPES = [(256, 10), (4096, 1000), (16384, 8192)]
QUICK_SHAPES = [(8, 5), (16, 7)]
LOSSES = ("cross_entropy", "kl_divergence", "binary_cross_entropy", "mse", "huber")


def cases(shape, rng):
    """``{loss: (losskit_fn, optax_fn, args)}`` for one shape; each fn maps args to a scalar."""
    import jax
    import jax.numpy as jnp
    import optax

    import losskit as lk

    n, c = shape
    z = rng.standard_normal(shape).astype(np.float32) * 2
    ids = rng.integers(0, c, n).astype(np.int32)
    t = rng.random(shape).astype(np.float32) ** 3
    t /= t.sum(-1, keepdims=True)
    soft = rng.random(shape).astype(np.float32)
    y = rng.standard_normal(shape).astype(np.float32)
    a = jnp.asarray
    return {
        "cross_entropy": (
            lambda z_, y_: lk.cross_entropy(z_, y_),
            lambda z_, y_: optax.losses.softmax_cross_entropy_with_integer_labels(z_, y_).mean(),
            (a(z), a(ids)),
        ),
        "kl_divergence": (
            lambda z_, t_: lk.kl_divergence(z_, t_),
            lambda z_, t_: optax.losses.kl_divergence(jax.nn.log_softmax(z_, axis=-1), t_).mean(),
            (a(z), a(t)),
        ),
        "binary_cross_entropy": (
            lambda z_, t_: lk.binary_cross_entropy(z_, t_),
            lambda z_, t_: optax.losses.sigmoid_binary_cross_entropy(z_, t_).mean(),
            (a(z), a(soft)),
        ),
        "mse": (
            lambda p_, y_: lk.mse(p_, y_),
            lambda p_, y_: optax.losses.squared_error(p_, y_).mean(),
            (a(z), a(y)),
        ),
        "huber": (
            lambda p_, y_: lk.huber(p_, y_),
            lambda p_, y_: optax.losses.huber_loss(p_, y_, delta=1.0).mean(),
            (a(z), a(y)),
        ),
    }


def compiled_step(fn, args):
    import jax

    step = jax.jit(jax.value_and_grad(fn))
    jax.block_until_ready(step(*args))  # compile and warm up
    return step


def check_same_function(ours, theirs, args, name):
    """The two sides compute the same value and gradient (float32 tolerance): the ratio
    compares equals."""
    (v1, g1), (v2, g2) = ours(*args), theirs(*args)
    np.testing.assert_allclose(float(v1), float(v2), rtol=1e-4, atol=1e-6, err_msg=f"{name}: value")
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-3, atol=1e-7, err_msg=f"{name}: gradient")


def fusion_count(fn, args) -> int:
    """Number of fusions in the optimised HLO of ``jit(value_and_grad(fn))`` (each one is at
    least one pass over memory on the CPU backend)."""
    import jax

    text = jax.jit(jax.value_and_grad(fn)).lower(*args).compile().as_text()
    return len(re.findall(r"^\s*(?:ROOT )?\S+ = \S+ fusion\(", text, flags=re.M))


def _loop(step, args, number: int) -> float:
    import jax

    start = time.perf_counter()
    for _ in range(number):
        out = step(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / number


def compare(ours, theirs, args, repeats: int, min_time: float):
    """Per-call seconds of both sides (medians) and the median of the per-repetition ratios."""
    probe = _loop(ours, args, 1)
    number = max(1, int(min_time / max(probe, 1e-7)))
    a, b = [], []
    for _ in range(repeats):
        a.append(_loop(ours, args, number))
        b.append(_loop(theirs, args, number))
    return statistics.median(a), statistics.median(b), statistics.median(x / y for x, y in zip(a, b))


def main(argv=None) -> list:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes, one repetition (seconds)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--min-time", type=float, default=0.05, help="seconds per timed loop (short loops, many repetitions: load bursts hit both sides alike)")
    ap.add_argument("--losses", default=",".join(LOSSES))
    ap.add_argument("--shapes", default=None, help="e.g. 256x10,4096x1000")
    ap.add_argument("--hlo", action="store_true", help="print the fusion count of each compiled step")
    args = ap.parse_args(argv)
    import jax

    names = [s for s in args.losses.split(",") if s]
    unknown = set(names) - set(LOSSES)
    if unknown:
        ap.error(f"unknown losses {sorted(unknown)}; choose from {LOSSES}")
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    else:
        shapes = QUICK_SHAPES if args.quick else SHAPES
    repeats = 1 if args.quick else args.repeats
    min_time = 0.0 if args.quick else args.min_time
    rng = np.random.default_rng(0)
    rows = []
    print(f"jax {jax.__version__} ({jax.default_backend()}), float32, jit(value_and_grad), "
          f"wall clock, median of {repeats} interleaved repetitions")
    head = f"{'loss':<22}{'shape':>12}{'losskit ms':>12}{'optax ms':>11}{'losskit/optax':>15}"
    print(head + ("    fusions (losskit/optax)" if args.hlo else ""))
    for shape in shapes:
        table = cases(shape, rng)
        for name in names:
            ours_fn, theirs_fn, arrays = table[name]
            ours, theirs = compiled_step(ours_fn, arrays), compiled_step(theirs_fn, arrays)
            check_same_function(ours, theirs, arrays, name)
            t_ours, t_theirs, ratio = compare(ours, theirs, arrays, repeats, min_time)
            line = f"{name:<22}{'x'.join(map(str, shape)):>12}{t_ours * 1e3:>12.3f}{t_theirs * 1e3:>11.3f}{ratio:>15.2f}"
            if args.hlo:
                line += f"    {fusion_count(ours_fn, arrays)}/{fusion_count(theirs_fn, arrays)}"
            print(line, flush=True)
            rows.append({"loss": name, "shape": shape, "losskit": t_ours, "optax": t_theirs, "ratio": ratio})
            del ours, theirs
    return rows


if __name__ == "__main__":
    main()
