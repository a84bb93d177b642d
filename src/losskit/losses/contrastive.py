"""Contrastive losses over pairs of embeddings (the embedding axis last): the margin contrastive
loss of Hadsell, Chopra & LeCun, and InfoNCE / CLIP over a batch scored against itself."""

from __future__ import annotations

import numpy as np

from .. import _validate
from .._array import _device, logsumexp, logsumexp_split, nan_where, sigmoid, softplus
from .._loss import CLASS_AXIS, Checks, Option, Peer, declare
from .._spec import peer_reduction
from .embedding import _distance


def _con_parts(x1, x2, y, o, xp):
    u = x1 - x2 + o["eps"]
    d, g_d = _distance(u, 2.0, xp)
    gap = o["margin"] - d
    hinge = xp.maximum(gap, xp.zeros_like(gap))
    value = 0.5 * y * d * d + 0.5 * (1.0 - y) * hinge * hinge
    # ∂/∂x1 = y u − (1 − y) max(0, m − d) ∇d; ∂/∂x2 = −∂/∂x1
    g = y[..., None] * u - ((1.0 - y) * hinge)[..., None] * g_d
    g = nan_where(value[..., None], g, xp=xp)
    return value, (g, -g)


def _con_value(x1, x2, y, o, xp):
    return _con_parts(x1, x2, y, o, xp)[0]


def _con_grad(x1, x2, y, o, xp):
    return _con_parts(x1, x2, y, o, xp)[1]


def _con_check(x1, x2, y, o, xp, loss, valid):
    if tuple(y.shape) != tuple(x1.shape[:-1]):
        raise ValueError(
            f"{loss}: `similar` must have the shape of `input1` without its embedding axis, "
            f"{tuple(x1.shape[:-1])}, got {tuple(y.shape)}."
        )
    if _validate.is_tracing(y) or 0 in tuple(y.shape):
        return
    bad = ~((y == 0) | (y == 1) | xp.isnan(y))
    if valid is not None:
        bad = bad & valid
    if _validate._any(bad, xp):
        pos = _validate._first_position(bad, xp)
        raise ValueError(f"{loss}: `similar` must hold 0 (dissimilar) or 1 (similar), got {float(y[pos])} at similar{list(pos)}.")


def _con_sample(rng, shape, o):
    x1 = rng.standard_normal(shape)
    return x1, x1 + 0.5 * rng.standard_normal(shape), np.where(rng.random(shape[:-1]) < 0.5, 0.0, 1.0)


def _con_kinks(x1, x2, y, margin=1.0, eps=1e-6):
    d = np.linalg.norm(x1 - x2 + eps, axis=-1)
    return np.broadcast_to(((np.abs(d - margin) < 2e-2) | (d < 2e-2))[..., None], x1.shape)


def _torch_contrastive(x1, x2, y, reduction, margin=1.0, eps=1e-6):
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor
    d = F.pairwise_distance(t(x1), t(x2), p=2.0, eps=eps)
    yy = t(y)
    per = (0.5 * yy * d**2 + 0.5 * (1 - yy) * torch.clamp(margin - d, min=0) ** 2).numpy()
    return peer_reduction(per, reduction)


contrastive = declare(
    name="contrastive",
    family="contrastive",
    kind=CLASS_AXIS,
    title="Contrastive (margin) loss of embedding pairs.",
    formula=r"\ell(x_1, x_2, y) = \tfrac12\,y\,d^2 + \tfrac12\,(1 - y)\max(0,\ m - d)^2,\ d = \lVert x_1 - x_2 + \epsilon \rVert_2",
    gradient=r"\partial_{x_1} \ell = y\,u - (1 - y)\max(0, m - d)\,\frac{u}{d},\ u = x_1 - x_2 + \epsilon,\ \partial_{x_2} \ell = -\partial_{x_1} \ell",
    hessian=r"\text{not provided}",
    hessian_kind="none",
    domain="input1, input2: real arrays of one shape, the embedding axis last; similar in {0, 1} with the shape without it; margin >= 0",
    reference='Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an Invariant Mapping", CVPR 2006',
    use_when="Siamese networks: pull similar pairs together, push dissimilar pairs at least a margin apart.",
    details="""
        ``similar`` is 1 for a similar pair and 0 otherwise (an error for other values);
        ``weight`` / ``mask`` are per pair. The distance follows torch's
        ``pairwise_distance`` rule (ε added to the difference), and its gradient u/d is taken
        as 0 at d = 0, so coincident dissimilar embeddings get a zero (sub)gradient.
        Equals the formula written with ``torch.nn.functional.pairwise_distance``.
        pytorch-metric-learning's ``ContrastiveLoss`` differs: no ½, unsquared hinges
        ``max(0, d − pos_margin)`` and ``max(0, neg_margin − d)``, and a mean over the pairs
        with non-zero loss. ``.grad`` returns ``(d_input1, d_input2)``.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> x1, x2 = np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([[0.6, 0.8], [0.3, 0.4]])
        >>> [round(v, 6) for v in lk.contrastive(x1, x2, np.array([1.0, 0.0]), eps=0.0, reduction="none").tolist()]
        [0.5, 0.125]
    """,
    value=_con_value,
    grad=_con_grad,
    check_values=_con_check,
    inputs=("input1", "input2"),
    target="similar",
    options={
        "margin": Option(1.0, "number", low=0.0, doc="the margin m for dissimilar pairs"),
        "eps": Option(1e-6, "number", low=0.0, doc="added to the difference before the norm"),
    },
    checks=Checks(
        sample=_con_sample,
        option_sets=({}, {"margin": 2.0}, {"margin": 0.5, "eps": 0.0}),
        edges=lambda o: (np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, -2.0]]), np.array([[-1e4, 1e4, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, -2.0]]), np.array([0.0, 0.0, 1.0])),
        kinks=_con_kinks,
        peers=(Peer("the formula with torch.nn.functional.pairwise_distance", _torch_contrastive, requires="torch", options=("margin", "eps")),),
    ),
)


# --- InfoNCE / CLIP: cross-entropy of q kᵀ / τ with the diagonal as the positives --------------


# Above _CHUNK_ROWS queries the similarity matrix is never held whole: it is recomputed in
# blocks of _BLOCK_ROWS query rows (memory O(N · block) instead of O(N²), the idea of the
# fused linear cross-entropy; benchmarks/info_nce.py measures it).
_CHUNK_ROWS = 4096
_BLOCK_ROWS = 1024


def _nce_kernel(q, k, o, xp):
    """Per-query values and the vjp (the samples are coupled: every key is in every row)."""
    tau, neg = o["temperature"], o["negatives"]
    n = int(q.shape[0])
    if n > _CHUNK_ROWS:
        return _nce_chunked(q, k, o, xp, _BLOCK_ROWS)
    s = (q @ k.T) / tau
    diag = xp.sum(q * k, axis=-1) / tau
    logits = s if neg is None else xp.concat([s, (q @ xp.astype(neg, q.dtype).T) / tau], axis=1)
    # LSE − s_ii as (max − s_ii) + log1p(rest): the tiny loss of a confident match keeps its digits
    m, r = logsumexp_split(logits, xp=xp)
    lse = m + r
    value = (m - diag) + r
    col_lse = None
    if o["symmetric"]:
        mc, rc = logsumexp_split(s.T, xp=xp)
        col_lse = mc + rc
        value = 0.5 * (value + ((mc - diag) + rc))

    off = ~xp.eye(n, dtype=xp.bool, device=_device(q))

    def vjp(u):
        # ∂(Σ u_i row_i)/∂s_ij = u_i (P_ij − δ_ij) with 1 − P_ii = Σ_{j≠i} P_ij: written over the
        # off-diagonal entries, Σ_j u_i P_ij (k_j − k_i), with no cancellation when P_ii ≈ 1
        if col_lse is not None:
            u = 0.5 * u
        p = xp.exp(logits - lse[:, None]) * u[:, None]
        a = xp.where(off, p[:, :n], xp.zeros_like(s))
        rest = xp.sum(p[:, n:], axis=1) if neg is not None else None
        g_q = a @ k - xp.sum(a, axis=1)[:, None] * k
        g_k = a.T @ q - xp.sum(a, axis=1)[:, None] * q
        if neg is not None:
            g_q = g_q + p[:, n:] @ xp.astype(neg, q.dtype) - rest[:, None] * k
            g_k = g_k - rest[:, None] * q
        if col_lse is not None:  # the key -> query direction: softmax down each column
            c = xp.where(off, xp.exp(s - col_lse[None, :]) * u[None, :], xp.zeros_like(s))
            g_q = g_q + c @ k - xp.sum(c, axis=0)[:, None] * k
            g_k = g_k + c.T @ q - xp.sum(c, axis=0)[:, None] * q
        return g_q / tau, g_k / tau

    return value, vjp


def _nce_chunked(q, k, o, xp, block):
    """``_nce_kernel`` with the N × (N + M) logits recomputed block by block of query rows: the
    row LSEs (and for ``symmetric`` the column LSEs, max first, then the rest) in the forward
    passes, the gradients accumulated block by block in the vjp. The same formulas."""
    tau, neg = o["temperature"], o["negatives"]
    n = int(q.shape[0])
    negs = None if neg is None else xp.astype(neg, q.dtype)
    dev = _device(q)
    blocks = [(r0, min(r0 + block, n)) for r0 in range(0, n, block)]
    cols = xp.arange(n, device=dev)
    diag = xp.sum(q * k, axis=-1) / tau

    def logits(r0, r1):
        s_b = (q[r0:r1, :] @ k.T) / tau
        return s_b if negs is None else xp.concat([s_b, (q[r0:r1, :] @ negs.T) / tau], axis=1)

    ms, rs, col_max = [], [], None
    for r0, r1 in blocks:
        lg = logits(r0, r1)
        m_b, r_b = logsumexp_split(lg, xp=xp)
        ms.append(m_b)
        rs.append(r_b)
        if o["symmetric"]:
            b_max = xp.max(lg, axis=0)
            col_max = b_max if col_max is None else xp.maximum(col_max, b_max)
    m, r = xp.concat(ms), xp.concat(rs)
    lse = m + r
    value = (m - diag) + r
    col_lse = None
    if o["symmetric"]:
        # logsumexp_split down the columns: Σ e^{s − max} over the entries below the max, ties
        shift = xp.where(xp.isfinite(col_max), col_max, xp.zeros_like(col_max))
        rest = xp.zeros_like(col_max)
        for r0, r1 in blocks:
            s_b = logits(r0, r1)
            below = s_b < col_max[None, :]
            rest = rest + xp.sum(xp.where(below, xp.exp(s_b - shift[None, :]), xp.zeros_like(s_b)), axis=0) + xp.sum(xp.astype(~below, s_b.dtype), axis=0)
        rc = xp.log1p(rest - 1.0)
        col_lse = col_max + rc
        value = 0.5 * (value + ((col_max - diag) + rc))

    def vjp(u):
        if col_lse is not None:
            u = 0.5 * u
        g_q_parts, row_sums, neg_sums = [], [], []
        g_k = xp.zeros_like(k)
        col_sums = xp.zeros_like(diag)
        for r0, r1 in blocks:
            lg = logits(r0, r1)
            off = xp.arange(r0, r1, device=dev)[:, None] != cols[None, :]
            u_b = u[r0:r1]
            p = xp.exp(lg - lse[r0:r1, None]) * u_b[:, None]
            a = xp.where(off, p[:, :n], xp.zeros_like(p[:, :n]))
            row = xp.sum(a, axis=1)
            g_q_b = a @ k - row[:, None] * k[r0:r1, :]
            g_k = g_k + a.T @ q[r0:r1, :]
            row_sums.append(row)
            if negs is not None:
                extra = xp.sum(p[:, n:], axis=1)
                g_q_b = g_q_b + p[:, n:] @ negs - extra[:, None] * k[r0:r1, :]
                neg_sums.append(extra)
            if col_lse is not None:
                c = xp.where(off, xp.exp(lg - col_lse[None, :]) * u[None, :], xp.zeros_like(lg))
                g_q_b = g_q_b + c @ k
                g_k = g_k + c.T @ q[r0:r1, :]
                col_sums = col_sums + xp.sum(c, axis=0)
            g_q_parts.append(g_q_b)
        g_q = xp.concat(g_q_parts, axis=0)
        g_k = g_k - xp.concat(row_sums)[:, None] * q
        if negs is not None:
            g_k = g_k - xp.concat(neg_sums)[:, None] * q
        if col_lse is not None:
            g_q = g_q - col_sums[:, None] * k
            g_k = g_k - col_sums[:, None] * q
        return g_q / tau, g_k / tau

    return value, vjp


def _nce_value(q, k, o, xp):
    return _nce_kernel(q, k, o, xp)[0]


def _nce_grad(q, k, o, xp):
    return _nce_kernel(q, k, o, xp)[1](xp.ones_like(q[:, 0]))


def _nce_check(q, k, o, xp, loss, valid):
    if q.ndim != 2:
        raise ValueError(f"{loss}: `query` and `key` must be (N, d) arrays (a batch of embeddings), got shape {tuple(q.shape)}.")
    neg = o["negatives"]
    if neg is not None:
        if o["symmetric"]:
            raise ValueError(f"{loss}: `negatives` apply to the query -> key direction only; they cannot be combined with symmetric=True.")
        if neg.ndim != 2 or int(neg.shape[1]) != int(q.shape[1]):
            raise ValueError(f"{loss}: `negatives` must be an (M, {int(q.shape[1])}) array (the embedding size of `query`), got shape {tuple(neg.shape)}.")


def _nce_sample(rng, shape, o):
    q = rng.standard_normal(shape) / np.sqrt(shape[-1])
    return q, q + 0.3 * rng.standard_normal(shape) / np.sqrt(shape[-1])


def _nce_edges(o):
    """Embeddings ±1e4 (similarities ~1e9 / τ: a row certain of its match, a row certain of a
    wrong key), a zero query (uniform row) and a zero key, next to an ordinary pair."""
    q = np.array([[1e4, -1e4, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.5, -1.0, 2.0, 0.25], [-1e4, 1e4, 1e4, 0.0]])
    k = np.array([[1e4, -1e4, 0.0, 0.0], [0.3, 0.1, -0.2, 0.0], [0.0, 0.0, 0.0, 0.0], [1e4, -1e4, 0.0, 1e4]])
    return q, k


def _torch_info_nce(q, k, reduction, temperature=0.07, symmetric=False, negatives=None):
    import torch
    import torch.nn.functional as F

    q, k = torch.as_tensor(q), torch.as_tensor(k)
    s = q @ k.T / temperature
    ids = torch.arange(q.shape[0])
    if negatives is not None:
        return F.cross_entropy(torch.cat([s, q @ torch.as_tensor(negatives).T / temperature], dim=1), ids, reduction=reduction).numpy()
    out = F.cross_entropy(s, ids, reduction=reduction)
    if symmetric:  # the CLIP paper's pseudocode: (loss_i + loss_t) / 2
        out = (out + F.cross_entropy(s.T, ids, reduction=reduction)) / 2
    return out.numpy()


info_nce = declare(
    name="info_nce",
    family="contrastive",
    kind=CLASS_AXIS,
    title="InfoNCE (CLIP with symmetric=True): cross-entropy of query-key similarities, the matching key the positive.",
    formula=r"\ell_i = -\log \frac{e^{q_i \cdot k_i / \tau}}{\sum_j e^{q_i \cdot k_j / \tau} + \sum_m e^{q_i \cdot n_m / \tau}}",
    gradient=r"\partial_{q_i} \textstyle\sum_r u_r \ell_r = \frac{1}{\tau}\big(\sum_j u_i P_{ij} k_j + \sum_m u_i P_{im} n_m - u_i k_i\big),\ \partial_{k_j} \textstyle\sum_r u_r \ell_r = \frac{1}{\tau}\big(\sum_i u_i P_{ij} q_i - u_j q_j\big),\ P = \mathrm{softmax}_\text{row}",
    hessian=r"\text{not provided}",
    hessian_kind="none",
    domain="query, key: real (N, d) arrays, row i of key the positive of row i of query; temperature > 0; negatives: (M, d) or None",
    reference='van den Oord, Li & Vinyals, "Representation Learning with Contrastive Predictive Coding", 2018; Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (CLIP), ICML 2021',
    use_when="Contrastive representation learning with in-batch negatives (SimCLR-style pairs, CLIP image-text pairs, dense retrieval).",
    details="""
        One value per query row: the cross-entropy of row i of ``query @ key.T / temperature``
        (with ``negatives``: ``[query @ key.T, query @ negatives.T] / temperature``, extra
        negatives shared by the batch) with class i. ``symmetric=True`` is the CLIP loss:
        the mean of the query -> key and key -> query directions, ½(row_i + column_i)
        (``negatives`` cannot be combined with it). The rows are coupled (every key is in
        every row), so the kernel returns the values and a closed-form vector-Jacobian product:
        ``weight`` / ``mask`` weigh query rows (pairs), and the gradients of both inputs are
        exact for any weights. The log-sum-exp is stable at small temperatures; half-precision
        inputs are computed in float32. Up to 4096 queries the N × (N + M) similarity matrix
        is materialised; above, it is recomputed in blocks of 1024 query rows (forward and
        gradient), so memory grows as N · 1024, not N².
        Equals ``F.cross_entropy(q @ k.T / τ, arange(N))`` in torch (and the CLIP paper's
        pseudocode for ``symmetric=True``). ``.grad`` returns ``(d_query, d_key)``; gradients
        of ``negatives`` (an array option) come from framework autodiff.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> q = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> round(float(lk.info_nce(q, q, temperature=1.0)), 6)
        0.313262
        >>> [g.round(6).tolist() for g in lk.info_nce.grad(q, q, temperature=1.0)]
        [[[-0.134471, 0.134471], [0.134471, -0.134471]], [[-0.134471, 0.134471], [0.134471, -0.134471]]]
    """,
    vjp_kernel=_nce_kernel,
    value=_nce_value,
    grad=_nce_grad,
    check_values=_nce_check,
    inputs=("query", "key"),
    target=None,
    options={
        "temperature": Option(0.07, "number", low=0.0, low_open=True, doc="the temperature τ"),
        "symmetric": Option(False, "bool", doc="CLIP: the mean of the query -> key and key -> query losses"),
        "negatives": Option(None, "array", doc="(M, d) extra negative keys shared by every query"),
    },
    checks=Checks(
        sample=_nce_sample,
        option_sets=({}, {"temperature": 0.5}, {"symmetric": True, "temperature": 0.2}, {"temperature": 0.3, "negatives": np.linspace(-1.0, 1.0, 12).reshape(3, 4)}),
        edges=_nce_edges,
        peers=(Peer("F.cross_entropy(q @ k.T / τ, arange(N)) (torch)", _torch_info_nce, requires="torch", options=("temperature", "symmetric", "negatives")),),
    ),
)


# --- NT-Xent (SimCLR) with positives given by equal labels -----------------------------------


def _ntx_kernel(e, labels, o, xp):
    """Per-embedding values (the mean over its positives) and the vjp. For a positive pair
    (i, j): softplus(log Z_i − s_ij), Z_i = Σ_{k: other label} e^{s_ik}, s the cosine similarity
    over τ (optax's norm floor: sqrt(max(‖e‖², eps)))."""
    tau = o["temperature"]
    n = int(e.shape[0])
    eps = float(xp.finfo(e.dtype).eps)
    sq = xp.sum(e * e, axis=-1)
    floored = sq <= eps
    r = xp.sqrt(xp.where(floored, xp.full_like(sq, eps), sq))
    unit = e / r[:, None]
    s = (unit @ unit.T) / tau
    same = labels[:, None] == labels[None, :]
    pos = same & ~xp.eye(n, dtype=xp.bool, device=_device(e))
    neg = ~same
    ninf = xp.full_like(s, -float("inf"))
    log_z = logsumexp(xp.where(neg, s, ninf), axis=1, xp=xp)
    zero = xp.zeros_like(s)
    t = log_z[:, None] - s
    n_pos = xp.sum(xp.astype(pos, e.dtype), axis=1)
    inv = xp.where(n_pos > 0, 1.0 / xp.where(n_pos > 0, n_pos, xp.ones_like(n_pos)), xp.zeros_like(n_pos))
    value = xp.sum(xp.where(pos, softplus(t, xp=xp), zero), axis=1) * inv

    def vjp(u):
        w = u * inv
        sig = xp.where(pos, sigmoid(t, xp=xp), zero)  # 1 − p_ij on the positives
        safe_z = xp.where(xp.isfinite(log_z), log_z, xp.zeros_like(log_z))
        q = xp.where(neg, xp.exp(s - safe_z[:, None]), zero)  # softmax over the other labels
        g = w[:, None] * (q * xp.sum(sig, axis=1)[:, None] - sig)  # ∂(Σ u_i ℓ_i)/∂s
        d_unit = ((g + g.T) @ unit) / tau
        radial = xp.sum(unit * d_unit, axis=-1)
        d_e = xp.where(floored[:, None], d_unit, d_unit - unit * radial[:, None]) / r[:, None]
        return (d_e,)

    return value, vjp


def _ntx_value(e, labels, o, xp):
    return _ntx_kernel(e, labels, o, xp)[0]


def _ntx_grad(e, labels, o, xp):
    return _ntx_kernel(e, labels, o, xp)[1](xp.ones_like(e[:, 0]))


def _ntx_check(e, labels, o, xp, loss, valid):
    if e.ndim != 2:
        raise ValueError(f"{loss}: `embeddings` must be an (N, d) array, got shape {tuple(e.shape)}.")
    if tuple(labels.shape) != (int(e.shape[0]),):
        raise ValueError(f"{loss}: `labels` must have shape ({int(e.shape[0])},) (one label per embedding), got {tuple(labels.shape)}.")


def _ntx_sample(rng, shape, o):
    n = shape[0]
    return rng.standard_normal(shape), np.arange(n) // 2  # SimCLR: two views per example


def _ntx_edges(o):
    """Entries ±1e4 (cosines exactly ±1), a zero embedding (the norm floor), a pair pointing in
    opposite directions, an embedding without positives (a label of its own)."""
    e = np.array([[1e4, -1e4, 0.0], [1e4, -1e4, 1e-3], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [-1e4, 0.0, 1e4], [1e4, 0.0, -1e4], [0.5, 0.5, 0.5]])
    return e, np.array([0, 0, 1, 1, 2, 2, 3])


def _optax_ntxent(e, labels, reduction, temperature=0.07):
    import jax.numpy as jnp
    import optax

    total = float(optax.ntxent(jnp.asarray(e), jnp.asarray(labels), temperature=temperature))
    return {"mean": np.asarray(total), "sum": np.asarray(total * e.shape[0])}[reduction]


ntxent = declare(
    name="ntxent",
    family="contrastive",
    kind=CLASS_AXIS,
    title="NT-Xent (SimCLR) over a batch of embeddings, positives given by equal labels.",
    formula=r"\ell_i = \frac{1}{|P_i|}\sum_{j \in P_i} \log\Big(1 + \frac{\sum_{k \in N_i} e^{s_{ik}}}{e^{s_{ij}}}\Big),\ s_{ij} = \frac{\hat e_i \cdot \hat e_j}{\tau},\ P_i = \{j \ne i: y_j = y_i\},\ N_i = \{k: y_k \ne y_i\}",
    gradient=r"\partial_{s_{ij}} \textstyle\sum_r u_r \ell_r = \frac{u_i}{|P_i|}\big(q_{ij} \sum_{l \in P_i} \sigma_{il} - \sigma_{ij}\big),\ \sigma_{ij} = \sigma(\log Z_i - s_{ij}),\ q_{ik} = e^{s_{ik}} / Z_i\ (k \in N_i),\ \text{then through } s = \hat E \hat E^\top/\tau \text{ and } \hat e = e / \lVert e \rVert",
    hessian=r"\text{not provided}",
    hessian_kind="none",
    domain="embeddings: a real (N, d) array; labels: (N,) integers (equal labels are positives); temperature > 0",
    reference='Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual Representations" (SimCLR), ICML 2020; Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss Objective", NeurIPS 2016',
    use_when="Self-supervised contrastive learning (two augmented views share a label) or supervised contrastive learning with class labels.",
    details="""
        As ``optax.ntxent``: cosine similarities over τ (norm floor sqrt(max(‖e‖², eps))), and
        each positive pair (i, j) is scored against the other-label embeddings only (the other
        positives are not in its denominator). One value per embedding: the mean over its
        positives, so ``weight`` / ``mask`` are per embedding and an embedding without
        positives contributes 0. ``"mean"`` averages over embeddings; optax averages over
        positive pairs, the same when every embedding has as many positives (SimCLR pairs);
        ``"sum"`` is N times that mean there. The rows are coupled, so the gradient is a
        closed-form vector-Jacobian product, exact for any weights.
    """,
    example="""
        >>> import numpy as np, losskit as lk
        >>> e = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
        >>> round(float(lk.ntxent(e, np.array([0, 0, 1, 1]), temperature=1.0)), 6)
        0.597808
    """,
    vjp_kernel=_ntx_kernel,
    value=_ntx_value,
    grad=_ntx_grad,
    check_values=_ntx_check,
    inputs=("embeddings",),
    target="labels",
    options={"temperature": Option(0.07, "number", low=0.0, low_open=True, doc="the temperature τ")},
    checks=Checks(
        sample=_ntx_sample,
        option_sets=({}, {"temperature": 0.5}),
        edges=_ntx_edges,
        peers=(Peer("optax.ntxent", _optax_ntxent, requires="optax", options=("temperature",), reductions=("mean", "sum")),),
    ),
)
