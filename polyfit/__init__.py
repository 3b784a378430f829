"""polyfit: fused, differentiable polynomial bases, series and fits for PyTorch.

    import polyfit
    y = polyfit.polyval(x, coeffs, "chebyshev")      # coefficients lowest degree first
    V = polyfit.features(x, degree=8, basis="legendre", domain=(0, 10))
"""

from ._ops import BASES, features, polyval

__version__ = "0.1.0"

__all__ = ["BASES", "features", "polyval", "__version__"]
