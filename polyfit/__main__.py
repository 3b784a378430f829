"""python -m polyfit {info, demo}"""

from __future__ import annotations

import argparse
import json
import sys


def info() -> None:
    from . import _backend, cache

    described = _backend.describe()
    try:
        described["cpu_output_memory"] = cache.cache_info()  # polyfit/cache.py
    except ValueError as e:  # an invalid POLYFIT_CPU_CACHE_MB
        described["cpu_output_memory"] = str(e)
    print(json.dumps(described, indent=2, default=str))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="polyfit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="which backend serves which device; what the extension was built against")
    demo_p = sub.add_parser("demo", help="the curve fit of samples of 5x^2 + 3, with polyfit as the drop-in")
    demo_p.add_argument("--steps", type=int, default=1000)
    demo_p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "info":
        info()
    elif args.command == "demo":
        from .demo import run

        run(steps=args.steps, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
