"""polyfit: fused, differentiable polynomial bases, series and fits for PyTorch.

    import polyfit
    y = polyfit.polyval(x, coeffs, "chebyshev")      # coefficients lowest degree first
    V = polyfit.features(x, degree=8, basis="legendre", domain=(0, 10))
    f = polyfit.fit(x, y, degree=5, basis="chebyshev")  # batched least squares; f.coeffs, f(x_new)
    layer = polyfit.nn.PolyLinear(256, 256, degree=8)    # fused Kolmogorov-Arnold layer
"""

from ._ops import BASES, features, polylinear, polyval
from .fit import Fit, RankWarning, fit
from . import nn
from .cache import cache_info, empty_cache, set_cache_capacity

__version__ = "0.1.0"

__all__ = ["BASES", "features", "polyval", "polylinear", "fit", "Fit", "RankWarning", "nn", "cache_info", "empty_cache",
           "set_cache_capacity", "__version__"]
