"""Issue-3 benchmarks: FastAGI sessions per second and session latency, against the floor.

The server runs in its own process (`bench/fastagi_server.py`, with uvloop when installed); a lean
simulated Asterisk (`bench/agi_client.py`: the same bytes as the test simulator for the commands
gatekeeper sends) runs here and measures each session from connect to close.
Back to back at concurrency 1, 10 and 100, and with sporadic arrival (one call every 5–50 ms, as a
dialler calls: caches go cold between calls).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import agi_client
from bench.common import consent_rows, mobile, percentiles, save, us, write_csv
from gatekeeper.config import load
from gatekeeper.devservers import PrivateRedis, free_port
from gatekeeper.index.loader import Loader
from gatekeeper.index.store import ConsentIndex

CONFIG = """
[index]
redis_url = "{url}"
pepper = "bench-pepper-0123456789"
[fastagi]
listen = "127.0.0.1:{port}"
max_sessions = 5000
[http]
listen = "127.0.0.1:{http}"
[log]
dsn = "sqlite:///{tmp}/decisions-{mode}.db"
instance = "{mode}"
ship_in_serve = {inline}
[campaigns.acme-sales]
tenant = "acme"
caller_ids = ["+31201234567"]
"""
RECORDS = 100_000


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(400):
        if proc.poll() is not None:
            raise RuntimeError("the benchmark server exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return
        except OSError:
            time.sleep(0.025)
    raise RuntimeError("the benchmark server did not start")


MODES = {
    "floor": "a bare responder",
    "gatekeeper": "gatekeeper serve; the decision-log shipper in a process of its own (ship_in_serve = false)",
    "inline": "gatekeeper serve with the shipper inside (the default)",
}


class Server:
    """The server under test in its own process; for `gatekeeper`, also `gatekeeper log ship` beside it."""

    def __init__(self, mode: str, redis_url: str, tmp: Path) -> None:
        self.port = free_port()
        self.out = tmp / f"{mode}.json"
        env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
        kind = "floor" if mode == "floor" else "gatekeeper"
        args = [sys.executable, "-m", "bench.fastagi_server", "--mode", kind, "--out", str(self.out)]
        self.shipper: subprocess.Popen[bytes] | None = None
        if mode == "floor":
            args += ["--port", str(self.port)]
        else:
            config = tmp / f"{mode}.toml"
            inline = "true" if mode == "inline" else "false"
            text = CONFIG.format(url=redis_url, port=self.port, http=free_port(), tmp=tmp, mode=mode, inline=inline)
            config.write_text(text)
            args += ["--config", str(config)]
            if mode == "gatekeeper":
                ship = [sys.executable, "-m", "gatekeeper.cli", "--config", str(config), "log", "ship"]
                self.shipper = subprocess.Popen(ship, env=env)
        self.proc = subprocess.Popen(args, env=env)
        wait_port(self.port, self.proc)

    def stop(self) -> list[float]:
        for proc in (self.proc, self.shipper):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        return list(json.loads(self.out.read_text())["latencies"])


async def back_to_back(port: int, concurrency: int, seconds: float) -> dict[str, Any]:
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        while time.perf_counter() < deadline:
            number = mobile(next(counter) % (RECORDS * 2))  # half have consent, half have none
            t0 = time.perf_counter()
            verdict = await agi_client.call(port, number)
            samples.append(time.perf_counter() - t0)
            if "GATEKEEPER_RESULT=" not in verdict:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"sessions_per_second": len(samples) / elapsed, "latency": percentiles(samples), "failures": failures}


async def sporadic(port: int, calls: int) -> dict[str, Any]:
    rng = random.Random(5)
    samples = []
    for i in range(calls):
        await asyncio.sleep(rng.uniform(0.005, 0.050))
        number = mobile((i * 7919) % (RECORDS * 2))
        t0 = time.perf_counter()
        await agi_client.call(port, number)
        samples.append(time.perf_counter() - t0)
    return {"latency": percentiles(samples)}


async def prepare(url: str, tmp: Path) -> None:
    config = tmp / "load.toml"
    config.write_text(CONFIG.format(url=url, port=0, http=0, tmp=tmp, mode="load", inline="true"))
    index = ConsentIndex.from_settings(load(config, env={}).index)
    await Loader(index).load(write_csv(tmp / "c.csv", consent_rows(RECORDS)), region="NL", replace=True)
    await index.close()


def agi_script(config: Path, calls: int) -> dict[str, Any]:
    """The classic AGI script: one process per call, from start to exit, as Asterisk runs it."""
    script = Path(sys.executable).with_name("gatekeeper-agi")
    env = {**os.environ, "GATEKEEPER_CONFIG": str(config)}
    samples, cpu = [], []
    for i in range(calls):
        before = os.times()
        t0 = time.perf_counter()
        done = subprocess.run(
            [str(script), "campaign=acme-sales"],
            input=agi_client.environment(mobile(i)) + b"200 result=0\n",
            capture_output=True,
            env=env,
            check=True,
        )
        samples.append(time.perf_counter() - t0)
        after = os.times()
        cpu.append((after.children_user - before.children_user) + (after.children_system - before.children_system))
        assert done.stdout.startswith(b"EXEC MSet"), done.stdout
    return {"wall": percentiles(samples), "cpu": percentiles(cpu)}


def run(quick: bool = False) -> dict[str, Any]:
    seconds = 1.5 if quick else 5.0
    results: dict[str, Any] = {}
    with PrivateRedis() as redis, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        asyncio.run(prepare(redis.url, tmp))
        for mode in MODES:
            server = Server(mode, redis.url, tmp)
            try:
                mode_results: dict[str, Any] = {}
                for concurrency in (1, 10, 100):
                    mode_results[f"c{concurrency}"] = asyncio.run(back_to_back(server.port, concurrency, seconds))
                mode_results["sporadic"] = asyncio.run(sporadic(server.port, 100 if quick else 300))
            finally:
                latencies = server.stop()
            if mode != "floor":
                mode_results["decision_time"] = percentiles(latencies)
                # The decisions of the sporadic run are the last ones made.
                mode_results["decision_time_sporadic"] = percentiles(latencies[-(100 if quick else 300) :])
            results[mode] = mode_results
        load_config = tmp / "load.toml"
        results["agi_script"] = agi_script(load_config, 5 if quick else 20)
    save("fastagi", results)
    return results


def table(results: dict[str, Any]) -> str:
    g, i, f = results["gatekeeper"], results["inline"], results["floor"]
    rows = [
        "| FastAGI (each server in its own process) | gatekeeper, shipper apart | gatekeeper, shipper inside "
        "| floor: bare responder | ratio to floor (shipper apart) |",
        "|---|---|---|---|---|",
    ]

    def pair(d: dict[str, Any]) -> str:
        return f"{us(d['p50'])} / {us(d['p99'])}"

    for c in ("c1", "c10", "c100"):
        n = c[1:]
        rate = [r[c]["sessions_per_second"] for r in (g, i, f)]
        rows.append(f"| concurrency {n}: sessions/s | {rate[0]:,.0f} | {rate[1]:,.0f} | {rate[2]:,.0f} | "
                    f"{rate[0] / rate[2]:.2f} |")  # fmt: skip
        lat = [r[c]["latency"] for r in (g, i, f)]
        rows.append(f"| concurrency {n}: session p50 / p99 | {pair(lat[0])} | {pair(lat[1])} | {pair(lat[2])} | "
                    f"{lat[0]['p99'] / lat[2]['p99']:.2f} |")  # fmt: skip
    sp = [r["sporadic"]["latency"] for r in (g, i, f)]
    rows.append(f"| sporadic (a call every 5–50 ms): session p50 / p99 | {pair(sp[0])} | {pair(sp[1])} | "
                f"{pair(sp[2])} | {sp[0]['p99'] / sp[2]['p99']:.2f} |")  # fmt: skip
    rows.append(f"| decision time (request parsed → verdict), all runs: p50 / p99 | {pair(g['decision_time'])} | "
                f"{pair(i['decision_time'])} | | |")  # fmt: skip
    rows.append(f"| decision time, sporadic arrival: p50 / p99 | {pair(g['decision_time_sporadic'])} | "
                f"{pair(i['decision_time_sporadic'])} | | |")  # fmt: skip
    a = results["agi_script"]
    rows.append(
        f"| classic AGI script `gatekeeper-agi`: per call wall / CPU (p50) | {a['wall']['p50'] * 1000:,.0f} ms / "
        f"{a['cpu']['p50'] * 1000:,.0f} ms | | | |"
    )
    return "\n".join(rows)
