"""Values equal every declared peer's (torch, optax, Keras, scikit-learn, SciPy or a closed
formula) to 1e-6 relative in float64 (or the peer's ``rtol``), for every option set the peer
shares and every reduction, on every backend; the weighted / masked / normalizer rule for
``"mean"``; and the peers' values on the declared edge inputs. Driven by the registry."""

from __future__ import annotations

import numpy as np
import pytest

import losskit as lk
from registry_cases import (
    REDUCTIONS,
    SET,
    arrays_on,
    draw,
    option_set,
    options_on,
    peer_params,
    peer_value,
    require,
    spec,
    strip,
)


def _peer(name, j):
    return spec(name).checks.peers[j]


@pytest.mark.parametrize("param", peer_params("test_value_matches_the_peer"))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_value_matches_the_peer(param, reduction, backend, rng):
    name, i, j = param
    peer = _peer(name, j)
    require(peer)
    if reduction not in peer.reductions:
        pytest.skip(f"the peer has no reduction={reduction!r}")
    d = draw(name, i, rng)
    expected = peer_value(peer, d.arrays, reduction, d.raw)
    got = d.loss(*arrays_on(backend, d.arrays), reduction=reduction, **options_on(backend, d.raw))
    assert backend.is_native(got), type(got)
    got = backend.to_numpy(got)
    assert got.shape == expected.shape
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=peer.rtol, atol=1e-12)


def _row_axis_ok(d) -> bool:
    """The first axis holds samples (not the class axis), so rows can be repeated; not for
    coupled samples (``vjp_kernel``: InfoNCE rows score every key), where a repeat changes them."""
    return d.spec.kind != SET and d.spec.vjp_kernel is None and len(d.sample_shape) >= 1 and d.axis != 0


@pytest.mark.parametrize("param", peer_params("test_mean_rule_matches_the_peer_on_repeated_rows", where=lambda s: s.kind != SET))
def test_mean_rule_matches_the_peer_on_repeated_rows(param, rng):
    """mean = Σ w·ℓ / Σ w·d over valid samples, checked without knowing d: integer row weights
    and a row mask equal the peer's plain "mean" / "sum" on the batch with each valid row
    repeated w times (masked rows dropped), whatever the loss's own denominator weights d are
    (class weights, ignored ids...). normalizer=N gives the repeated batch's sum / N."""
    name, i, j = param
    peer = _peer(name, j)
    require(peer)
    if not {"mean", "sum"} <= set(peer.reductions):
        pytest.skip("the peer lacks mean or sum")
    d = draw(name, i, rng)
    if not _row_axis_ok(d):
        pytest.skip("no sample axis to repeat")
    n = d.sample_shape[0]
    counts = rng.integers(1, 4, n)
    rows = rng.random(n) < 0.7
    rows[0] = True
    broadcast = lambda r: np.broadcast_to(r.reshape((n,) + (1,) * (len(d.sample_shape) - 1)), d.sample_shape)  # noqa: E731
    weight = broadcast(np.where(rows, counts, 5.0).astype(np.float64)).copy()  # masked rows' weights must not matter
    mask = broadcast(rows).copy()
    repeat = np.where(rows, counts, 0)
    repeated = tuple(np.repeat(a, repeat, axis=0) for a in d.arrays)
    o = d.options
    np.testing.assert_allclose(d.loss(*d.arrays, weight=weight, mask=mask, **o), peer_value(peer, repeated, "mean", d.raw), rtol=max(peer.rtol, 1e-10))
    total = peer_value(peer, repeated, "sum", d.raw)
    np.testing.assert_allclose(d.loss(*d.arrays, weight=weight, mask=mask, reduction="sum", **o), total, rtol=max(peer.rtol, 1e-10))
    np.testing.assert_allclose(d.loss(*d.arrays, weight=weight, mask=mask, normalizer=7.0, **o), total / 7.0, rtol=max(peer.rtol, 1e-10))


@pytest.mark.parametrize("param", peer_params("test_weighted_sum_of_the_peer_per_sample_values", where=lambda s: s.kind != SET))
def test_weighted_sum_of_the_peer_per_sample_values(param, rng):
    """With unit weights and no mask, "mean" is the peer's "mean"; with weights and a mask,
    "sum" is Σ over unmasked samples of w·ℓ (ℓ the peer's per-sample values) and
    normalizer=7 gives that sum / 7."""
    name, i, j = param
    peer = _peer(name, j)
    require(peer)
    if not {"none", "mean"} <= set(peer.reductions):
        pytest.skip("the peer lacks none or mean")
    d = draw(name, i, rng)
    o = d.options
    per = peer_value(peer, d.arrays, "none", d.raw)
    assert per.shape == d.sample_shape
    ones = np.ones(d.sample_shape)
    np.testing.assert_allclose(d.loss(*d.arrays, weight=ones, **o), peer_value(peer, d.arrays, "mean", d.raw), rtol=max(peer.rtol, 1e-10))
    w = rng.uniform(0.1, 2.0, d.sample_shape)
    mask = rng.random(d.sample_shape) < 0.8
    mask.flat[0] = True
    expected = np.sum(np.where(mask, w * per, 0.0))
    np.testing.assert_allclose(d.loss(*d.arrays, weight=w, mask=mask, reduction="sum", **o), expected, rtol=max(peer.rtol, 1e-10))
    np.testing.assert_allclose(d.loss(*d.arrays, weight=w, mask=mask, normalizer=7.0, **o), expected / 7.0, rtol=max(peer.rtol, 1e-10))


@pytest.mark.parametrize("param", peer_params("test_values_match_the_peer_on_edge_inputs", where=lambda s: s.checks.edges is not None))
def test_values_match_the_peer_on_edge_inputs(param):
    """The declared edge inputs in float64, compared per sample wherever the peer's value is
    finite and the peer is not declared less accurate than losskit."""
    name, i, j = param
    peer = _peer(name, j)
    require(peer)
    if "none" not in peer.reductions:
        pytest.skip("the peer has no per-sample values")
    s = spec(name)
    raw = option_set(name, i)
    arrays = tuple(np.asarray(a) for a in s.checks.edges(raw))
    expected = peer_value(peer, arrays, "none", raw)
    got = np.asarray(lk.registry[name](*arrays, reduction="none", **strip(raw)))
    assert got.shape == expected.shape
    keep = np.isfinite(expected)
    if peer.less_accurate is not None:
        keep &= ~np.asarray(peer.less_accurate(*arrays, **strip(raw)), dtype=bool)
    if not np.isfinite(expected).any():
        pytest.skip("the peer is not finite on any edge input of this option set")
    assert keep.any(), "no edge input to compare"
    np.testing.assert_allclose(got[keep], expected[keep], rtol=peer.rtol, atol=1e-300)
