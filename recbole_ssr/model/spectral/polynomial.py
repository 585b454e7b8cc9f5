"""Kernel-polynomial maths of the band filters, on tiny numpy float64 arrays of K + 1 numbers (no graph here).

Notation as in :mod:`recbole_ssr.model.spectral` and docs/ssr.md ("Stage (i)"): the filters are polynomials in
L̃ = L - I = -Â (spectrum in [-1, 1]) written in the Chebyshev basis T_k; μ_k are the Chebyshev moments of a
signal's spectral energy distribution; g_k the Jackson damping factors; s_k(a) the coefficients of the step
1{x < a}.
"""

import math

import numpy as np


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


def soft_cdf(theta, mu, damp):
    """KPM energy CDF F(cos θ) (docs in :mod:`recbole_ssr.model.spectral`) for an array of θ; ``mu`` normalised so mu[0] = 1."""
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
        above = soft_cdf(mid, mu, damp) > targets  # F decreases with θ: root lies at larger θ
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return np.cos(0.5 * (lo + hi))


def band_coefficients(edges, order):
    """[M-1, K+1] Chebyshev coefficients (in L̃) of h_m = G_{m+1} - G_m, m < M-1 (last band = residual)."""
    damp = jackson_damping(order)
    steps = step_coefficients(edges, order) * damp  # [M-1, K+1], G_1..G_{M-1}
    previous = np.vstack([np.zeros((1, order + 1)), steps[:-1]])
    return steps - previous


def reference_coefficients(num_bands, k_poly=5):
    """The reference's fixed bank as [M-1, k_poly+1] Chebyshev coefficients in L̃ = L - I (docs in :mod:`recbole_ssr.model.spectral`)."""
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


def shares_from_moments(coefficients, moments):
    """Projection energy shares from the signal's own moments: ⟨X, h_m(L) X⟩ = Σ_k c_mk μ_k (m < M-1), the last
    band the rest (same numbers as :func:`band_energy_shares` on the full bands, without forming them)."""
    mu = np.asarray(moments, dtype=np.float64)
    if not mu[0] > 0:
        return np.zeros(coefficients.shape[0] + 1)
    order = min(coefficients.shape[1], len(mu))
    shares = coefficients[:, :order] @ mu[:order] / mu[0]
    return np.append(shares, 1.0 - shares.sum())
