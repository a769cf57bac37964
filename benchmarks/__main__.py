"""`python -m benchmarks [NAME...]` (`make bench`): run every `benchmarks/bench_*.py` module's ``main()``.

Modules are found by globbing, so a new `bench_<name>.py` is picked up without touching this file. With NAMEs,
only the modules whose name contains one of them run (e.g. `python -m benchmarks normalize`).
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path


def modules(names: list[str]) -> list[str]:
    found = sorted(p.stem for p in Path(__file__).resolve().parent.glob("bench_*.py"))
    return [m for m in found if not names or any(n in m for n in names)]


def main(argv: list[str] | None = None) -> int:
    names = sys.argv[1:] if argv is None else argv
    selected = modules(names)
    if not selected:
        print(f"no benchmark module matches {names}", file=sys.stderr)
        return 1
    for name in selected:
        print(f"=== {name} ===", flush=True)
        start = time.perf_counter()
        importlib.import_module(f"{__package__ or 'benchmarks'}.{name}").main()
        print(f"=== {name}: {time.perf_counter() - start:.1f} s ===\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
