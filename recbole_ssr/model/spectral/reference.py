"""``reference`` bands: the authors' fixed Chebyshev bank of L̃ = L - I (their large-graph path; not
equal-energy). Coefficients: :func:`~recbole_ssr.model.spectral.polynomial.reference_coefficients`."""

import numpy as np

from recbole_ssr.model.spectral.chebyshev import PolynomialBands
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
