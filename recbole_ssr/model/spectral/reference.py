"""``reference`` bands: the authors' fixed Chebyshev bank of L̃ = L - I (their large-graph path; not
equal-energy). Coefficients: :func:`~recbole_ssr.model.spectral.polynomial.reference_coefficients`.

M = 3: low = T_0 - 0.5 T_1 = (I + 0.5Â) X, mid = 0.8 T_2 + 0.3 T_3 = (-0.8I + 0.9Â + 1.6Â² - 1.2Â³) X (orders above 3
unused whatever ``k_poly``; terms above ``k_poly`` dropped), high = X - low - mid.
M != 3: band 0 = T_0 - 0.5 T_1; the orders 2..K (K = ``k_poly``) are dealt round-robin to the M - 2 middle bands
(middle band i gets orders [2..K][i::M-2], despite the reference's comment saying "contiguous") with coefficient
0.8 · 0.375^j for the j-th order it receives; the last band is the residual. M = 2 gives [low, X - low]; middle
bands left without an order (K - 1 < M - 2) are zero.
"""

import numpy as np

from recbole_ssr.model.spectral.polynomial_bands import PolynomialBands
from recbole_ssr.model.spectral.polynomial import reference_coefficients


class ReferenceBands(PolynomialBands):
    """The fixed bank up to order ``k_poly``, trimmed after its last non-zero order; no band edges."""

    name = "reference"

    def __init__(self, adj, num_bands, k_poly=5, col_chunk=None):
        super().__init__(adj, num_bands, col_chunk)
        coeffs = reference_coefficients(self.num_bands, k_poly)
        nonzero = np.flatnonzero(np.abs(coeffs).sum(0)) if coeffs.size else np.zeros(0, dtype=int)
        self.coefficients = coeffs[:, :int(nonzero.max()) + 1] if nonzero.size else coeffs[:, :1]

    def new_state(self):
        state = super().new_state()
        state.coefficients = self.coefficients
        return state
