"""SSR stage (i): split a graph signal into M frequency bands of the user-item graph (docs/ssr.md, "Stage (i)").

Notation (docs/ssr.md): Â = D^-1/2 A D^-1/2 (N x N, no self loops, isolated nodes have all-zero rows),
L = I - Â with eigen-pairs (λ_k, u_k), λ_k in [0, 2]; the signal X is [N, D]; the GFT is C = Uᵀ X and the energy
of mode k is e_k = Σ_f C_kf². Every method returns a tensor ``[M, N, D]`` whose bands sum to X: the last band is
always the residual X - Σ_{m<M-1} band_m, so the sum is exact up to float rounding.

Methods (config ``band_method``):

``eigen``
    The paper's equal-energy GFT bands, exactly as the reference's small-graph path: a dense ``eigh`` of L,
    computed once per graph (and dtype/device) and cached; modes sorted by λ; border j is the number of modes
    whose cumulative energy share is < j/M (the mode where the share crosses j/M opens band j); band m =
    U_m U_mᵀ X. Each band then carries 1/M of the energy to within one mode's energy. Refuses (ValueError)
    above ``eigen_max_nodes`` nodes: it needs several dense N x N matrices.

``chebyshev``
    The scalable equal-energy bands (our addition; docs/ssr.md "Stage (i)"). Let L̃ = L - I = -Â
    (spectrum in [-1, 1]) and μ_k = Σ_f x_fᵀ T_k(L̃) x_f = ∫ T_k(λ-1) dE(λ) the Chebyshev moments of the
    signal's spectral energy distribution E(λ) = Σ_k e_k δ(λ - λ_k). The kernel-polynomial method (Jackson
    damping g_k) turns μ_0..μ_K into a smoothed energy CDF

        F(a) = Σ_{k=0..K} g_k s_k(a) μ_k / μ_0,  s_0(a) = (π - θ)/π,  s_k(a) = -2 sin(kθ)/(kπ),  θ = arccos a,

    where s_k(a) are the Chebyshev coefficients of the step 1{x < a}. Band edges a_j (λ_j = 1 + a_j) solve
    F(a_j) = j/M. The filters are the same Jackson-damped steps, G_j(x) = Σ_k g_k s_k(a_j) T_k(x), and the bands
    are h_m = G_{m+1} - G_m with G_0 = 0, G_M = 1: a partition of unity (Σ_m h_m = 1), each h_m in [0, 1]
    (the Jackson kernel is positive). Because F is exactly the energy the low-pass G_j keeps,
    ⟨X, h_m(L) X⟩ = F(a_{m+1}) - F(a_m) = 1/M: the bands are equal-energy in the projection sense *exactly*
    (up to the float32 moments), with smooth transitions of width ~π/(K+2) in arccos(λ - 1).
    Against exact ``eigen`` bands (benchmarks/spectral_scaling.md, N = 4000, D = 192): edges within 0.008 in λ
    at K = 32, and a fraction ≈ 1.55(M-1)/K of the energy is assigned differently (the soft transitions; 9.5%
    for M = 3 at K = 32, 4.9% at K = 64). A point mass of energy at one eigenvalue is split between two bands in
    proportion to the responses, never mode by mode. This matters at λ = 1, whose multiplicity is
    >= |#users - #items| (null space of Â): with Amazon-Baby's user:item ratio (2.75) a random graph of 2000 nodes
    has 47% of its modes and 39% of a smooth signal's energy there, an M = 3 edge falls on it, and ``eigen``
    splits that eigenspace by mode order, i.e. by whatever basis ``eigh`` returns (not a function of L); the
    bands then differ from ``chebyshev``'s by ~22-29% of the energy whatever K.
    Cost: ⌈K/2⌉ sparse products for the moments (μ_{2j} = 2⟨T_j X, T_j X⟩ - μ_0 and
    μ_{2j+1} = 2⟨T_{j+1} X, T_j X⟩ - μ_1) plus K for the filters, each O(nnz · D); memory O((M + 3) N D).
    No dense N x N matrix is ever formed; only ``addmm`` with the sparse Â is used. Edges come from the
    detached signal; the filtering is differentiable in X (custom autograd; the backward is a Clenshaw
    recurrence with the same K sparse products).

``reference``
    The authors' fixed Chebyshev bank of L̃ = L - I (their large-graph path; not equal-energy). M = 3:
    low = T_0 - 0.5 T_1 = (I + 0.5Â) X, mid = 0.8 T_2 + 0.3 T_3 = (-0.8I + 0.9Â + 1.6Â² - 1.2Â³) X (orders above 3
    unused whatever ``k_poly``; terms above ``k_poly`` dropped), high = X - low - mid.
    M != 3: band 0 = T_0 - 0.5 T_1; the orders 2..K (K = ``k_poly``) are dealt round-robin to the M - 2 middle
    bands (middle band i gets orders [2..K][i::M-2], despite the reference's comment saying "contiguous") with
    coefficient 0.8 · 0.375^j for the j-th order it receives; the last band is the residual. M = 2 gives
    [low, X - low]; middle bands left without an order (K - 1 < M - 2) are zero.

``auto``
    ``eigen`` when N <= ``eigen_max_nodes``, else ``chebyshev``.

Edge caching (config ``band_refresh_every``, ``band_track_edges``): the edges are estimated exactly from the
current signal every ``refresh_every`` calls (1 = every call, the default; 0 = only on the first call). On the
other calls, with ``track_edges`` (default) the edges are re-solved from the moments that the previous call's
filtering pass measured for free (⌈K/2⌉ extra dot products, no sparse product), i.e. they lag the signal by one
call; without it they stay frozen. So a ``chebyshev`` call costs 1.5·K sparse products on a refresh and K
otherwise. (``eigen`` gets the energies free with the GFT: with ``track_edges`` its borders always follow the
current signal.) With an ``edge_signal`` the free moments are not those of the edge signal: the edges stay frozen
between refreshes. :meth:`SpectralBandDecomposer.refresh` forces an exact estimate on the next call (e.g. before
an evaluation).

Energy shares (diagnostics, :func:`band_energy_shares`): the default ``'projection'`` share of band m is
⟨X, band_m⟩ / ‖X‖² = Σ_k h_m(λ_k) e_k / Σ_k e_k, the exact GFT energy the band's filter response assigns to it;
for ``eigen`` it is exactly the GFT energy of the band's modes, the shares always sum to 1 (the bands sum to X),
and for the ``reference`` bank they can be negative (its responses change sign).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

__all__ = [
    "SpectralBandDecomposer",
    "band_energy_shares",
    "reference_coefficients",
    "equal_energy_edges",
    "jackson_damping",
    "step_coefficients",
    "chebyshev_moments",
    "BAND_METHODS",
]

BAND_METHODS = ("auto", "eigen", "chebyshev", "reference")


# ----------------------------------------------------------------------------------------------------------------
# Chebyshev / KPM helpers (numpy float64; tiny arrays of K + 1 numbers)
# ----------------------------------------------------------------------------------------------------------------
def jackson_damping(order):
    """Jackson kernel factors g_0..g_K for a Chebyshev series of degree K = ``order`` (g_0 = 1, positive kernel)."""
    n = order + 1
    k = np.arange(n, dtype=np.float64)
    q = math.pi / (n + 1)
    return ((n - k + 1) * np.cos(q * k) + np.sin(q * k) / math.tan(q)) / (n + 1)


def step_coefficients(a, order):
    """Undamped Chebyshev coefficients of the step 1{x < a} on [-1, 1], degree ``order``; ``a`` scalar or [J]."""
    theta = np.arccos(np.clip(np.asarray(a, dtype=np.float64), -1.0, 1.0))[..., None]
    k = np.arange(1, order + 1, dtype=np.float64)
    rest = -2.0 * np.sin(k * theta) / (k * math.pi)
    return np.concatenate([(math.pi - theta) / math.pi, rest], axis=-1)


def _soft_cdf(theta, mu, damp):
    """KPM energy CDF F(cos θ) (see module doc) for an array of θ; ``mu`` normalised so mu[0] = 1."""
    order = len(mu) - 1
    k = np.arange(1, order + 1, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)[..., None]
    terms = -2.0 * np.sin(k * theta) / (k * math.pi) * (damp[1:] * mu[1:])
    return (math.pi - theta[..., 0]) / math.pi * damp[0] * mu[0] + terms.sum(-1)


def equal_energy_edges(moments, num_bands, iters=60):
    """Edges a_1 < ... < a_{M-1} in x = λ - 1 with F(a_j) = j/M (bisection on θ; F is monotone).

    ``moments`` are μ_0..μ_K (any scale). Returns a float64 array of M - 1 edges; a zero signal (μ_0 <= 0) gets
    the edges of a flat spectrum, λ_j = 2j/M.
    """
    mu = np.asarray(moments, dtype=np.float64)
    targets = np.arange(1, num_bands, dtype=np.float64) / num_bands
    if num_bands <= 1:
        return np.zeros(0)
    if not mu[0] > 0:
        return 2.0 * targets - 1.0
    mu = mu / mu[0]
    damp = jackson_damping(len(mu) - 1)
    lo = np.zeros_like(targets)  # θ = 0  -> F = 1
    hi = np.full_like(targets, math.pi)  # θ = π -> F = 0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        above = _soft_cdf(mid, mu, damp) > targets  # F decreases with θ: root lies at larger θ
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return np.cos(0.5 * (lo + hi))


def _band_coefficients_from_edges(edges, order):
    """[M-1, K+1] Chebyshev coefficients (in L̃) of h_m = G_{m+1} - G_m, m < M-1 (last band = residual)."""
    damp = jackson_damping(order)
    steps = step_coefficients(edges, order) * damp  # [M-1, K+1], G_1..G_{M-1}
    previous = np.vstack([np.zeros((1, order + 1)), steps[:-1]])
    return steps - previous


def reference_coefficients(num_bands, k_poly=5):
    """The reference's fixed bank as [M-1, k_poly+1] Chebyshev coefficients in L̃ = L - I (see module doc)."""
    m, k = int(num_bands), int(k_poly)
    if m < 1 or k < 0:
        raise ValueError(f"need num_bands >= 1 and k_poly >= 0, got {num_bands}, {k_poly}")
    coeffs = np.zeros((max(m - 1, 0), k + 1))
    if m == 1:
        return coeffs
    coeffs[0, 0] = 1.0
    if k >= 1:
        coeffs[0, 1] = -0.5
    if m == 3:
        if k >= 2:
            coeffs[1, 2] = 0.8
        if k >= 3:
            coeffs[1, 3] = 0.3
        return coeffs
    num_mid = m - 2
    orders = list(range(2, k + 1))
    for i in range(num_mid):
        for j, order in enumerate(orders[i::num_mid]):
            coeffs[1 + i, order] = 0.8 * 0.375 ** j
    return coeffs


# ----------------------------------------------------------------------------------------------------------------
# Sparse kernels
# ----------------------------------------------------------------------------------------------------------------
_ALIAS_OK = {}


def _alias_ok(adj):
    """Whether ``torch.addmm(y, adj, x, out=y)`` (in-place recurrence step) is exact on this layout/device.

    Checked once per (layout, device type) on a 3-node example; otherwise a fresh buffer is used per step.
    """
    key = (adj.layout, adj.device.type)
    if key not in _ALIAS_OK:
        dense = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 2.0], [0.0, 2.0, 0.0]], device=adj.device)
        small = dense.to_sparse_csr() if adj.layout == torch.sparse_csr else dense.to_sparse()
        x = torch.arange(6.0, device=adj.device).reshape(3, 2)
        y = torch.ones(3, 2, device=adj.device)
        expected = -y - 2.0 * (dense @ x)
        try:
            torch.addmm(y, small, x, beta=-1.0, alpha=-2.0, out=y)
            _ALIAS_OK[key] = bool(torch.allclose(y, expected))
        except RuntimeError:
            _ALIAS_OK[key] = False
    return _ALIAS_OK[key]


def _recur(adj, cur, prev, alpha=-2.0):
    """prev <- alpha·Â·cur - prev (in place when safe); with L̃ = -Â, alpha = -2 gives 2 L̃ cur - prev."""
    if _alias_ok(adj):
        return torch.addmm(prev, adj, cur, beta=-1.0, alpha=alpha, out=prev)
    return torch.sparse.addmm(prev, adj, cur, beta=-1.0, alpha=alpha)


def _first(adj, x):
    """T_1(L̃) x = -Â x."""
    return torch.sparse.addmm(x, adj, x, beta=0.0, alpha=-1.0)


def _dot(a, b):
    """Float64 sum of a·b over all entries, accumulated in blocks (float32 operands stay float32)."""
    a, b = a.reshape(-1), b.reshape(-1)
    block = 1 << 22
    if a.numel() <= block:
        return float(torch.dot(a, b))
    return float(sum(float(torch.dot(a[i:i + block], b[i:i + block])) for i in range(0, a.numel(), block)))


def _column_chunks(width, col_chunk):
    step = width if not col_chunk or col_chunk >= width else int(col_chunk)
    return [slice(s, min(s + step, width)) for s in range(0, width, step)]


def _moment_update(mu, j, cur, prev, mu0, mu1):
    """Doubling identities: add μ_{2j-1} = 2⟨T_j x, T_{j-1} x⟩ - μ_1 (j > 1) and μ_{2j} = 2⟨T_j x, T_j x⟩ - μ_0
    (those within ``len(mu) - 1``) of one column chunk to ``mu``; ``cur`` = T_j x, ``prev`` = T_{j-1} x."""
    order = len(mu) - 1
    if 1 < j and 2 * j - 1 <= order:
        mu[2 * j - 1] += 2.0 * _dot(cur, prev) - mu1
    if 2 * j <= order:
        mu[2 * j] += 2.0 * _dot(cur, cur) - mu0


def _next(adj, cur, prev, x0):
    """T_{k+1} x = 2 L̃ T_k x - T_{k-1} x, overwriting the T_{k-1} buffer unless it is the caller's x."""
    if prev is x0:
        return torch.sparse.addmm(prev, adj, cur, beta=-1.0, alpha=-2.0)
    return _recur(adj, cur, prev)


@torch.no_grad()
def chebyshev_moments(adj, x, order, col_chunk=None):
    """μ_0..μ_order with μ_k = Σ_f x_fᵀ T_k(-Â) x_f, using ⌈order/2⌉ sparse products (doubling identities).

    ``adj`` is Â (sparse CSR/COO, same device/dtype as ``x``); returns a float64 numpy array.
    """
    mu = np.zeros(order + 1)
    half = (order + 1) // 2
    for cols in _column_chunks(x.shape[1], col_chunk):
        x0 = x[:, cols].contiguous()
        mu0 = _dot(x0, x0)
        mu[0] += mu0
        if order == 0:
            continue
        prev, cur = x0, _first(adj, x0)
        mu1 = _dot(x0, cur)
        mu[1] += mu1
        for j in range(1, half + 1):  # cur = T_j x, prev = T_{j-1} x
            _moment_update(mu, j, cur, prev, mu0, mu1)
            if j < half:
                prev, cur = cur, _next(adj, cur, prev, x0)
    return mu


def _apply_bank(adj, x, coeffs, out, col_chunk, moments=None):
    """out[m] = Σ_k coeffs[m, k] T_k(L̃) x for m < M-1 and out[M-1] = x - Σ_m out[m] (no autograd).

    If ``moments`` (float64 array, length <= 2K+1) is given, the signal's Chebyshev moments are accumulated into
    it along the way (a few dot products, no extra sparse product).
    """
    n_filt, order = coeffs.shape[0], coeffs.shape[1] - 1
    for cols in _column_chunks(x.shape[1], col_chunk):
        x0 = x[:, cols].contiguous()
        acc = [out[m, :, cols] for m in range(n_filt)]
        for m in range(n_filt):
            acc[m].copy_(x0).mul_(coeffs[m, 0])
        if moments is not None:
            mu0 = _dot(x0, x0)
            moments[0] += mu0
        if order >= 1:
            prev, cur = x0, _first(adj, x0)
            if moments is not None and len(moments) > 1:
                mu1 = _dot(x0, cur)
                moments[1] += mu1
            for k in range(1, order + 1):
                if k > 1:
                    prev, cur = cur, _next(adj, cur, prev, x0)
                if moments is not None and 2 * k - 1 < len(moments):
                    _moment_update(moments, k, cur, prev, mu0, mu1)
                for m in range(n_filt):
                    if coeffs[m, k] != 0.0:
                        acc[m].add_(cur, alpha=coeffs[m, k])
            del prev, cur
        last = out[n_filt, :, cols]
        last.copy_(x0)
        for m in range(n_filt):
            last.sub_(acc[m])
    return out


def _apply_bank_adjoint(adj, grad, coeffs, col_chunk):
    """Gradient w.r.t. x of ``_apply_bank``: g_last + Σ_k T_k(L̃) y_k, y_k = Σ_m c_mk (g_m - g_last) (Clenshaw)."""
    n_filt, order = coeffs.shape[0], coeffs.shape[1] - 1
    totals = coeffs.sum(0)
    g_last_full = grad[n_filt]
    result = torch.empty(g_last_full.shape, dtype=g_last_full.dtype, device=g_last_full.device)

    def add_y(buf, k, g, g_last):
        for m in range(n_filt):
            if coeffs[m, k] != 0.0:
                buf.add_(g[m], alpha=coeffs[m, k])
        if totals[k] != 0.0:
            buf.add_(g_last, alpha=-totals[k])

    for cols in _column_chunks(g_last_full.shape[1], col_chunk):
        g = [grad[m, :, cols] for m in range(n_filt)]
        g_last = g_last_full[:, cols]
        res = result[:, cols]
        res.copy_(g_last)
        add_y(res, 0, g, g_last)  # + y_0
        if order >= 1:
            b1 = torch.zeros_like(g_last, memory_format=torch.contiguous_format)
            add_y(b1, order, g, g_last)  # b_K = y_K
            b2 = torch.zeros_like(b1)  # b_{K+1}
            for k in range(order - 1, 0, -1):  # b_k = y_k + 2 L̃ b_{k+1} - b_{k+2}
                b2 = _recur(adj, b1, b2)
                add_y(b2, k, g, g_last)
                b1, b2 = b2, b1
            # Σ_k T_k y_k = y_0 + L̃ b_1 - b_2
            res.add_(_first(adj, b1)).sub_(b2)
    return result


class _ChebyshevBank(torch.autograd.Function):
    """bands = [h_0(L) x, ..., h_{M-2}(L) x, x - Σ] with h_m = Σ_k coeffs[m, k] T_k(L - I); linear in x."""

    @staticmethod
    def forward(ctx, x, adj, coeffs, col_chunk, moments):
        ctx.adj, ctx.coeffs, ctx.col_chunk = adj, coeffs, col_chunk
        out = torch.empty((coeffs.shape[0] + 1,) + tuple(x.shape), dtype=x.dtype, device=x.device)
        return _apply_bank(adj, x.detach(), coeffs, out, col_chunk, moments)

    @staticmethod
    def backward(ctx, grad):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        return _apply_bank_adjoint(ctx.adj, grad, ctx.coeffs, ctx.col_chunk), None, None, None, None


class Workspace:
    """Reusable scratch buffers: the training-step recursions write into the same memory every step instead of
    allocating (and page-faulting) several N x D tensors per step. One buffer per (name, trailing dims, dtype,
    device), grown when a longer first dimension is asked for (batch row counts vary from step to step) and
    returned as a contiguous view of the requested length, so memory stays bounded by the largest request."""

    def __init__(self):
        self._buffers = {}

    def get(self, name, shape, like):
        key = (name, tuple(shape[1:]), like.dtype, like.device)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape[0] < shape[0]:
            buffer = torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
            self._buffers[key] = buffer
        return buffer[: shape[0]]


def _apply_bank_rows(adj, x, coeffs, rows, out, col_chunk, workspace, moments=None):
    """``out[r, m] = (Σ_k coeffs[m, k] T_k(L̃) x)[rows[r]]`` (m < M-1), ``out[r, M-1] = x[rows[r]] - Σ_m out[r, m]``.

    The same recursion as :func:`_apply_bank`, but only the requested rows of each band are accumulated (one
    row gather per order instead of M-1 full-size updates) and T_k x lives in two reused workspace buffers.
    ``out`` is [R, M, D]. ``moments`` as in :func:`_apply_bank`.
    """
    n_filt, order = coeffs.shape[0], coeffs.shape[1] - 1
    for cols in _column_chunks(x.shape[1], col_chunk):
        x0 = x[:, cols].contiguous()
        x_rows = x0.index_select(0, rows)
        acc = [out[:, m, cols] for m in range(n_filt)]
        for m in range(n_filt):
            acc[m].copy_(x_rows).mul_(coeffs[m, 0])
        if moments is not None:
            mu0 = _dot(x0, x0)
            moments[0] += mu0
        if order >= 1:
            first, second = workspace.get("t_a", x0.shape, x0), workspace.get("t_b", x0.shape, x0)
            picked = workspace.get("t_rows", x_rows.shape, x0)
            prev, cur = x0, torch.addmm(first, adj, x0, beta=0.0, alpha=-1.0, out=first)  # T_1 x = -Â x
            if moments is not None and len(moments) > 1:
                mu1 = _dot(x0, cur)
                moments[1] += mu1
            for k in range(1, order + 1):
                if k == 2:  # T_2 x = 2 L̃ T_1 x - x into the second buffer (x itself is never overwritten)
                    prev, cur = cur, torch.addmm(x0, adj, cur, beta=-1.0, alpha=-2.0, out=second)
                elif k > 2:
                    prev, cur = cur, _recur(adj, cur, prev)
                if moments is not None and 2 * k - 1 < len(moments):
                    _moment_update(moments, k, cur, prev, mu0, mu1)
                torch.index_select(cur, 0, rows, out=picked)
                for m in range(n_filt):
                    if coeffs[m, k] != 0.0:
                        acc[m].add_(picked, alpha=coeffs[m, k])
        last = out[:, n_filt, cols]
        last.copy_(x_rows)
        for m in range(n_filt):
            last.sub_(acc[m])
    return out


def _apply_bank_rows_adjoint(adj, grad, coeffs, rows, num_nodes, col_chunk, workspace):
    """Gradient w.r.t. x of :func:`_apply_bank_rows` for ``grad`` [R, M, D]: the adjoint of "filter, then take
    rows" is "scatter the row gradients, then filter": Σ_k T_k(L̃) y_k + g_last with y_k = Σ_m c_mk (g_m - g_last)
    non-zero only on ``rows``, by the Clenshaw recurrence b_k = y_k + 2 L̃ b_{k+1} - b_{k+2} in reused buffers."""
    n_filt, order = coeffs.shape[0], coeffs.shape[1] - 1
    totals = coeffs.sum(0)
    width = grad.shape[-1]
    result = torch.empty((num_nodes, width), dtype=grad.dtype, device=grad.device)

    for cols in _column_chunks(width, col_chunk):
        g = [grad[:, m, cols] for m in range(n_filt)]
        g_last = grad[:, n_filt, cols]
        y = workspace.get("y_rows", g_last.shape, g_last)

        def y_at(k):  # y_k on the rows
            y.copy_(g_last).mul_(-totals[k])
            for m in range(n_filt):
                if coeffs[m, k] != 0.0:
                    y.add_(g[m], alpha=coeffs[m, k])
            return y

        shape = (num_nodes, cols.stop - cols.start)
        if order >= 1:
            b1, b2 = workspace.get("b_a", shape, grad), workspace.get("b_b", shape, grad)
            b1.zero_().index_add_(0, rows, y_at(order))  # b_K = y_K
            b2.zero_()  # b_{K+1}
            for k in range(order - 1, 0, -1):
                b2 = _recur(adj, b1, b2)
                b2.index_add_(0, rows, y_at(k))
                b1, b2 = b2, b1
            part = torch.sparse.addmm(b2, adj, b1, beta=-1.0, alpha=-1.0)  # L̃ b_1 - b_2
        else:
            part = torch.zeros(shape, dtype=grad.dtype, device=grad.device)
        part.index_add_(0, rows, y_at(0).add_(g_last))  # + y_0 + g_last
        if cols.start == 0 and cols.stop == width:
            result = part
        else:
            result[:, cols] = part
    return result


class _ChebyshevBankRows(torch.autograd.Function):
    """Rows ``rows`` of the bands of :class:`_ChebyshevBank`, as [R, M, D]; linear in x, row-sparse gradient."""

    @staticmethod
    def forward(ctx, x, adj, coeffs, rows, col_chunk, moments, workspace):
        ctx.adj, ctx.coeffs, ctx.rows, ctx.col_chunk, ctx.workspace = adj, coeffs, rows, col_chunk, workspace
        ctx.num_nodes = x.shape[0]
        out = torch.empty((len(rows), coeffs.shape[0] + 1, x.shape[1]), dtype=x.dtype, device=x.device)
        return _apply_bank_rows(adj, x.detach(), coeffs, rows, out, col_chunk, workspace, moments)

    @staticmethod
    def backward(ctx, grad):
        if not ctx.needs_input_grad[0]:
            return (None,) * 7
        grad_x = _apply_bank_rows_adjoint(ctx.adj, grad, ctx.coeffs, ctx.rows, ctx.num_nodes, ctx.col_chunk,
                                          ctx.workspace)
        return (grad_x,) + (None,) * 6


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------
def band_energy_shares(bands, x=None, kind="projection"):
    """Per-band energy shares of ``bands`` [M, n, d] (any row/column subset, e.g. users or one modality).

    ``kind='projection'`` (default): ⟨X, band_m⟩ / ‖X‖² with X = ``x`` or Σ_m band_m; equals the exact GFT energy
    share Σ_k h_m(λ_k) e_k / Σ_k e_k of each band's filter response (for ``eigen``: the band's modes' energy);
    sums to 1 when the bands sum to X; negative where a filter response is negative (``reference`` bank).
    ``kind='norm'``: ‖band_m‖² / Σ_m' ‖band_m'‖² (non-negative; for non-orthogonal bands it double-counts
    the overlap of neighbouring soft bands).
    Returns a detached float64 tensor [M] (zeros for a zero signal).
    """
    with torch.no_grad():
        bands = bands.detach()
        if kind == "projection":
            ref = (bands.sum(0) if x is None else x.detach().to(bands.dtype)).contiguous()
            total = _dot(ref, ref)
            shares = [_dot(bands[m].contiguous(), ref) for m in range(bands.shape[0])]
        elif kind == "norm":
            shares = [_dot(bands[m].contiguous(), bands[m].contiguous()) for m in range(bands.shape[0])]
            total = sum(shares)
        else:
            raise ValueError(f"unknown kind '{kind}': use 'projection' or 'norm'")
        shares = torch.tensor(shares, dtype=torch.float64)
        return shares / total if total > 0 else torch.zeros_like(shares)


def _shares_from_moments(coefficients, moments):
    """Projection energy shares from the signal's own moments: ⟨X, h_m(L) X⟩ = Σ_k c_mk μ_k (m < M-1), the last
    band the rest (same numbers as :func:`band_energy_shares` on the full bands, without forming them)."""
    mu = np.asarray(moments, dtype=np.float64)
    if not mu[0] > 0:
        return torch.zeros(coefficients.shape[0] + 1, dtype=torch.float64)
    order = min(coefficients.shape[1], len(mu))
    shares = coefficients[:, :order] @ mu[:order] / mu[0]
    return torch.as_tensor(np.append(shares, 1.0 - shares.sum()), dtype=torch.float64)


def _eigh(matrix, single_thread_below=2048):
    """``torch.linalg.eigh``; single-threaded for small matrices.

    On a shared, oversubscribed CPU a multi-threaded LAPACK eigh of a few hundred to a few thousand rows can be
    ~100x slower than a single-threaded one (measured: N=800, 2 threads 11.4 s vs 1 thread 0.06 s with other jobs
    on the 2 cores); single-threaded it takes < ~1.5 s up to N = 2048. The previous thread count is restored.
    """
    if matrix.device.type != "cpu" or matrix.shape[0] > single_thread_below:
        return torch.linalg.eigh(matrix)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(matrix)
    finally:
        torch.set_num_threads(threads)


def _to_sparse(adj):
    if isinstance(adj, torch.Tensor):
        if adj.layout == torch.sparse_csr:
            return adj
        if adj.layout == torch.sparse_coo:
            return adj.coalesce().to_sparse_csr()
        if adj.layout == torch.strided:
            return adj.to_sparse_csr()
        raise TypeError(f"unsupported sparse layout {adj.layout}: pass COO or CSR")
    try:  # scipy.sparse
        coo = adj.tocoo()
    except AttributeError as exc:
        raise TypeError(f"adj must be a torch tensor (sparse COO/CSR) or scipy.sparse matrix, got {type(adj)}") from exc
    indices = torch.as_tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64)
    values = torch.as_tensor(coo.data, dtype=torch.float32)
    return torch.sparse_coo_tensor(indices, values, coo.shape).coalesce().to_sparse_csr()


class SpectralBandDecomposer(nn.Module):
    """Decompose graph signals X [N, D] into M frequency bands [M, N, D] that sum to X (docs/ssr.md, "Stage (i)").

    Args:
        adj: Â = D^-1/2 A D^-1/2 of the (training) user-item graph, torch sparse COO/CSR (or scipy.sparse),
            N x N, symmetric, no self loops (spectrum of L = I - Â in [0, 2]; not checked).
        num_bands: M (config ``band_num``), >= 1.
        method: ``'auto' | 'eigen' | 'chebyshev' | 'reference'`` (config ``band_method``; see module doc).
        k_poly: highest Chebyshev order of the ``reference`` bank (config ``k_poly``, reference default 5).
        cheb_order: degree K of the ``chebyshev`` band filters and of the moment expansion (config
            ``cheb_order``); transition width ~π/(K+2) in arccos(λ-1); cost 1.5·K sparse products per call.
        eigen_max_nodes: largest N for the dense ``eigen`` path, and the ``auto`` switch (config
            ``eigen_max_nodes``, reference 5000).
        refresh_every: estimate the band edges exactly every this many calls; 0 = only on the first call (config
            ``band_refresh_every``; see "Edge caching" in the module doc).
        track_edges: between exact estimates, follow the signal with one-call-old free moments (True) or keep
            the edges frozen (False) (config ``band_track_edges``).
        col_chunk: process this many signal columns at a time in the sparse paths (None = all; config
            ``band_col_chunk``); lowers the working memory to (M + 1)·N·D + 3·N·col_chunk floats.
        eigen_dtype: dtype of the cached eigendecomposition (float32: ~12 s for N = 5000 on 2 cores, float64 ~3x
            slower); a float64 signal always uses a float64 basis.

    Diagnostics after a call (all detached, on CPU): ``band_edges`` (λ_1..λ_{M-1}; for ``eigen`` the midpoint
    between the last eigenvalue of band j-1 and the first of band j; None for ``reference``), ``energy_shares``
    (projection shares of the last call, see :func:`band_energy_shares`), ``moments`` (chebyshev, μ_0..μ_K of the
    signal the edges were estimated from), ``borders`` (eigen, mode indices), ``coefficients`` (chebyshev /
    reference, [M-1, K+1] in L - I), ``method`` (the resolved method), ``calls``, ``timings`` (seconds of the
    last call's phases: chebyshev/reference ``edges_s``, ``filter_s``, ``shares_s``; eigen ``eigh_s`` (0 once
    cached), ``bands_s``).
    The module has no parameters or buffers (checkpoints stay small); the graph and the eigenbasis are cached
    per (device, dtype) on first use.
    """

    def __init__(self, adj, num_bands=3, method="auto", k_poly=5, cheb_order=32, eigen_max_nodes=5000,
                 refresh_every=1, track_edges=True, col_chunk=None, eigen_dtype=torch.float32):
        super().__init__()
        if method not in BAND_METHODS:
            raise ValueError(f"unknown band_method '{method}': use one of {BAND_METHODS}")
        if int(num_bands) < 1:
            raise ValueError(f"band_num must be >= 1, got {num_bands}")
        if int(cheb_order) < 1:
            raise ValueError(f"cheb_order must be >= 1, got {cheb_order}")
        self._adj = _to_sparse(adj)
        if self._adj.dim() != 2 or self._adj.shape[0] != self._adj.shape[1]:
            raise ValueError(f"adj must be square N x N, got {tuple(self._adj.shape)}")
        self.num_nodes = int(self._adj.shape[0])
        self.num_bands = int(num_bands)
        self.requested_method = method
        self.eigen_max_nodes = int(eigen_max_nodes)
        if method == "auto":
            method = "eigen" if self.num_nodes <= self.eigen_max_nodes else "chebyshev"
        if method == "eigen" and self.num_nodes > self.eigen_max_nodes:
            raise ValueError(
                f"band_method='eigen' needs a dense eigendecomposition of the {self.num_nodes} x {self.num_nodes} "
                f"Laplacian, above eigen_max_nodes={self.eigen_max_nodes} (it would take ~"
                f"{3 * 4 * self.num_nodes ** 2 / 2 ** 30:.1f} GiB and O(N^3) time). Use band_method='chebyshev' "
                f"(scalable equal-energy bands) or 'auto', or raise eigen_max_nodes.")
        self.method = method
        self.k_poly = int(k_poly)
        self.cheb_order = int(cheb_order)
        self.refresh_every = int(refresh_every)
        if self.refresh_every < 0:
            raise ValueError(f"refresh_every must be >= 0, got {refresh_every}")
        self.track_edges = bool(track_edges)
        self._free_moments = None
        self.col_chunk = col_chunk
        self.eigen_dtype = eigen_dtype
        self._adj_cache = {}
        self._eig_cache = {}
        self._workspace = Workspace()
        self.calls = 0
        self._stale = True
        self.band_edges = None
        self.energy_shares = None
        self.moments = None
        self.borders = None
        self.coefficients = None
        self.timings = {}
        if self.method == "reference":
            coeffs = reference_coefficients(self.num_bands, self.k_poly)
            nonzero = np.flatnonzero(np.abs(coeffs).sum(0)) if coeffs.size else np.zeros(0, dtype=int)
            self.coefficients = coeffs[:, :int(nonzero.max()) + 1] if nonzero.size else coeffs[:, :1]

    # -- caches ------------------------------------------------------------------------------------------------
    def adjacency(self, device, dtype):
        """Â as CSR on ``device``/``dtype`` (cached)."""
        key = (torch.device(device), dtype)
        if key not in self._adj_cache:
            self._adj_cache[key] = self._adj.to(device=device, dtype=dtype)
        return self._adj_cache[key]

    def eigenbasis(self, device, dtype):
        """(eigenvalues [N], eigenvectors [N, N]) of L = I - Â, ascending; dense, computed once and cached."""
        dtype = torch.float64 if torch.float64 in (dtype, self.eigen_dtype) else self.eigen_dtype
        key = (torch.device(device), dtype)
        if key not in self._eig_cache:
            cached = next((v for (d, t), v in self._eig_cache.items() if t == dtype), None)
            if cached is None:
                lap = -self._adj.to(dtype=dtype).to_dense()
                lap.diagonal().add_(1.0)
                evals, evecs = _eigh(lap)
                del lap
                cached = (evals, evecs)
            self._eig_cache[key] = tuple(t.to(device) for t in cached)
        return self._eig_cache[key]

    def refresh(self):
        """Force the band edges to be re-estimated on the next call."""
        self._stale = True

    def _due(self, calls=None):
        calls = self.calls if calls is None else calls
        return self._stale or calls == 0 or (self.refresh_every > 0 and calls % self.refresh_every == 0)

    # -- forward -----------------------------------------------------------------------------------------------
    def forward(self, x, edge_signal=None):
        """Bands [M, N, D] of ``x`` [N, D]; Σ_m bands[m] == x (last band is the residual).

        ``edge_signal`` [N, D'] (optional): estimate the equal-energy edges from this signal instead of ``x``
        (e.g. the reference measures energy on [R | Q] but the project decomposes X = R + Q). Ignored by
        ``reference``.
        """
        if x.dim() != 2 or x.shape[0] != self.num_nodes:
            raise ValueError(f"x must be [N={self.num_nodes}, D], got {tuple(x.shape)}")
        if edge_signal is not None and (edge_signal.dim() != 2 or edge_signal.shape[0] != self.num_nodes):
            raise ValueError(f"edge_signal must be [N={self.num_nodes}, D'], got {tuple(edge_signal.shape)}")
        if self.num_bands == 1:
            bands = x.unsqueeze(0)
            self.energy_shares = torch.ones(1, dtype=torch.float64)
            self.band_edges = torch.zeros(0, dtype=torch.float64)
        elif self.method == "eigen":
            bands = self._forward_eigen(x, edge_signal)
        else:
            bands = self._forward_chebyshev(x, edge_signal)
        self.calls += 1
        return bands

    def bands_at(self, x, rows):
        """Bands of ``x`` at the node indices ``rows`` as [R, M, D]: equal to ``forward(x)[:, rows].transpose(0, 1)``
        (same edges, same state updates), but the ``chebyshev``/``reference`` paths never form the [M, N, D] bands:
        they accumulate only these rows and back-propagate row-sparse gradients (the training step). ``rows`` should
        be distinct (e.g. ``torch.unique`` of a batch's nodes). Energy shares come from the pass's own moments when
        edge tracking measured them (:meth:`forward` docs), else they are left as None for this call."""
        if x.dim() != 2 or x.shape[0] != self.num_nodes:
            raise ValueError(f"x must be [N={self.num_nodes}, D], got {tuple(x.shape)}")
        if self.num_bands == 1 or self.method == "eigen":
            return self.forward(x)[:, rows].transpose(0, 1)
        bands = self._forward_chebyshev(x, None, rows=rows)
        self.calls += 1
        return bands

    def _forward_eigen(self, x, edge_signal):
        start = time.perf_counter()
        evals, evecs = self.eigenbasis(x.device, x.dtype)
        mid = time.perf_counter()
        basis = evecs.to(x.dtype)
        coeff = basis.T @ x  # GFT, differentiable
        due = self._due() or self.borders is None
        if due or (self.track_edges and edge_signal is None):
            with torch.no_grad():
                c = coeff.detach() if edge_signal is None else basis.T @ edge_signal.detach().to(basis.dtype)
                energy = (c.double() ** 2).sum(1)
                total = float(energy.sum())
                n, m = self.num_nodes, self.num_bands
                if total > 0:
                    cum = torch.cumsum(energy, 0) / total
                    targets = torch.arange(1, m, dtype=torch.float64, device=cum.device) / m
                    inner = torch.searchsorted(cum, targets, right=False).tolist()  # #{k: cum_k < j/M}
                else:
                    inner = [n * j // m for j in range(1, m)]
                self.borders = [0] + [min(int(b), n) for b in inner] + [n]
                lam = evals.detach().double().cpu()
                self.band_edges = torch.tensor(
                    [0.5 * (lam[max(b - 1, 0)] + lam[min(b, n - 1)]) for b in self.borders[1:-1]],
                    dtype=torch.float64)
            self._stale = False
        parts = [basis[:, s:e] @ coeff[s:e] for s, e in zip(self.borders[:-2], self.borders[1:-1])]
        parts.append(x - sum(parts) if parts else x)
        bands = torch.stack(parts)
        with torch.no_grad():
            energy = (coeff.detach().double() ** 2).sum(1)
            total = energy.sum()
            shares = torch.stack([energy[s:e].sum() for s, e in zip(self.borders[:-1], self.borders[1:])])
            self.energy_shares = (shares / total if total > 0 else torch.zeros_like(shares)).cpu()
        self.timings = {"eigh_s": mid - start, "bands_s": time.perf_counter() - mid}
        return bands

    def _forward_chebyshev(self, x, edge_signal, rows=None):
        adj = self.adjacency(x.device, x.dtype)
        start = time.perf_counter()
        free = None
        if self.method == "chebyshev":
            if self._due() or self.coefficients is None:
                signal = x.detach() if edge_signal is None else edge_signal.detach().to(x.dtype)
                self._set_edges(chebyshev_moments(adj, signal, self.cheb_order, self.col_chunk))
                self._stale = False
            elif self.track_edges and self._free_moments is not None:
                self._set_edges(self._free_moments)
            self._free_moments = None
            if self.track_edges and edge_signal is None and not self._due(self.calls + 1):
                free = np.zeros(self.cheb_order + 1)  # filled by the filter pass, used by the next call
        mid = time.perf_counter()
        coefficients = np.asarray(self.coefficients, dtype=np.float64)
        if rows is None:
            bands = _ChebyshevBank.apply(x, adj, coefficients, self.col_chunk, free)
        else:
            bands = _ChebyshevBankRows.apply(x, adj, coefficients, rows, self.col_chunk, free, self._workspace)
        self._free_moments = free
        end = time.perf_counter()
        if rows is None:
            self.energy_shares = band_energy_shares(bands, x)
        else:
            self.energy_shares = _shares_from_moments(coefficients, free) if free is not None else None
        self.timings = {"edges_s": mid - start, "filter_s": end - mid, "shares_s": time.perf_counter() - end}
        return bands

    def _set_edges(self, moments):
        self.moments = np.asarray(moments, dtype=np.float64)
        edges = equal_energy_edges(self.moments, self.num_bands)
        self.coefficients = _band_coefficients_from_edges(edges, self.cheb_order)
        self.band_edges = torch.as_tensor(1.0 + edges, dtype=torch.float64)

    # -- diagnostics -------------------------------------------------------------------------------------------
    def band_responses(self, lam):
        """Filter responses h_m(λ) [M, len(λ)] at eigenvalues ``lam`` of L (numpy float64).

        ``chebyshev``/``reference``: the polynomial responses (they sum to 1); ``eigen``: indicators of the last
        estimated λ-edges (a degenerate eigenvalue split between two bands is shown in the upper one).
        """
        lam = np.asarray(lam, dtype=np.float64)
        m = self.num_bands
        if m == 1:
            return np.ones((1, lam.size))
        if self.method == "eigen":
            if self.band_edges is None:
                raise RuntimeError("call the decomposer once before asking for eigen band responses")
            idx = np.searchsorted(self.band_edges.numpy(), lam, side="right")
            return (idx[None, :] == np.arange(m)[:, None]).astype(np.float64)
        if self.coefficients is None:
            raise RuntimeError("call the decomposer once before asking for chebyshev band responses")
        resp = np.polynomial.chebyshev.chebval(lam - 1.0, np.asarray(self.coefficients).T)  # [M-1, len]
        return np.vstack([resp, 1.0 - resp.sum(0, keepdims=True)])

    def energy_cdf(self, lam):
        """Estimated fraction of the signal energy at eigenvalues <= λ (chebyshev: KPM CDF from ``moments``)."""
        if self.moments is None:
            raise RuntimeError("energy_cdf needs the chebyshev moments: call a 'chebyshev' decomposer first")
        mu = self.moments / self.moments[0] if self.moments[0] > 0 else self.moments
        theta = np.arccos(np.clip(np.asarray(lam, dtype=np.float64) - 1.0, -1.0, 1.0))
        return _soft_cdf(theta, mu, jackson_damping(len(mu) - 1))

    def extra_repr(self):
        return (f"num_nodes={self.num_nodes}, num_bands={self.num_bands}, method='{self.method}', "
                f"cheb_order={self.cheb_order}, k_poly={self.k_poly}, refresh_every={self.refresh_every}, "
                f"track_edges={self.track_edges}")
