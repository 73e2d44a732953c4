"""Run the benchmarks: `python -m bench [--quick] [PART ...]`; results go to bench/results/*.json."""

from __future__ import annotations

import argparse
import sys

from bench import fastagi, index


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller data sets (a smoke run, not for the README)")
    parser.add_argument("parts", nargs="*", metavar="PART", help="index, fastagi (default: all)")
    args = parser.parse_args()
    parts = {"index": index, "fastagi": fastagi}
    for part in args.parts or list(parts):
        module = parts[part]
        print(module.table(module.run(args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
