"""FastAGI benchmarks: sessions per second, session latency and server CPU per session, side by side.

Four servers, each in a process of its own, driven by the same load generator (`bench/load.py`, a lean
simulated Asterisk on asyncio protocols with uvloop) in this process:

- `gatekeeper`: `gatekeeper serve` with the decision log's shipper in a process of its own
  (`[log] ship_in_serve = false` and `gatekeeper log ship` beside it), the production layout;
- `inline`: `gatekeeper serve` with the shipper inside (the default);
- `minimal`: a minimal honest gate (phonenumbers, one Redis GET, uvloop; no rule book, no evidence);
- `floor`: a bare responder that answers one fixed EXEC MSet (the cost of a FastAGI session itself).

Back to back at concurrency 1, 10 and 100, and sporadic arrival (one call every 20 ms, as a dialler at a
low rate: caches go cold between calls). Server CPU per session is read from /proc (user + system) of the
server process over each run; for gatekeeper it includes the decision record's XADD and everything else
a call costs, the shipper's CPU excluded (it is another process in the `gatekeeper` column).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import phonenumbers
import redis

from bench import load
from bench.common import consent_rows, mobile, percentiles, save, us, write_csv
from bench.fastagi_server import MINIMAL_PREFIX
from gatekeeper.config import load as load_config
from gatekeeper.devservers import PrivateRedis, free_port
from gatekeeper.index.loader import Loader
from gatekeeper.index.store import ConsentIndex

CONFIG = """
[index]
redis_url = "{url}"
pepper = "bench-pepper-0123456789"
[fastagi]
listen = "127.0.0.1:{port}"
[http]
listen = "127.0.0.1:{http}"
[log]
dsn = "sqlite:///{tmp}/decisions-{mode}.db"
instance = "{mode}"
ship_in_serve = {inline}
spool_dir = "{tmp}/spool-{mode}"
[campaigns.acme-sales]
tenant = "acme"
caller_ids = ["+31201234567"]
"""
RECORDS = 100_000
MODES = {
    "gatekeeper": "gatekeeper serve, the decision-log shipper in a process of its own",
    "inline": "gatekeeper serve with the shipper inside (the default)",
    "minimal": "a minimal honest gate: phonenumbers and one Redis GET, uvloop",
    "floor": "a bare responder: reads the environment, answers one fixed EXEC MSet",
}
SPORADIC_INTERVAL = 0.020  # seconds between calls


def number(i: int) -> str:
    return mobile(i % (RECORDS * 2))  # half have consent, half have none


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


class Server:
    """The server under test in its own process; for `gatekeeper`, also `gatekeeper log ship` beside it."""

    def __init__(self, mode: str, redis_url: str, tmp: Path) -> None:
        self.port = free_port()
        self.out = tmp / f"{mode}.json"
        env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
        kind = mode if mode in ("floor", "minimal") else "gatekeeper"
        args = [sys.executable, "-m", "bench.fastagi_server", "--mode", kind, "--out", str(self.out)]
        self.shipper: subprocess.Popen[bytes] | None = None
        if kind != "gatekeeper":
            args += ["--port", str(self.port), "--redis-url", redis_url]
        else:
            config = tmp / f"{mode}.toml"
            inline = "true" if mode == "inline" else "false"
            text = CONFIG.format(url=redis_url, port=self.port, http=free_port(), tmp=tmp, mode=mode, inline=inline)
            config.write_text(text)
            args += ["--config", str(config)]
            if mode == "gatekeeper":
                ship = [sys.executable, "-m", "gatekeeper.cli", "--config", str(config), "log", "ship"]
                self.shipper = subprocess.Popen(ship, env=env)
        with (tmp / f"{mode}.log").open("wb") as log:  # gatekeeper's JSON log lines, as the journal gets them
            self.proc = subprocess.Popen(args, env=env, stderr=log)
        wait_port(self.port, self.proc)

    def stop(self) -> list[float]:
        for proc in (self.proc, self.shipper):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        return list(json.loads(self.out.read_text())["latencies"])


def run_load(server: Server, work: Coroutine[Any, Any, load.Samples]) -> dict[str, Any]:
    """One run of the load generator (on uvloop) with the server's CPU measured around it."""
    import uvloop  # noqa: PLC0415 - a dev/fast extra, like the servers' own

    before = cpu_seconds(server.proc.pid)
    samples: load.Samples = uvloop.run(work)
    used = cpu_seconds(server.proc.pid) - before
    return {
        "sessions_per_second": samples.rate,
        "latency": percentiles(samples.latencies),
        "server_cpu_per_session": used / max(1, len(samples.latencies)),
        "failures": samples.failures,
    }


async def prepare(url: str, tmp: Path) -> None:
    """The consent index for gatekeeper, and the minimal gate's keys (E.164 -> 1) for the same numbers."""
    config = tmp / "load.toml"
    config.write_text(CONFIG.format(url=url, port=0, http=0, tmp=tmp, mode="load", inline="true"))
    index = ConsentIndex.from_settings(load_config(config, env={}).index)
    await Loader(index).load(write_csv(tmp / "c.csv", consent_rows(RECORDS)), region="NL", replace=True)
    await index.close()
    client = redis.Redis.from_url(url)
    pipe = client.pipeline(transaction=False)
    for i in range(RECORDS):
        e164 = phonenumbers.format_number(phonenumbers.parse(mobile(i), "NL"), phonenumbers.PhoneNumberFormat.E164)
        pipe.set(MINIMAL_PREFIX + e164, 1)
    pipe.execute()
    client.close()


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
            input=load.environment(mobile(i)) + b"200 result=0\n",
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
    sporadic_calls = 100 if quick else 500
    results: dict[str, Any] = {"modes": MODES}
    with PrivateRedis() as redis_server, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        asyncio.run(prepare(redis_server.url, tmp))
        for mode in MODES:
            server = Server(mode, redis_server.url, tmp)
            try:
                run_load(server, load.back_to_back(server.port, 10, 1.0, number))  # warm up
                mode_results: dict[str, Any] = {}
                for concurrency in (1, 10, 100):
                    work = load.back_to_back(server.port, concurrency, seconds, number)
                    mode_results[f"c{concurrency}"] = run_load(server, work)
                work = load.sporadic(server.port, sporadic_calls, SPORADIC_INTERVAL, number)
                mode_results["sporadic"] = run_load(server, work)
            finally:
                latencies = server.stop()
            if latencies:
                mode_results["decision_time"] = percentiles(latencies)
                mode_results["decision_time_sporadic"] = percentiles(latencies[-sporadic_calls:])
            results[mode] = mode_results
        results["agi_script"] = agi_script(tmp / "load.toml", 5 if quick else 20)
    save("fastagi", results)
    return results


def signed(seconds: float) -> str:
    return ("+" if seconds >= 0 else "−") + us(abs(seconds))


def table(results: dict[str, Any]) -> str:
    g, i, m, f = (results[k] for k in ("gatekeeper", "inline", "minimal", "floor"))
    rows = [
        "| FastAGI, each server in its own process | gatekeeper (shipper apart) | gatekeeper (shipper inside) "
        "| minimal honest gate | floor: bare responder | gatekeeper ÷ minimal gate |",
        "|---|---|---|---|---|---|",
    ]

    def pair(d: dict[str, Any]) -> str:
        return f"{us(d['p50'])} / {us(d['p99'])}"

    for c in ("c1", "c10", "c100"):
        n = c[1:]
        rate = [r[c]["sessions_per_second"] for r in (g, i, m, f)]
        rows.append(f"| concurrency {n}: sessions/s | {rate[0]:,.0f} | {rate[1]:,.0f} | {rate[2]:,.0f} | "
                    f"{rate[3]:,.0f} | {rate[0] / rate[2]:.2f} |")  # fmt: skip
        lat = [r[c]["latency"] for r in (g, i, m, f)]
        rows.append(f"| concurrency {n}: session p50 / p99 | {pair(lat[0])} | {pair(lat[1])} | {pair(lat[2])} | "
                    f"{pair(lat[3])} | {lat[0]['p99'] / lat[2]['p99']:.2f} (p99) |")  # fmt: skip
        cpu = [r[c]["server_cpu_per_session"] for r in (g, i, m, f)]
        rows.append(f"| concurrency {n}: server CPU per session | {us(cpu[0])} | {us(cpu[1])} | {us(cpu[2])} | "
                    f"{us(cpu[3])} | {cpu[0] / cpu[2]:.2f} |")  # fmt: skip
    sp = [r["sporadic"]["latency"] for r in (g, i, m, f)]
    rows.append(f"| sporadic (a call every 20 ms): session p50 / p99 | {pair(sp[0])} | {pair(sp[1])} | "
                f"{pair(sp[2])} | {pair(sp[3])} | {signed(sp[0]['p99'] - sp[2]['p99'])} (p99) |")  # fmt: skip
    rows.append(f"| decision (request → verdict, record not included), all runs: p50 / p99 | "
                f"{pair(g['decision_time'])} | {pair(i['decision_time'])} | | | |")  # fmt: skip
    a = results["agi_script"]
    rows.append(
        f"| classic AGI script `gatekeeper-agi`: per call wall / CPU (p50) | {a['wall']['p50'] * 1000:,.0f} ms / "
        f"{a['cpu']['p50'] * 1000:,.0f} ms | | | | |"
    )
    return "\n".join(rows)
