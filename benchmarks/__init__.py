"""polyfit's benchmark suite: `python -m benchmarks --quick` (see benchmarks/README.md).

Cases come from generators registered per op (`benchmarks.registry.register`); other modules
named benchmarks/cases_*.py are imported automatically and register their own ops.
"""

from .registry import Case, Grid, Peer, add_to_preset, register

__all__ = ["Case", "Grid", "Peer", "add_to_preset", "register"]
