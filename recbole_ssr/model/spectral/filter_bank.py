"""A bank of polynomial graph filters applied with sparse products only, with its own autograd.

For a filter bank given as Chebyshev coefficients c[m, k] in L̃ = L - I = -Â (m < M-1, k <= K), the bands are

    band_m = Σ_k c[m, k] T_k(L̃) X   (m < M-1),     band_{M-1} = X - Σ_{m<M-1} band_m,

computed by the three-term recurrence T_0 X = X, T_1 X = -Â X, T_{k+1} X = 2 L̃ T_k X - T_{k-1} X (K sparse
products, no N x N matrix). The bands are linear in X; the gradient is the adjoint bank, evaluated by the Clenshaw
recurrence b_k = y_k + 2 L̃ b_{k+1} - b_{k+2} with the same K sparse products (docs/ssr.md, "Stage (i)").

Two ways to run the bank share this recursion: the full bank ``[M, N, D]`` (evaluation, diagnostics) and the
row-restricted bank ``[R, M, D]`` (a training step needs only the batch's rows: it gathers those rows of every T_k X
and back-propagates a row-sparse gradient, keeping T_k X in reused :class:`Workspace` buffers).
"""

import numpy as np
import torch

_ALIAS_OK = {}


def _alias_ok(adj):
    """Whether ``torch.addmm(y, adj, x, out=y)`` (in-place recurrence step) is exact on this layout/device.

    Checked once per (layout, device type, index dtype) on a 3-node example; otherwise a fresh buffer is used per
    step.
    """
    index_dtype = adj.crow_indices().dtype if adj.layout == torch.sparse_csr else None
    key = (adj.layout, adj.device.type, index_dtype)
    if key not in _ALIAS_OK:
        dense = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 2.0], [0.0, 2.0, 0.0]], device=adj.device)
        small = dense.to_sparse_csr() if adj.layout == torch.sparse_csr else dense.to_sparse()
        if index_dtype is not None:
            small = torch.sparse_csr_tensor(small.crow_indices().to(index_dtype), small.col_indices().to(index_dtype),
                                            small.values(), small.shape)
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


def _next(adj, cur, prev, x0):
    """T_{k+1} x = 2 L̃ T_k x - T_{k-1} x, overwriting the T_{k-1} buffer unless it is the caller's x."""
    if prev is x0:
        return torch.sparse.addmm(prev, adj, cur, beta=-1.0, alpha=-2.0)
    return _recur(adj, cur, prev)


def dot(a, b):
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
        mu[2 * j - 1] += 2.0 * dot(cur, prev) - mu1
    if 2 * j <= order:
        mu[2 * j] += 2.0 * dot(cur, cur) - mu0


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

    def release(self, tensor):
        """Forget the buffer that ``tensor`` is (a view of), so that the caller may keep it: the next request for it
        allocates a new one."""
        for key, buffer in list(self._buffers.items()):
            if buffer.data_ptr() == tensor.data_ptr():
                del self._buffers[key]


def _chebyshev_terms(adj, x0, order, moments=None, workspace=None):
    """Yield ``(k, T_k(L̃) x0)`` for k = 1..``order`` (T_0 x0 = x0 is the caller's; each yielded tensor is
    overwritten two steps later). ``moments``: add μ_0 and every μ_j the doubling identities reach from T_0..T_order
    to it (dot products only). ``workspace``: T_1 and T_2 go to its buffers instead of fresh tensors; from T_3 on
    the recurrence overwrites T_{k-1} in place either way."""
    if moments is not None:
        mu0 = dot(x0, x0)
        moments[0] += mu0
    if order < 1:
        return
    if workspace is None:
        prev, cur = x0, _first(adj, x0)
    else:
        first, second = workspace.get("t_a", x0.shape, x0), workspace.get("t_b", x0.shape, x0)
        prev, cur = x0, torch.addmm(first, adj, x0, beta=0.0, alpha=-1.0, out=first)  # T_1 x = -Â x
    if moments is not None and len(moments) > 1:
        mu1 = dot(x0, cur)
        moments[1] += mu1
    for k in range(1, order + 1):
        if k == 2 and workspace is not None:  # T_2 x = 2 L̃ T_1 x - x into the second buffer (x is never overwritten)
            prev, cur = cur, torch.addmm(x0, adj, cur, beta=-1.0, alpha=-2.0, out=second)
        elif k > 1:
            prev, cur = cur, _next(adj, cur, prev, x0)
        if moments is not None and 2 * k - 1 < len(moments):
            _moment_update(moments, k, cur, prev, mu0, mu1)
        yield k, cur


@torch.no_grad()
def chebyshev_moments(adj, x, order, col_chunk=None):
    """μ_0..μ_order with μ_k = Σ_f x_fᵀ T_k(-Â) x_f, using ⌈order/2⌉ sparse products (doubling identities
    μ_{2j} = 2⟨T_j x, T_j x⟩ - μ_0, μ_{2j+1} = 2⟨T_{j+1} x, T_j x⟩ - μ_1).

    ``adj`` is Â (sparse CSR/COO, same device/dtype as ``x``); returns a float64 numpy array.
    """
    mu = np.zeros(order + 1)
    for cols in _column_chunks(x.shape[1], col_chunk):
        for _ in _chebyshev_terms(adj, x[:, cols].contiguous(), (order + 1) // 2, moments=mu):
            pass
    return mu


def _apply_bank(adj, x, coeffs, out, col_chunk, moments=None, rows=None, workspace=None):
    """The bank without autograd, written into ``out``.

    ``rows`` None: ``out`` [M, N, D], out[m] = Σ_k coeffs[m, k] T_k(L̃) x (m < M-1), out[M-1] = x - Σ_m out[m].
    ``rows`` given: ``out`` [R, M, D] holds only those rows (one row gather per order instead of M-1 full-size
    updates; T_k x lives in ``workspace`` buffers). ``moments`` (float64 array, length <= 2K+1): the signal's
    Chebyshev moments are accumulated into it along the way (a few dot products, no extra sparse product).
    """
    n_filt, order = coeffs.shape[0], coeffs.shape[1] - 1
    for cols in _column_chunks(x.shape[1], col_chunk):
        x0 = x[:, cols].contiguous()
        if rows is None:
            base, acc, last = x0, [out[m, :, cols] for m in range(n_filt)], out[n_filt, :, cols]
        else:
            base, acc, last = x0.index_select(0, rows), [out[:, m, cols] for m in range(n_filt)], out[:, n_filt, cols]
            picked = workspace.get("t_rows", base.shape, x0)
        for m in range(n_filt):
            acc[m].copy_(base).mul_(coeffs[m, 0])
        for k, term in _chebyshev_terms(adj, x0, order, moments, workspace if rows is not None else None):
            if rows is not None:
                term = torch.index_select(term, 0, rows, out=picked)
            for m in range(n_filt):
                if coeffs[m, k] != 0.0:
                    acc[m].add_(term, alpha=coeffs[m, k])
        last.copy_(base)
        for m in range(n_filt):
            last.sub_(acc[m])
    return out


def _clenshaw(adj, b1, spare, order, add_y):
    """b_k = y_k + 2 L̃ b_{k+1} - b_{k+2} for k = K-1..1, from b1 = b_K and b_{K+1} = 0, in the memory of ``b1`` and
    ``spare`` (whose content is ignored: the first step is a plain product, so b_{K+1} = 0 is never written);
    ``add_y(buffer, k)`` adds y_k. Returns (b_1, b_2), so that Σ_{k>=1} T_k(L̃) y_k = L̃ b_1 - b_2; b_2 is None
    (zero) when K = 1."""
    b2 = None
    for k in range(order - 1, 0, -1):
        if b2 is None:  # b_{K-1} = y_{K-1} + 2 L̃ b_K - 0
            b2 = torch.addmm(spare, adj, b1, beta=0.0, alpha=-2.0, out=spare)
        else:
            b2 = _recur(adj, b1, b2)
        add_y(b2, k)
        b1, b2 = b2, b1
    return b1, b2


def _clenshaw_end(adj, b1, b2, out):
    """L̃ b_1 - b_2 (b_2 None: zero) written into ``out`` (which may be b_2's memory)."""
    if b2 is None:
        return torch.addmm(out, adj, b1, beta=0.0, alpha=-1.0, out=out)
    if out is b2:
        return _recur(adj, b1, b2, alpha=-1.0)
    return torch.addmm(b2, adj, b1, beta=-1.0, alpha=-1.0, out=out)


def _apply_bank_adjoint(adj, grad, coeffs, col_chunk):
    """Gradient w.r.t. x of the full bank: g_last + Σ_k T_k(L̃) y_k, y_k = Σ_m c_mk (g_m - g_last) (Clenshaw)."""
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
            b1, b2 = _clenshaw(adj, b1, torch.empty_like(b1), order, lambda buf, k: add_y(buf, k, g, g_last))
            res.add_(_first(adj, b1))  # + L̃ b_1 - b_2
            if b2 is not None:
                res.sub_(b2)
    return result


def _apply_bank_rows_adjoint(adj, grad, coeffs, rows, num_nodes, col_chunk, workspace):
    """Gradient w.r.t. x of the row-restricted bank for ``grad`` [R, M, D]: the adjoint of "filter, then take
    rows" is "scatter the row gradients, then filter": Σ_k T_k(L̃) y_k + g_last with y_k = Σ_m c_mk (g_m - g_last)
    non-zero only on ``rows``, by the Clenshaw recurrence in reused buffers."""
    n_filt, order = coeffs.shape[0], coeffs.shape[1] - 1
    totals = coeffs.sum(0)
    width = grad.shape[-1]
    result = torch.empty((num_nodes, width), dtype=grad.dtype, device=grad.device)

    for cols in _column_chunks(width, col_chunk):
        g = [grad[:, m, cols] for m in range(n_filt)]
        g_last = grad[:, n_filt, cols]
        y = workspace.get("y_rows", g_last.shape, g_last)

        def y_at(k):  # y_k on the rows
            torch.mul(g_last, -totals[k], out=y)
            for m in range(n_filt):
                if coeffs[m, k] != 0.0:
                    y.add_(g[m], alpha=coeffs[m, k])
            return y

        shape = (num_nodes, cols.stop - cols.start)
        if order >= 1:
            b1, spare = workspace.get("b_a", shape, grad), workspace.get("b_b", shape, grad)
            b1.zero_().index_add_(0, rows, y_at(order))  # b_K = y_K
            b1, b2 = _clenshaw(adj, b1, spare, order, lambda buf, k: buf.index_add_(0, rows, y_at(k)))
            # L̃ b_1 - b_2, written over b_2 (or the spare buffer), which the workspace then hands over: the
            # gradient is returned to autograd, so the next call gets a fresh buffer instead of a copy here
            part = _clenshaw_end(adj, b1, b2, spare if b2 is None else b2)
            workspace.release(part)
        else:
            part = torch.zeros(shape, dtype=grad.dtype, device=grad.device)
        part.index_add_(0, rows, y_at(0).add_(g_last))  # + y_0 + g_last
        if cols.start == 0 and cols.stop == width:
            result = part
        else:
            result[:, cols] = part
    return result


class _ChebyshevBank(torch.autograd.Function):
    """The bank as an autograd function, linear in x: [M, N, D], or [R, M, D] at ``rows`` (row-sparse gradient)."""

    @staticmethod
    def forward(ctx, x, adj, coeffs, col_chunk, moments, rows, workspace):
        ctx.adj, ctx.coeffs, ctx.col_chunk, ctx.rows, ctx.workspace = adj, coeffs, col_chunk, rows, workspace
        ctx.num_nodes = x.shape[0]
        n_bands = coeffs.shape[0] + 1
        shape = (n_bands,) + tuple(x.shape) if rows is None else (len(rows), n_bands, x.shape[1])
        out = torch.empty(shape, dtype=x.dtype, device=x.device)
        return _apply_bank(adj, x.detach(), coeffs, out, col_chunk, moments, rows, workspace)

    @staticmethod
    def backward(ctx, grad):
        if not ctx.needs_input_grad[0]:
            return (None,) * 7
        if ctx.rows is None:
            grad_x = _apply_bank_adjoint(ctx.adj, grad, ctx.coeffs, ctx.col_chunk)
        else:
            grad_x = _apply_bank_rows_adjoint(ctx.adj, grad, ctx.coeffs, ctx.rows, ctx.num_nodes, ctx.col_chunk,
                                              ctx.workspace)
        return (grad_x,) + (None,) * 6


def filter_bands(x, adj, coefficients, col_chunk=None, moments=None, rows=None, workspace=None):
    """Bands of ``x`` [N, D] under the bank ``coefficients`` [M-1, K+1] (module doc), differentiable in ``x``.

    ``adj``: Â on x's device/dtype. ``rows`` (distinct node indices) with a ``workspace``: only those rows, as
    [R, M, D]; otherwise [M, N, D]. ``col_chunk``: columns per pass (lower working memory). ``moments``: a float64
    array that collects the signal's Chebyshev moments for free (see :func:`_chebyshev_terms`).
    """
    return _ChebyshevBank.apply(x, adj, coefficients, col_chunk, moments, rows, workspace)


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
            total = dot(ref, ref)
            shares = [dot(bands[m].contiguous(), ref) for m in range(bands.shape[0])]
        elif kind == "norm":
            shares = [dot(bands[m].contiguous(), bands[m].contiguous()) for m in range(bands.shape[0])]
            total = sum(shares)
        else:
            raise ValueError(f"unknown kind '{kind}': use 'projection' or 'norm'")
        shares = torch.tensor(shares, dtype=torch.float64)
        return shares / total if total > 0 else torch.zeros_like(shares)
