"""losskit.distributed in one process: lazy imports, a world of one (no process group) equal to
the single-process losses, argument errors that name the argument, and global_count on NumPy,
torch and JAX arrays. The multi-process equalities are in test_distributed_torch.py (gloo) and
test_distributed_jax.py (shard_map)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest

import losskit as lk

IGNORE = -100


def test_import_needs_no_framework():
    code = (
        "import sys, losskit, losskit.distributed as d; "
        "assert losskit.distributed is d and callable(d.global_count); "
        "assert 'torch' not in sys.modules and 'jax' not in sys.modules, sorted(m for m in sys.modules if m in ('torch', 'jax'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names_and_keyword_only_options():
    pytest.importorskip("torch")
    d = lk.distributed
    assert set(d.__all__) == {"vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy", "global_count", "vocab_layout", "jax"}
    for fn, positional in ((d.vocab_parallel_cross_entropy, 2), (d.vocab_parallel_linear_cross_entropy, 3)):
        params = list(inspect.signature(fn).parameters.values())
        assert [p.kind for p in params[:positional]] == [inspect.Parameter.POSITIONAL_ONLY] * positional
        assert all(p.kind == inspect.Parameter.KEYWORD_ONLY for p in params[positional:])
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        d.nope  # noqa: B018


# --- a world of one: torch ------------------------------------------------------------------------

torch_cases = [
    {},
    {"ignore_index": IGNORE, "class_weight": "cw", "label_smoothing": 0.2},
    {"label_smoothing": 0.1, "smoothing_formula": "megatron", "z_loss": 1e-2, "softcap": 3.0},
    {"_probs": True, "label_smoothing": 0.1, "mask": "mask"},
]


def _torch_inputs(opts, n=11, v=7, h=4):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    z = torch.tensor(rng.standard_normal((n, v)) * 2)
    y = torch.tensor(rng.integers(0, v, n))
    if "ignore_index" in opts:
        y[::3] = IGNORE
    if opts.get("_probs"):
        t = rng.random((n, v))
        y = torch.tensor(t / t.sum(1, keepdims=True))
    o = {k: val for k, val in opts.items() if k != "_probs"}
    if o.get("class_weight") == "cw":
        o["class_weight"] = torch.tensor(rng.random(v) + 0.5)
    if o.get("mask") == "mask":
        o["mask"] = torch.tensor(rng.random(n) > 0.3)
    x = torch.tensor(rng.standard_normal((n, h)))
    W = torch.tensor(rng.standard_normal((v, h)))
    return torch, z, y, o, x, W


@pytest.mark.parametrize("opts", torch_cases, ids=lambda o: ",".join(o) or "plain")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_world_of_one_equals_the_single_process_losses(opts, reduction):
    torch, z, y, o, x, W = _torch_inputs(opts)
    assert not torch.distributed.is_initialized()
    u = torch.linspace(-1, 2, z.shape[0], dtype=torch.float64)
    fused = {k: o[k] for k in ("softcap",) if k in o}  # the only option cross_entropy lacks
    base = {k: val for k, val in o.items() if k not in fused}
    lin = dict(base)
    if "weight" in lin:
        lin["sample_weight"] = lin.pop("weight")

    def grads(loss, leaves):
        return torch.autograd.grad(loss if reduction != "none" else (loss * u).sum(), leaves)

    # logits: against linear_cross_entropy(z, I) (it has every option) and cross_entropy
    zr, zs = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    want = lk.linear_cross_entropy(zr, torch.eye(z.shape[1], dtype=z.dtype), y, reduction=reduction, **lin, **fused)
    got = lk.distributed.vocab_parallel_cross_entropy(zs, y, reduction=reduction, **base, **fused)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads(got, [zs])[0], grads(want, [zr])[0], rtol=1e-10, atol=1e-12)
    if not fused:
        torch.testing.assert_close(got, lk.cross_entropy(z, y, reduction=reduction, **base), rtol=1e-10, atol=1e-12)
    # fused linear
    leaves_r = [x.clone().requires_grad_(True), W.clone().requires_grad_(True)]
    leaves_s = [x.clone().requires_grad_(True), W.clone().requires_grad_(True)]
    want = lk.linear_cross_entropy(*leaves_r, y, reduction=reduction, **lin, **fused)
    got = lk.distributed.vocab_parallel_linear_cross_entropy(*leaves_s, y, reduction=reduction, chunk_size=4, **lin, **fused)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads(got, leaves_s), grads(want, leaves_r)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_world_of_one_layout_rules():
    torch, z, y, _, x, W = _torch_inputs({})
    vp = lk.distributed.vocab_parallel_cross_entropy
    assert lk.distributed.vocab_layout(7) == (0, 7)
    torch.testing.assert_close(vp(z, y, vocab_start=0, num_classes=7), lk.cross_entropy(z, y))
    with pytest.raises(ValueError, match="a group of one process must hold the whole vocabulary"):
        vp(z, y, vocab_start=2)
    with pytest.raises(ValueError, match="a group of one process must hold the whole vocabulary"):
        vp(z, y, num_classes=9)
    with pytest.raises(ValueError, match="`vocab_start` must be None or an int >= 0"):
        vp(z, y, vocab_start=-1)
    with pytest.raises(ValueError, match="`num_classes` must be None or an int >= 1"):
        vp(z, y, num_classes=True)
    with pytest.raises(RuntimeError, match="torch.distributed is not initialised"):
        vp(z, y, group=object())


def test_argument_errors_name_the_argument():
    torch, z, y, _, x, W = _torch_inputs({})
    vp = lk.distributed.vocab_parallel_cross_entropy
    vpl = lk.distributed.vocab_parallel_linear_cross_entropy
    cases = [
        (lambda: vp(z.numpy(), y.numpy()), TypeError, "`logits_shard` must be a torch.Tensor"),
        (lambda: vp(z, y.numpy()), TypeError, "`target`"),
        (lambda: vp(z.long(), y), TypeError, "`logits_shard` must be a floating-point array"),
        (lambda: vp(z, y[:, None]), ValueError, "trailing axis of size 1"),
        (lambda: vp(z, y, class_weight=torch.ones(3, dtype=z.dtype)), ValueError, "this rank's block of class weights, shape (7,)"),
        (lambda: vp(z, y, class_weight=-torch.ones(7, dtype=z.dtype)), ValueError, "`class_weight` must be finite and >= 0"),
        (lambda: vp(z, y, weight=torch.ones(3, dtype=z.dtype)), ValueError, "`weight`"),
        (lambda: vp(z, y, mask=torch.ones(11)), TypeError, "`mask` must be a boolean array"),
        (lambda: vp(z, y, reduction="avg"), ValueError, "`reduction` must be one of"),
        (lambda: vp(z, y, reduction="sum", normalizer=3.0), ValueError, "`normalizer` only applies"),
        (lambda: vp(z, y, label_smoothing=1.5), ValueError, "`label_smoothing` must be in [0.0, 1.0]"),
        (lambda: vp(z, y, smoothing_formula="nemo"), ValueError, "`smoothing_formula` must be one of"),
        (lambda: vp(z, y, z_loss=-1.0), ValueError, "`z_loss`"),
        (lambda: vp(z, y, softcap=0.0), ValueError, "`softcap`"),
        (lambda: vp(z, y, ignore_index=1.5), TypeError, "`ignore_index` must be an int"),
        (lambda: vp(z, y, validate="yes"), TypeError, "`validate` must be True or False"),
        (lambda: vp(z, torch.full((11,), 7)), ValueError, "class id 7 at target[0] is out of range for 7 classes"),
        (lambda: vp(z, torch.rand(11, 7, dtype=z.dtype), ignore_index=0), ValueError, "`ignore_index` applies to integer class ids"),
        (lambda: vp(z, torch.rand(11, 7, dtype=z.dtype)), ValueError, "must be a distribution over all V classes"),
        (lambda: vp(z, torch.rand(11, 3, dtype=z.dtype)), ValueError, "this rank's block of classes, shape (11, 7)"),
        (lambda: vp(z, y, axis=2), ValueError, "`axis`=2 is out of range"),
        (lambda: vpl(x, W[:, :3], y), ValueError, "the last axis of `x` must equal weight_shard.shape[1]"),
        (lambda: vpl(x, W[0], y), ValueError, "`weight_shard` must have shape (V_r, H)"),
        (lambda: vpl(x, W.float(), y), TypeError, "`x` and `weight_shard` must have the same dtype"),
        (lambda: vpl(x, W, y, bias_shard=torch.zeros(3, dtype=x.dtype)), ValueError, "`bias_shard` must have shape (7,)"),
        (lambda: vpl(x, W, y, chunk_size=0), ValueError, "`chunk_size` must be a positive int"),
        (lambda: vpl(x, W, y, sample_weight=torch.ones(11, dtype=torch.int64)), TypeError, "`sample_weight` must be a floating-point array"),
        (lambda: vpl(x, W, y[:5]), ValueError, "integer `target` (global class ids) must have the shape"),
    ]
    for fn, exc, match in cases:
        with pytest.raises(exc) as info:
            fn()
        assert match in str(info.value), (match, str(info.value))


def test_inputs_are_not_mutated_and_half_precision_dtypes():
    torch, z, y, o, x, W = _torch_inputs({"ignore_index": IGNORE})
    z0 = z.clone()
    zs = z.clone().requires_grad_(True)
    lk.distributed.vocab_parallel_cross_entropy(zs, y, ignore_index=IGNORE, label_smoothing=0.1).backward()
    assert torch.equal(z, z0)
    zb = z.to(torch.bfloat16).requires_grad_(True)
    loss = lk.distributed.vocab_parallel_cross_entropy(zb, y, ignore_index=IGNORE)
    loss.backward()
    assert loss.dtype == torch.float32 and zb.grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss, lk.cross_entropy(zb.float(), y, ignore_index=IGNORE), rtol=1e-6, atol=1e-7)


# --- global_count ---------------------------------------------------------------------------------


def test_global_count_is_the_mean_denominator_numpy():
    rng = np.random.default_rng(0)
    micro = [rng.integers(0, 5, n) for n in (4, 7, 3)]
    micro[1][:5] = IGNORE
    weights = [rng.random(len(m)) + 0.5 for m in micro]
    masks = [rng.random(len(m)) > 0.2 for m in micro]
    cw = rng.random(5) + 0.5
    y, w, m = np.concatenate(micro), np.concatenate(weights), np.concatenate(masks)
    z = rng.standard_normal((len(y), 5))
    opts = dict(ignore_index=IGNORE, class_weight=cw)
    count = lk.distributed.global_count(micro, weight=weights, mask=masks, **opts)
    assert isinstance(count, np.ndarray) and count.shape == () and count.dtype == np.float64
    total = lk.cross_entropy(z, y, weight=w, mask=m, reduction="sum", **opts)
    assert np.isclose(total / lk.cross_entropy(z, y, weight=w, mask=m, **opts), count)
    # the recipe: per micro-batch losses with normalizer=count add up to the mean of the whole
    pieces = np.split(np.arange(len(y)), np.cumsum([4, 7])[:2])
    acc = sum(lk.cross_entropy(z[i], y[i], weight=w[i], mask=m[i], normalizer=count, **opts) for i in pieces)
    assert np.isclose(acc, lk.cross_entropy(z, y, weight=w, mask=m, **opts), rtol=1e-12)
    assert float(lk.distributed.global_count(y)) == len(y)  # one array, no options
    t = rng.random((3, 4, 5))
    assert float(lk.distributed.global_count(t)) == 60  # float targets: every element
    assert float(lk.distributed.global_count(t, axis=1)) == 15  # probability targets, class axis 1
    assert float(lk.distributed.global_count(t, mask=np.ones((3, 5), bool), axis=1)) == 15


def test_global_count_errors():
    gc = lk.distributed.global_count
    y = np.array([1, 2, IGNORE])
    cases = [
        (lambda: gc([]), ValueError, "`targets` is an empty list"),
        (lambda: gc([y, y], weight=[np.ones(3)]), ValueError, "`weight` must be given once per micro-batch (2 arrays"),
        (lambda: gc([y, y], weight=np.ones(3)), TypeError, "`weight` must be a list of 2 arrays"),
        (lambda: gc(np.array([True])), TypeError, "got dtype bool"),
        (lambda: gc(np.ones(3), ignore_index=IGNORE), ValueError, "`ignore_index` applies to integer class ids"),
        (lambda: gc(y, axis=0), ValueError, "class ids have none"),
        (lambda: gc(y, ignore_index=IGNORE, class_weight=np.ones(2)), ValueError, "class id 2 at"),
        (lambda: gc(y, class_weight=np.ones((2, 2))), ValueError, "`class_weight` must be a 1-d array"),
        (lambda: gc(y, ignore_index="x"), TypeError, "`ignore_index` must be an int"),
        (lambda: gc(y, weight=np.ones(2)), ValueError, "`weight`"),
        (lambda: gc(y, group=object()), TypeError, "needs torch tensors"),
        (lambda: gc([1, 2]), TypeError, "`targets[0]` must be an array"),
    ]
    for fn, exc, match in cases:
        with pytest.raises(exc) as info:
            fn()
        assert match in str(info.value), (match, str(info.value))


def test_global_count_torch_and_jax_without_a_group():
    torch = pytest.importorskip("torch")
    y = torch.tensor([1, IGNORE, 3, 0])
    c = lk.distributed.global_count([y, y[:2]], ignore_index=IGNORE)
    assert isinstance(c, torch.Tensor) and c.dtype == torch.float64 and float(c) == 4.0
    c = lk.distributed.global_count(y.to(torch.int32), ignore_index=IGNORE, class_weight=torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert float(c) == 2.0 + 4.0 + 1.0
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from losskit.distributed import jax as ljx

    yj = jnp.asarray([1, IGNORE, 3, 0])
    for fn in (lk.distributed.global_count, ljx.global_count):
        c = fn([yj, yj[:2]], ignore_index=IGNORE)
        assert isinstance(c, jax.Array) and c.shape == () and float(c) == 4.0
    # under jit, with NumPy weights converted as JAX converts them
    c = jax.jit(lambda y: ljx.global_count(y, ignore_index=IGNORE, weight=np.array([1.0, 5.0, 2.0, 0.5])))(yj)
    assert float(c) == 3.5


def test_jax_world_of_one_and_errors():
    pytest.importorskip("jax")
    import jax
    import jax.numpy as jnp

    from losskit.distributed import jax as ljx

    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.standard_normal((6, 5)))
    y = jnp.asarray([0, 4, IGNORE, 2, 1, 3])
    f = lambda z: ljx.vocab_parallel_cross_entropy(z, y, axis_name=None, ignore_index=IGNORE, label_smoothing=0.1)  # noqa: E731
    g = lambda z: lk.cross_entropy(z, y, ignore_index=IGNORE, label_smoothing=0.1)  # noqa: E731
    np.testing.assert_allclose(jax.grad(f)(z), jax.grad(g)(z), rtol=1e-12)
    np.testing.assert_allclose(jax.jit(f)(z), g(z), rtol=1e-12)
    with pytest.raises(TypeError, match="`logits_shard` must be a JAX array"):
        ljx.vocab_parallel_cross_entropy(np.asarray(z), y, axis_name=None)
    with pytest.raises(ValueError, match="without `axis_name` the block must hold the whole vocabulary"):
        ljx.vocab_parallel_cross_entropy(z, y, axis_name=None, num_classes=9, ignore_index=IGNORE)
    with pytest.raises(ValueError, match="`num_classes` must be None or a positive int"):
        ljx.vocab_parallel_cross_entropy(z, y, axis_name=None, num_classes=0)
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="For JAX arrays use losskit.distributed.jax"):
        lk.distributed.vocab_parallel_cross_entropy(z, y)
    with pytest.raises(TypeError, match="For torch tensors use losskit.distributed"):
        ljx.vocab_parallel_cross_entropy(torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64), axis_name=None)
