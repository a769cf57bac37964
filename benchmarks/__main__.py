"""`python -m benchmarks [--data DIR] [NAME...]` (`make bench`): run every `benchmarks/bench_*.py` module's ``main()``.

Modules are found by globbing, so a new `bench_<name>.py` is picked up without touching this file. With NAMEs,
only the modules whose name contains one of them run (e.g. `python -m benchmarks normalize`). The heavy ones in
``ON_REQUEST`` run only when named (`make bench-scale` runs `bench_scale` with its own flags).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

from benchmarks import CORPUS_ENV, DATA_HELP

ON_REQUEST = {"bench_scale"}  # tens of minutes of CPU: not part of `make bench`


def modules(names: list[str]) -> list[str]:
    found = sorted(p.stem for p in Path(__file__).resolve().parent.glob("bench_*.py"))
    return [m for m in found if any(n in m for n in names)] if names else [m for m in found if m not in ON_REQUEST]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--data", type=Path, help=DATA_HELP)
    parser.add_argument("names", nargs="*", metavar="NAME", help="run only the modules whose name contains one")
    args = parser.parse_args(argv)
    if args.data:
        os.environ[CORPUS_ENV] = str(args.data.resolve())  # every module reads it through benchmarks.corpus()
    selected = modules(args.names)
    if not selected:
        print(f"no benchmark module matches {args.names}", file=sys.stderr)
        return 1
    for name in selected:
        print(f"=== {name} ===", flush=True)
        start = time.perf_counter()
        importlib.import_module(f"{__package__ or 'benchmarks'}.{name}").main()
        print(f"=== {name}: {time.perf_counter() - start:.1f} s ===\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
