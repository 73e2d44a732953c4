"""Issue-2 benchmarks: in-process decision latency, import and scrub throughput, bytes per record.

Each part runs against its own private redis-server on loopback (so the memory figure is this data only).
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.common import consent_rows, mobile, percentiles, save, us, write_csv
from gatekeeper.cli import main
from gatekeeper.compose import dry_gate
from gatekeeper.config import Settings, parse
from gatekeeper.devservers import PrivateRedis
from gatekeeper.gate import CallRequest
from gatekeeper.index.loader import Loader
from gatekeeper.index.store import ConsentIndex

AT = dt.datetime(2026, 12, 1, 10, 30, tzinfo=dt.UTC)


def settings_for(url: str) -> Settings:
    return parse(
        {
            "index": {"redis_url": url, "pepper": "bench-pepper-0123456789", "prefix": "gk"},
            "campaigns": {"acme-sales": {"tenant": "acme", "caller_ids": ["+31201234567"]}},
        },
        "bench",
        {},
    )


async def decision_latency(url: str, records: int, calls: int) -> dict[str, Any]:
    settings = settings_for(url)
    index = ConsentIndex.from_settings(settings.index)
    with tempfile.TemporaryDirectory() as tmp:
        await Loader(index).load(write_csv(Path(tmp) / "c.csv", consent_rows(records)), region="NL", replace=True)
    await index.warm()
    gate = dry_gate(settings, index)
    rng = random.Random(1)
    requests = [
        CallRequest(mobile(rng.randrange(records * 2)), "acme-sales", "+31201234567", 0, AT) for _ in range(calls)
    ]
    for r in requests[:2000]:
        await gate.check(r)
    samples = []
    for r in requests:
        t0 = time.perf_counter()
        await gate.check(r)
        samples.append(time.perf_counter() - t0)
    floor = []
    raw = aioredis.Redis.from_url(url)
    await raw.set("k", "v")
    for _ in range(calls):
        t0 = time.perf_counter()
        await raw.get("k")
        floor.append(time.perf_counter() - t0)
    await raw.aclose()
    await index.close()
    return {"decision": percentiles(samples), "redis_get": percentiles(floor), "records": records}


async def import_and_memory(url: str, records: int) -> dict[str, Any]:
    settings = settings_for(url)
    index = ConsentIndex.from_settings(settings.index)
    before = (await index.client.info("memory"))["used_memory"]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_csv(Path(tmp) / "c.csv", consent_rows(records))
        t0 = time.perf_counter()
        report = await Loader(index).load(path, region="NL", replace=True)
        seconds = time.perf_counter() - t0
    after = (await index.client.info("memory"))["used_memory"]
    encodings: dict[str, int] = {}
    sample = 0
    async for key in index.client.scan_iter(match="gk:*:d:*", count=1000):
        enc = (await index.client.object("encoding", key)).decode()
        encodings[enc] = encodings.get(enc, 0) + 1
        sample += 1
        if sample >= 2000:
            break
    await index.close()
    assert report.accepted == records, report.errors[:3]
    return {
        "records": records,
        "seconds": seconds,
        "rows_per_second": records / seconds,
        "bytes_per_record": (after - before) / records,
        "used_memory_delta": after - before,
        "bucket_encodings_sampled": encodings,
    }


async def scrub_throughput(url: str, records: int, rows: int) -> dict[str, Any]:
    settings = settings_for(url)
    index = ConsentIndex.from_settings(settings.index)
    with tempfile.TemporaryDirectory() as tmp:
        await Loader(index).load(write_csv(Path(tmp) / "c.csv", consent_rows(records)), region="NL", replace=True)
        await index.close()
        source = Path(tmp) / "list.csv"
        with source.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["name", "number"])
            for i in range(rows):
                w.writerow([f"customer {i}", mobile(i * 2)])
        config = Path(tmp) / "gk.toml"
        config.write_text(
            f'[index]\nredis_url = "{url}"\npepper = "bench-pepper-0123456789"\nprefix = "gk"\n'
            '[campaigns.acme-sales]\ntenant = "acme"\n'
        )
        t0 = time.perf_counter()
        code = await asyncio.to_thread(
            main,
            ["--config", str(config), "scrub", str(source), "-o", str(Path(tmp) / "out.csv"),
             "--campaign", "acme-sales", "--at", "2026-12-01T10:30"],
        )  # fmt: skip
        seconds = time.perf_counter() - t0
    assert code == 0
    return {"rows": rows, "seconds": seconds, "rows_per_second": rows / seconds}


def run(quick: bool = False) -> dict[str, Any]:
    big = 100_000 if quick else 1_000_000
    results: dict[str, Any] = {}
    with PrivateRedis() as server:
        results["decision"] = asyncio.run(decision_latency(server.url, 100_000, 5_000 if quick else 20_000))
    with PrivateRedis() as server:
        results["import"] = asyncio.run(import_and_memory(server.url, big))
    with PrivateRedis() as server:
        results["scrub"] = asyncio.run(scrub_throughput(server.url, 100_000, 50_000 if quick else 200_000))
    save("index", results)
    return results


def table(results: dict[str, Any]) -> str:
    d, g = results["decision"]["decision"], results["decision"]["redis_get"]
    i, s = results["import"], results["scrub"]
    return "\n".join(
        [
            "| measure | result |",
            "|---|---|",
            f"| decision latency in-process, Redis on loopback (p50 / p99) | {us(d['p50'])} / {us(d['p99'])} |",
            f"| floor: redis-py asyncio GET on the same Redis (p50 / p99) | {us(g['p50'])} / {us(g['p99'])} |",
            f"| import, snapshot of {i['records']:,} consents | {i['rows_per_second']:,.0f} rows/s |",
            f"| memory per (tenant, number) record, {i['records']:,} records | {i['bytes_per_record']:.1f} bytes |",
            f"| scrub of {s['rows']:,} numbers (CSV in, CSV out) | {s['rows_per_second']:,.0f} rows/s |",
        ]
    )
