"""numpy.polynomial in float64: the independent oracle for values, derivatives and fits."""

import numpy as np
from numpy.polynomial import chebyshev, hermite, hermite_e, laguerre, legendre, polynomial

_MODULES = {
    "power": (polynomial, "poly"),
    "chebyshev": (chebyshev, "cheb"),
    "legendre": (legendre, "leg"),
    "hermite": (hermite, "herm"),
    "hermite_e": (hermite_e, "herme"),
    "laguerre": (laguerre, "lag"),
}


def _fn(basis, suffix):
    module, prefix = _MODULES[basis]
    return getattr(module, prefix + suffix)


def mapped(x, domain):
    """numpy's mapdomain onto the window [-1, 1]."""
    x = np.asarray(x, dtype=np.float64)
    if domain is None:
        return x
    return np.polynomial.polyutils.mapdomain(x, np.asarray(domain, dtype=np.float64), np.array([-1.0, 1.0]))


def vander(x, degree, basis, domain=None):
    return _fn(basis, "vander")(mapped(x, domain), degree)


def val(x, c, basis, domain=None, derivative=0):
    """sum_k c[k] P_k(t) (or its derivative-th x-derivative) for 1-D c, at every element of x."""
    c = np.asarray(c, dtype=np.float64)
    scale = 1.0
    if domain is not None:
        scale = 2.0 / (domain[1] - domain[0])
    if derivative:
        c = _fn(basis, "der")(c, derivative, scl=scale)
    return _fn(basis, "val")(mapped(x, domain), c)


def abs_val(x, c, basis, domain=None):
    """sum_k |c_k| |P_k(t)|: the scale against which rounding errors of val are measured."""
    V = np.abs(vander(np.ravel(x), len(c) - 1, basis, domain))
    return (V @ np.abs(np.asarray(c, dtype=np.float64))).reshape(np.shape(x))


def fit(x, y, degree, basis, w=None, domain=None):
    """(coeffs, residuals): numpy's *fit with full=True, on the mapped x."""
    c, info = _fn(basis, "fit")(mapped(x, domain), np.asarray(y, dtype=np.float64), degree, w=w, full=True)
    return c, info[0]
