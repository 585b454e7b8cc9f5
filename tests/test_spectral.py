"""Tests of SSR stage (i), recbole_ssr.model.spectral (band decomposition); small random graphs, fast.

Reference quantities are computed densely and independently here (numpy float64 eigh of L, explicit polynomials).
"""

import warnings

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from recbole_ssr.model.spectral import (SpectralBandDecomposer, band_energy_shares, chebyshev_moments,
                                        equal_energy_edges, reference_coefficients)

warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """These graphs are tiny: one thread is as fast and immune to other jobs oversubscribing the CPU (with 2 busy
    cores, 2-thread OpenMP regions of tiny ops were measured 10-100x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bipartite_adj(n_users, n_items, degree, seed, isolated=0):
    """Â = D^-1/2 A D^-1/2 (coalesced COO float32) of a random bipartite graph, users first, then items,
    plus ``isolated`` nodes at the end with no edge (all-zero rows)."""
    gen = torch.Generator().manual_seed(seed)
    n = n_users + n_items + isolated
    n_edges = int((n_users + n_items) * degree / 2)
    users = torch.randint(0, n_users, (n_edges,), generator=gen)
    items = torch.randint(0, n_items, (n_edges,), generator=gen) + n_users
    index = torch.stack([torch.cat([users, items]), torch.cat([items, users])])
    adj = torch.sparse_coo_tensor(index, torch.ones(index.shape[1]), (n, n)).coalesce()
    index = adj.indices()
    deg = torch.zeros(n).index_add_(0, index[0], torch.ones(index.shape[1]))
    inv = torch.where(deg > 0, deg.clamp(min=1).pow(-0.5), torch.zeros_like(deg))
    return torch.sparse_coo_tensor(index, inv[index[0]] * inv[index[1]], (n, n)).coalesce()


def smooth_signal(adj, width, seed):
    """LightGCN-like signal H + ÂH + Â²H (energy concentrated at low λ, as in SSR's backbone)."""
    h = torch.randn(adj.shape[0], width, generator=torch.Generator().manual_seed(seed))
    ah = torch.sparse.mm(adj, h)
    return h + ah + torch.sparse.mm(adj, ah)


def dense_spectrum(adj):
    """(λ ascending, U) of L = I - Â in float64 numpy, independently of the module (torch eigh: numpy's BLAS
    threads are not limited by ``single_thread``)."""
    a = adj.to_dense().double()
    lam, u = torch.linalg.eigh(torch.eye(a.shape[0], dtype=torch.float64) - a)
    return lam.numpy(), u.numpy()


def dense_cheb(a, order):
    """[T_0(-Â), ..., T_order(-Â)] as dense float64 numpy matrices (three-term recurrence)."""
    x = -a
    mats = [np.eye(a.shape[0]), x]
    for _ in range(2, order + 1):
        mats.append(2 * x @ mats[-1] - mats[-2])
    return mats[:order + 1]


@pytest.fixture(scope="module")
def graph():
    adj = bipartite_adj(320, 260, 6, seed=0, isolated=4)  # N = 584, users != items, 4 isolated nodes
    x = smooth_signal(adj, 24, seed=1)
    lam, u = dense_spectrum(adj)
    return adj, x, lam, u


# ---------------------------------------------------------------------------------------------------------------
# eigen
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("m", [2, 3, 4])
def test_eigen_bands_sum_to_x_and_carry_equal_energy(graph, m):
    adj, x, _, _ = graph
    dec = SpectralBandDecomposer(adj, m, "eigen")
    bands = dec(x)
    assert bands.shape == (m,) + tuple(x.shape)
    torch.testing.assert_close(bands.sum(0), x, atol=1e-5, rtol=0)

    # the cached basis is a true eigendecomposition of L, sorted by eigenvalue
    evals, evecs = (t.double() for t in dec.eigenbasis("cpu", torch.float32))
    lap = torch.eye(x.shape[0], dtype=torch.float64) - adj.to_dense().double()
    assert torch.all(evals[1:] >= evals[:-1])
    assert (lap @ evecs - evecs * evals).abs().max() < 1e-4
    assert (evecs.T @ evecs - torch.eye(x.shape[0], dtype=torch.float64)).abs().max() < 1e-4

    coeff = evecs.T @ x.double()
    e = (coeff ** 2).sum(1)
    total = float(e.sum())
    b = dec.borders
    assert b[0] == 0 and b[-1] == x.shape[0] and all(b0 <= b1 for b0, b1 in zip(b[:-1], b[1:]))
    for k in range(m):
        band = bands[k].double()
        # band k lives in the contiguous modes [b_k, b_{k+1}) and carries total/M within one mode's energy
        outside = torch.cat([evecs.T[:b[k]] @ band, evecs.T[b[k + 1]:] @ band])
        assert outside.abs().max() < 1e-3 * x.abs().max()
        energy = float((band ** 2).sum())
        assert abs(energy - total / m) <= float(e.max()) + 1e-4 * total, (k, energy / total)
    torch.testing.assert_close(dec.energy_shares, torch.tensor([float(e[s:t].sum()) / total for s, t in
                                                                zip(b[:-1], b[1:])], dtype=torch.float64))
    shares = band_energy_shares(bands, x)
    assert abs(float(shares.sum()) - 1.0) < 1e-5
    torch.testing.assert_close(shares, dec.energy_shares, atol=1e-4, rtol=0)


def test_eigen_borders_follow_the_reference_rule():
    """Border j = #{k : cumulative energy share of modes 0..k < j/M} (reference ``(cum < t).sum()``)."""
    adj = bipartite_adj(30, 25, 4, seed=3)
    x = smooth_signal(adj, 5, seed=4)
    dec = SpectralBandDecomposer(adj, 3, "eigen")
    dec(x)
    _, evecs = dec.eigenbasis("cpu", torch.float32)
    e = ((evecs.double().T @ x.double()) ** 2).sum(1)
    cum = torch.cumsum(e, 0) / e.sum()
    assert dec.borders == [0, int((cum < 1 / 3).sum()), int((cum < 2 / 3).sum()), x.shape[0]]


# ---------------------------------------------------------------------------------------------------------------
# chebyshev (scalable equal-energy)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("m", [3, 4])
def test_chebyshev_matches_eigen(graph, m):
    """Tolerances (K = 48): projection shares ⟨X, band⟩/‖X‖² are equal-energy *by construction* (the CDF that
    places the edges is the energy the same Jackson-damped filters keep), so they must hit 1/M to float32
    accuracy (1e-3) and the eigen shares within one eigenmode's energy (the eigen method's own granularity).
    The edges must agree with the eigen borders within one Jackson kernel width π/(K+2) ≈ 0.063 (measured 0.009
    for M = 3; 0.045 for M = 4, whose top edge falls on the point mass at λ = 1 that eigen splits mode by mode
    and a polynomial filter cannot), and the band signals within the energy in the soft transitions: measured
    Σ_m ‖B_cheb - B_eig‖²/‖X‖² ≈ 1.3(M-1)/K here, ≈ 1.55(M-1)/K on the benchmark graphs
    (benchmarks/spectral_scaling.md), bound 2.5(M-1)/K; ‖band‖² shares within 0.05 (measured 0.024, 0.035)."""
    adj, x, _, _ = graph
    order = 48
    eig = SpectralBandDecomposer(adj, m, "eigen")
    cheb = SpectralBandDecomposer(adj, m, "chebyshev", cheb_order=order)
    b_eig, b_cheb = eig(x), cheb(x)
    torch.testing.assert_close(b_cheb.sum(0), x, atol=1e-5, rtol=0)

    xd = x.double()
    proj = torch.stack([(b_cheb[k].double() * xd).sum() for k in range(m)]) / (xd ** 2).sum()
    assert torch.allclose(proj, torch.full((m,), 1.0 / m, dtype=torch.float64), atol=1e-3), proj
    torch.testing.assert_close(cheb.energy_shares, proj, atol=1e-5, rtol=0)

    _, evecs = eig.eigenbasis("cpu", torch.float32)
    e = ((evecs.double().T @ xd) ** 2).sum(1)
    max_mode = float(e.max() / e.sum())
    assert (proj - eig.energy_shares).abs().max() <= max_mode + 1e-3

    assert (cheb.band_edges - eig.band_edges).abs().max() <= np.pi / (order + 2), (cheb.band_edges, eig.band_edges)

    leak = sum(float(((b_cheb[k] - b_eig[k]).double() ** 2).sum()) for k in range(m)) / float((xd ** 2).sum())
    assert leak <= 2.5 * (m - 1) / order, leak
    norm_cheb = band_energy_shares(b_cheb, kind="norm")
    norm_eig = band_energy_shares(b_eig, kind="norm")
    assert (norm_cheb - norm_eig).abs().max() <= 0.05, (norm_cheb, norm_eig)


def test_chebyshev_filters_equal_their_spectral_responses(graph):
    """The sparse recurrence computes exactly U h_m(Λ) Uᵀ X for the polynomial responses h_m, which form a
    partition of unity with values in [0, 1] (Jackson kernel is positive); the moments are Σ_k e_k T_j(λ_k - 1)."""
    adj, x, lam, u = graph
    order = 24
    dec = SpectralBandDecomposer(adj, 3, "chebyshev", cheb_order=order)
    bands = dec(x).double().numpy()
    grid = np.linspace(0.0, 2.0, 2001)
    resp = dec.band_responses(grid)
    assert np.allclose(resp.sum(0), 1.0, atol=1e-12)
    assert resp.min() >= -1e-9 and resp.max() <= 1 + 1e-9
    # low-pass / high-pass: the low band keeps λ = 0 and drops λ = 2, the last band the opposite
    assert resp[0, 0] > 0.999 and resp[0, -1] < 1e-3 and resp[-1, -1] > 0.999 and resp[-1, 0] < 1e-3

    coeff = u.T @ x.double().numpy()
    h = dec.band_responses(lam)
    for k in range(3):
        np.testing.assert_allclose(bands[k], u @ (h[k][:, None] * coeff), atol=2e-5 * np.abs(bands).max())

    e = (coeff ** 2).sum(1)
    t = np.cos(np.arange(order + 1)[:, None] * np.arccos(np.clip(lam - 1.0, -1, 1))[None, :])  # T_j(λ-1)
    np.testing.assert_allclose(dec.moments, t @ e, rtol=1e-4, atol=1e-4 * e.sum())
    # edges solve F(λ_j) = j/3 for the KPM CDF
    np.testing.assert_allclose(dec.energy_cdf(dec.band_edges.numpy()), [1 / 3, 2 / 3], atol=1e-6)
    # chebyshev_moments uses ⌈K/2⌉ products: compare with the dense T_j(L - I)
    small = bipartite_adj(20, 15, 3, seed=5)
    xs = torch.randn(35, 3, dtype=torch.float64)
    mats = dense_cheb(small.to_dense().double().numpy(), 7)
    expect = [float(np.sum(xs.numpy() * (t_j @ xs.numpy()))) for t_j in mats]
    np.testing.assert_allclose(chebyshev_moments(small.double().to_sparse_csr(), xs, 7), expect, rtol=1e-10,
                               atol=1e-10)


def test_equal_energy_edges_of_a_flat_spectrum():
    """For E uniform in arccos(x) (moments δ_k0) the KPM CDF is (π - θ)/π, so edges are cos(π(1 - j/M))."""
    edges = equal_energy_edges(np.eye(1, 33)[0], 4)
    np.testing.assert_allclose(edges, np.cos(np.pi * (1 - np.arange(1, 4) / 4)), atol=1e-9)
    np.testing.assert_allclose(equal_energy_edges(np.zeros(9), 3), [-1 / 3, 1 / 3])  # zero signal


class NoHugeTensors(TorchDispatchMode):
    """Fails any op that produces a dense tensor with more than ``limit`` elements."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.largest = limit, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.largest = max(self.largest, t.numel())
                if t.numel() > self.limit:
                    raise AssertionError(f"{func} produced a dense tensor of {tuple(t.shape)}")
        return out


@pytest.mark.slow
def test_chebyshev_runs_at_scale_without_dense_matrices():
    """200k nodes: an N x N float matrix would be 160 GB; every dense tensor must stay O(M·N·D)."""
    n_half, width, m = 100_000, 8, 3
    adj = bipartite_adj(n_half, n_half, 10, seed=7).to_sparse_csr()
    n = adj.shape[0]
    x = torch.randn(n, width, generator=torch.Generator().manual_seed(8), requires_grad=True)
    dec = SpectralBandDecomposer(adj, m, "auto", cheb_order=16)
    assert dec.method == "chebyshev"
    guard = NoHugeTensors(limit=(m + 1) * n * width)
    with guard:
        bands = dec(x)
        (bands * torch.arange(1.0, m + 1).view(m, 1, 1)).sum().backward()
    assert guard.largest <= (m + 1) * n * width < n * n
    torch.testing.assert_close(bands.sum(0), x.detach(), atol=1e-5, rtol=0)
    assert torch.allclose(dec.energy_shares, torch.full((m,), 1 / m, dtype=torch.float64), atol=2e-3)
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------
# reference bank
# ---------------------------------------------------------------------------------------------------------------
def test_reference_bank_equals_closed_form():
    adj = bipartite_adj(40, 30, 4, seed=9, isolated=2)
    x = smooth_signal(adj, 6, seed=10)
    a = adj.to_dense().double().numpy()
    xn = x.double().numpy()
    eye = np.eye(a.shape[0])
    a2, a3 = a @ a, a @ a @ a
    a4, a5 = a3 @ a, a3 @ a2
    low = (eye + 0.5 * a) @ xn

    def check(m, k_poly, expected):
        bands = SpectralBandDecomposer(adj, m, "reference", k_poly=k_poly)(x).double().numpy()
        expected = expected + [xn - sum(expected)]
        assert bands.shape[0] == m
        for got, want in zip(bands, expected):
            np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(xn).max())

    mid3 = (-0.8 * eye + 0.9 * a + 1.6 * a2 - 1.2 * a3) @ xn
    check(3, 5, [low, mid3])  # docs/ssr.md: low = (I + 0.5Â)X, mid = (-0.8I + 0.9Â + 1.6Â² - 1.2Â³)X
    check(3, 9, [low, mid3])  # orders above 3 are never used for M = 3
    check(3, 2, [low, (-0.8 * eye + 1.6 * a2) @ xn])  # ... and orders above k_poly are dropped
    check(2, 5, [low])
    # M = 4, K = 5: orders [2, 3, 4, 5] dealt round-robin -> band 1 gets (2, 4), band 2 gets (3, 5)
    t2, t3 = 2 * a2 - eye, -4 * a3 + 3 * a  # T_k(-Â)
    t4, t5 = 8 * a4 - 8 * a2 + eye, -16 * a5 + 20 * a3 - 5 * a
    check(4, 5, [low, (0.8 * t2 + 0.3 * t4) @ xn, (0.8 * t3 + 0.3 * t5) @ xn])
    # M = 5, K = 3: orders [2, 3] over three middle bands -> the third gets none (zero band)
    check(5, 3, [low, 0.8 * t2 @ xn, 0.8 * t3 @ xn, 0 * xn])
    # M = 4, K = 7: band 1 gets (2, 4, 6) with 0.8, 0.3, 0.1125
    c = reference_coefficients(4, 7)
    assert np.allclose(c[1], [0, 0, 0.8, 0, 0.3, 0, 0.1125, 0]) and np.allclose(c[2], [0, 0, 0, 0.8, 0, 0.3, 0, 0.1125])


# ---------------------------------------------------------------------------------------------------------------
# gradients, options, errors
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["eigen", "chebyshev", "reference"])
def test_gradients_flow_to_x(method):
    adj = bipartite_adj(9, 7, 3, seed=11, isolated=1)
    x = torch.randn(17, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(12), requires_grad=True)
    dec = SpectralBandDecomposer(adj, 3, method, cheb_order=9, refresh_every=0, track_edges=False)
    dec(x.detach())  # fix the (detached) edges, so the map is linear in x
    assert torch.autograd.gradcheck(dec, (x,), eps=1e-6, atol=1e-6)
    # float32 path: the gradient of Σ_m w_m ⟨R_m, band_m⟩ is nonzero and finite
    x32 = x.detach().float().requires_grad_(True)
    bands = SpectralBandDecomposer(adj, 4, method, cheb_order=9)(x32)
    (bands * torch.randn_like(bands)).sum().backward()
    assert torch.isfinite(x32.grad).all() and x32.grad.abs().sum() > 0


@pytest.mark.parametrize("method, chunk, order", [("chebyshev", None, 9), ("chebyshev", 2, 9), ("chebyshev", None, 1),
                                                   ("reference", None, 5), ("eigen", None, 9)])
def test_bands_at_rows_equal_the_rows_of_the_full_bands(method, chunk, order):
    """The training path (bands of a few rows, row-sparse gradient) is the full decomposition restricted to them:
    same values, same gradient, same edges and energy shares afterwards; gradcheck'ed in float64."""
    adj = bipartite_adj(30, 24, 4, seed=21, isolated=2)
    x = torch.randn(56, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(22), requires_grad=True)
    rows = torch.tensor([0, 3, 4, 17, 29, 30, 41, 54, 55])  # 55: an isolated node
    weights = torch.randn(len(rows), 3, 5, dtype=torch.float64)
    results = []
    for rows_only in (False, True):
        dec = SpectralBandDecomposer(adj, 3, method, cheb_order=order, col_chunk=chunk, refresh_every=0)
        for _ in range(2):  # the second call runs on tracked (free) moments
            bands = dec.bands_at(x, rows) if rows_only else dec(x)[:, rows].transpose(0, 1)
        grad, = torch.autograd.grad((bands * weights).sum(), x)
        results.append((bands.detach(), grad, dec.band_edges, dec.energy_shares))
    (full, full_grad, full_edges, full_shares), (part, part_grad, part_edges, part_shares) = results
    torch.testing.assert_close(part, full, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(part_grad, full_grad, atol=1e-12, rtol=1e-10)
    if full_edges is not None:
        torch.testing.assert_close(part_edges, full_edges)
    if method == "chebyshev":  # shares from the pass's own moments = projections of the full bands
        torch.testing.assert_close(part_shares, full_shares, atol=1e-10, rtol=0)
    dec = SpectralBandDecomposer(adj, 3, method, cheb_order=order, refresh_every=0, track_edges=False)
    dec(x.detach())
    assert torch.autograd.gradcheck(lambda v: dec.bands_at(v, rows), (x,), eps=1e-6, atol=1e-6)


def plain_bank(adj, x, coefficients, rows=None):
    """The filter bank written the obvious way, differentiated by autograd: T_k(-Â) x by the three-term recurrence
    with ``torch.sparse.mm`` (COO, 64-bit indices, fresh tensors), band_m = Σ_k c_mk T_k x, last band the rest."""
    coo = adj.to_sparse_coo().coalesce().to(x.dtype) if adj.layout != torch.sparse_coo else adj.to(x.dtype)
    prev, cur = x, -torch.sparse.mm(coo, x)
    terms = [prev, cur]
    for _ in range(2, coefficients.shape[1]):
        prev, cur = cur, -2.0 * torch.sparse.mm(coo, cur) - prev
        terms.append(cur)
    bands = [sum(float(c) * t for c, t in zip(row, terms) if c != 0.0) for row in coefficients]
    bands = torch.stack(bands + [x - sum(bands)])
    return bands if rows is None else bands[:, rows].transpose(0, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows_only", [False, True])
def test_fast_filter_equals_the_plain_recursion(dtype, rows_only):
    """The filter SSR trains with (32-bit CSR indices, fused in-place recurrence in reused buffers, Clenshaw
    backward that starts without a zero buffer and hands its last buffer to autograd) gives the values and the
    gradient of the plain recursion, for the full bank and the row-restricted one, in float32 (SSR's dtype) and
    float64; and a gradient handed to autograd is never overwritten by a later call."""
    adj = bipartite_adj(70, 50, 4, seed=31, isolated=2)
    generator = torch.Generator().manual_seed(32)
    x = torch.randn(122, 6, generator=generator).to(dtype)
    rows = torch.tensor([0, 2, 3, 40, 69, 70, 71, 100, 121])
    dec = SpectralBandDecomposer(adj, 3, "chebyshev", cheb_order=12, refresh_every=0, track_edges=False)
    assert dec.bands.adjacency("cpu", dtype).crow_indices().dtype == torch.int32
    dec(x)  # fixes the edges: the map is linear in x from here on
    coefficients = dec.coefficients
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-12, "rtol": 1e-10}
    gradients = []
    for call in range(2):
        weights = torch.randn((len(rows), 3, 6) if rows_only else (3, 122, 6), generator=generator).to(dtype)
        fast_x, plain_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        fast = dec.bands_at(fast_x, rows) if rows_only else dec(fast_x)
        plain = plain_bank(adj, plain_x, coefficients, rows if rows_only else None)
        torch.testing.assert_close(fast, plain, **tolerance)
        (fast * weights).sum().backward()
        (plain * weights).sum().backward()
        torch.testing.assert_close(fast_x.grad, plain_x.grad, **tolerance)
        gradients.append((fast_x.grad, fast_x.grad.clone()))
    kept, snapshot = gradients[0]
    assert torch.equal(kept, snapshot)  # the second call did not write into the first call's gradient


def test_workspace_memory_is_bounded_by_the_largest_request():
    """Row counts change every training step: the scratch buffers grow to the largest count and are reused."""
    from recbole_ssr.model.spectral import Workspace

    workspace, like = Workspace(), torch.zeros(1)
    views = [workspace.get("rows", (n, 4), like) for n in (5, 3, 7, 2, 7, 6)]
    assert [tuple(v.shape) for v in views] == [(5, 4), (3, 4), (7, 4), (2, 4), (7, 4), (6, 4)]
    assert all(v.is_contiguous() for v in views)
    assert len(workspace._buffers) == 1 and workspace._buffers[("rows", (4,), like.dtype, like.device)].shape[0] == 7
    assert views[3].data_ptr() == views[2].data_ptr()  # smaller requests reuse the grown buffer


def test_column_chunks_give_identical_results():
    adj = bipartite_adj(50, 40, 5, seed=13)
    x = torch.randn(90, 7, dtype=torch.float64, requires_grad=True)
    r = torch.randn(4, 90, 7, dtype=torch.float64)
    out = []
    for chunk in (None, 3):
        dec = SpectralBandDecomposer(adj, 4, "chebyshev", cheb_order=12, col_chunk=chunk)
        bands = dec(x)
        grad, = torch.autograd.grad((bands * r).sum(), x)
        out.append((bands.detach(), grad, dec.band_edges))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_refresh_and_edge_tracking():
    adj = bipartite_adj(60, 50, 5, seed=14)
    x1, x2 = smooth_signal(adj, 6, seed=15), torch.randn(110, 6)
    exact = SpectralBandDecomposer(adj, 3, "chebyshev", cheb_order=16)
    exact(x1)
    edges1 = exact.band_edges.clone()
    exact(x2)
    edges2 = exact.band_edges.clone()
    assert (edges1 - edges2).abs().max() > 1e-3  # the two signals really have different edges

    lagged = SpectralBandDecomposer(adj, 3, "chebyshev", cheb_order=16, refresh_every=3)
    lagged(x1)  # call 0: exact; measures x1's moments for free while filtering
    torch.testing.assert_close(lagged.band_edges, edges1)
    lagged(x2)  # call 1: edges from x1's free moments (one call stale)
    torch.testing.assert_close(lagged.band_edges, edges1, atol=1e-6, rtol=0)
    lagged(x2)  # call 2: from x2's free moments
    torch.testing.assert_close(lagged.band_edges, edges2, atol=1e-6, rtol=0)

    frozen = SpectralBandDecomposer(adj, 3, "chebyshev", cheb_order=16, refresh_every=0, track_edges=False)
    frozen(x1)
    frozen(x2)
    torch.testing.assert_close(frozen.band_edges, edges1)
    frozen.refresh()
    frozen(x2)
    torch.testing.assert_close(frozen.band_edges, edges2)


def test_edge_signal_sets_the_borders():
    """The reference measures band energy on [R | Q]; the bands of R + Q must then use those borders."""
    adj = bipartite_adj(40, 35, 4, seed=16)
    r, q = smooth_signal(adj, 4, seed=17), torch.randn(75, 4)
    for method in ("eigen", "chebyshev"):
        on_cat = SpectralBandDecomposer(adj, 3, method)
        on_cat(torch.cat([r, q], 1))
        dec = SpectralBandDecomposer(adj, 3, method)
        bands = dec(r + q, edge_signal=torch.cat([r, q], 1))
        torch.testing.assert_close(dec.band_edges, on_cat.band_edges)
        torch.testing.assert_close(bands.sum(0), r + q, atol=1e-5, rtol=0)


def test_auto_switch_and_eigen_limit():
    adj = bipartite_adj(30, 30, 4, seed=18)
    assert SpectralBandDecomposer(adj, 3, "auto", eigen_max_nodes=60).method == "eigen"
    assert SpectralBandDecomposer(adj, 3, "auto", eigen_max_nodes=59).method == "chebyshev"
    with pytest.raises(ValueError, match="eigen_max_nodes=59"):
        SpectralBandDecomposer(adj, 3, "eigen", eigen_max_nodes=59)
    with pytest.raises(ValueError, match="unknown band_method"):
        SpectralBandDecomposer(adj, 3, "wavelet")
    with pytest.raises(ValueError, match="x must be"):
        SpectralBandDecomposer(adj, 3, "chebyshev")(torch.randn(59, 2))


@pytest.mark.parametrize("method", ["eigen", "chebyshev", "reference"])
def test_zero_signal_single_band_and_isolated_nodes(method):
    adj = bipartite_adj(20, 10, 3, seed=19, isolated=3)
    zero = torch.zeros(33, 4)
    bands = SpectralBandDecomposer(adj, 3, method)(zero)
    assert torch.equal(bands, torch.zeros(3, 33, 4))
    x = torch.randn(33, 4)
    one = SpectralBandDecomposer(adj, 1, method)(x)
    assert one.shape == (1, 33, 4) and torch.equal(one[0], x)
    # a signal on the isolated nodes only lies in the λ = 1 eigenspace, and so does every band of it
    iso = torch.zeros(33, 4)
    iso[-3:] = 1.0
    bands = SpectralBandDecomposer(adj, 2, method)(iso)
    torch.testing.assert_close(bands.sum(0), iso, atol=1e-6, rtol=0)
    lap = torch.eye(33) - adj.to_dense()
    for band in bands:
        assert (lap @ band - band).abs().max() < 1e-5


def test_sparse_kernel_benchmark_variants_compute_the_same_product():
    """benchmarks/sparse_kernel.py: its generated graph has the requested shape, and the variants it times
    (column blocks, int32 indices, the fused recursion in reused buffers) give the plain product's numbers."""
    import os
    import sys

    from conftest import REPO_ROOT

    sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))
    import sparse_kernel

    from recbole_ssr.model.graph import bipartite_adjacency

    users, items, n_users, n_items = sparse_kernel.generated_edges(users=60, items=40, edges=300, seed=3)
    assert (n_users, n_items) == (60, 40) and set(users.tolist()) == set(range(60)) and items.max() < 40
    coo = bipartite_adjacency(users, items, n_users, n_items)
    csr32 = sparse_kernel.csr_int32(coo.to_sparse_csr())
    assert csr32.col_indices().dtype == torch.int32
    x = torch.randn(100, 10, generator=torch.Generator().manual_seed(4))
    plain = torch.sparse.mm(coo, x)
    assert torch.equal(torch.addmm(torch.empty(100, 10), csr32, x, beta=0.0), plain)  # int32 indices: same bits
    # column blocks: the same sums, but MKL picks its kernel by width, so rounding may differ (4 columns here)
    torch.testing.assert_close(sparse_kernel.column_blocked(csr32, x, torch.empty(100, 10), 4), plain,
                               atol=1e-6, rtol=1e-6)
    rows = torch.tensor([1, 5, 60, 99])
    buffers = [torch.empty(100, 10), torch.empty(100, 10), torch.empty(4, 10), torch.empty(4, 10)]
    expected = sparse_kernel.chebyshev_plain(coo, x, 6, rows)
    torch.testing.assert_close(sparse_kernel.chebyshev_fused(csr32, x, 6, rows, buffers, 3), expected,
                               atol=1e-5, rtol=1e-5)
