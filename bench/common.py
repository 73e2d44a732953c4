"""Shared helpers for the benchmarks: data generation, percentiles, result tables."""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def mobile(i: int) -> str:
    """The i-th of 40 million distinct, valid Dutch mobile numbers in national form."""
    block, rest = divmod(i, 10_000_000)
    return f"06{(1, 2, 3, 4, 5)[block % 5]}{rest:07d}"


def consent_rows(count: int, tenant: str = "acme", seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        start = f"20{rng.randint(21, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        rows.append(f"{tenant},{mobile(i)},consent,{start},,webform/{start[:4]}/{i:07d}")
    return rows


def write_csv(path: Path, rows: Sequence[str]) -> Path:
    with path.open("w") as f:
        f.write("tenant,number,kind,start,end,reference\n")
        for row in rows:
            f.write(row + "\n")
    return path


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))]

    return {
        "n": n,
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2) + "\n")
    return path


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"
