"""Evidence before action: no verdict reaches the PBX before its decision record is durably accepted.

- Kill storms: `gatekeeper serve` SIGKILLed again and again while bursts of calls come in; every decision
  id a simulated Asterisk received is in the SQL log afterwards, once, and the chain verifies.
- Bytes that are not UTF-8 (a raw 0xFF), NUL and unpaired surrogates in every FastAGI field and every API
  field: every answered call has its record, in SQLite and in PostgreSQL.
- When neither Redis nor the spool takes a record, the call gets no verdict (the dialplan blocks it).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from gatekeeper.compose import build_service
from gatekeeper.config import Settings, load
from gatekeeper.devservers import PrivateRedis, free_port
from gatekeeper.index.loader import Loader
from gatekeeper.index.store import ConsentIndex
from gatekeeper.log.shipper import Shipper
from gatekeeper.log.store import LogStore
from gatekeeper.service import Service
from gatekeeper.simulator.fastagi import AgiStatus, SimChannel, run_session
from tests.conftest import PEPPER, make_settings, pinned, write_csv
from tests.pg import shared_postgres
from tests.web_helpers import TOKENS, web_settings

pytestmark = pytest.mark.integration

ROWS = [f"acme,06{12340000 + i:08d},consent,2020-01-01,,form-{i}" for i in range(50)]
POOL = "+31201234567"


def numbers(count: int) -> list[str]:
    """Half with consent, half without: allows and blocks."""
    return [f"06{12340000 + i % 100:08d}" for i in range(count)]


def sim_channel(extension: str, **fields: object) -> SimChannel:
    base = SimChannel(
        url="agi://127.0.0.1:4573/check?campaign=acme-sales",
        extension=extension,
        callerid_num=POOL,
        callingpres=0,
        variables={},
        functions={"CHANNEL(linkedid)": "1795860072.68"},
    )
    return replace(base, **fields)  # type: ignore[arg-type]


async def load_rows(settings: Settings, tmp_path: Path) -> None:
    index = ConsentIndex.from_settings(settings.index)
    try:
        await Loader(index).load(write_csv(tmp_path / "rows.csv", ROWS), region="NL", replace=True)
    finally:
        await index.close()


async def stored_ids(dsn: str) -> list[str]:
    store = await LogStore.from_dsn(dsn).open()
    try:
        async with store.db.transaction(write=False) as tx:
            return [row[0] for row in await tx.fetchall("SELECT decision_id FROM decisions")]
    finally:
        await store.close()


# -- kill storms -----------------------------------------------------------------------------------------


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"serve did not listen on {port}: {log.read_text()}")


async def test_kill_storms_lose_no_answered_decision(redis_server: PrivateRedis, tmp_path: Path) -> None:
    """16 SIGKILLs of serve, each during a burst of 400–800 calls; then `log ship --once` and `log verify`."""
    agi_port, http_port = free_port(), free_port()
    dsn = f"sqlite:///{tmp_path / 'decisions.db'}"
    prefix = f"storm{os.getpid()}"
    config = tmp_path / "gk.toml"
    config.write_text(
        f'[index]\nredis_url = "{redis_server.url}"\npepper = "{PEPPER}"\nprefix = "{prefix}"\n'
        f'[fastagi]\nlisten = "127.0.0.1:{agi_port}"\nbudget_ms = 2000\n'
        f'[http]\nlisten = "127.0.0.1:{http_port}"\n'
        f'[log]\ndsn = "{dsn}"\ninstance = "storm"\nspool_dir = "{tmp_path / "spool"}"\n'
        '[campaigns.acme-sales]\ntenant = "acme"\ncaller_ids = ["+31201234567"]\n'
    )
    await load_rows(load(config, env={}), tmp_path)
    rng = random.Random(8)
    seen: list[str] = []
    for storm in range(16):
        log = tmp_path / f"serve-{storm}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: ASYNC220 - started, then only signalled and waited for in a thread
                [sys.executable, "-m", "gatekeeper.cli", "--config", str(config), "serve"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            await asyncio.to_thread(wait_listening, agi_port, proc, log)
            burst = [
                asyncio.create_task(run_session("127.0.0.1", agi_port, channel=sim_channel(n), session_timeout=5))
                for n in numbers(rng.randint(400, 800))
            ]
            await asyncio.sleep(rng.uniform(0.05, 0.5))  # mid-burst: some answered, some deciding, some queued
            proc.send_signal(signal.SIGKILL)
            results = await asyncio.gather(*burst)
        finally:
            if proc.poll() is None:
                proc.kill()
            await asyncio.to_thread(proc.wait)
        seen += [r.variables["GATEKEEPER_DECISION_ID"] for r in results if "GATEKEEPER_DECISION_ID" in r.variables]
    assert len(seen) > 1000, len(seen)  # the storms did hit answered calls
    ship = subprocess.run(  # noqa: ASYNC221 - the command as an operator runs it, once
        [sys.executable, "-m", "gatekeeper.cli", "--config", str(config), "log", "ship", "--once"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ship.returncode == 0, ship.stderr
    stored = await stored_ids(dsn)
    assert len(stored) == len(set(stored))  # no duplicates
    assert set(seen) <= set(stored), f"{len(set(seen) - set(stored))} answered decisions have no record"
    verify = subprocess.run(  # noqa: ASYNC221
        [sys.executable, "-m", "gatekeeper.cli", "--config", str(config), "log", "verify"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0 and "chain intact" in verify.stdout, verify.stdout + verify.stderr


# -- bytes that no store takes as they are -----------------------------------------------------------------

BAD_BYTES = (b"\xff", b"\x00", b"\xed\xa0\x80")  # not UTF-8, NUL, an encoded surrogate (not UTF-8 either)
# Environment fields a call's values come from (agi_network_script's parameters are percent-decoded as
# strict UTF-8: a bad byte there is a protocol error and gets no verdict, so it is tested apart).
ENV_FIELDS = ("uniqueid", "accountcode", "extension", "callerid", "calleridname", "channel", "dnid", "rdnis")


def environment(field: str | None, bad: bytes, *, url: str = "agi://127.0.0.1/check") -> bytes:
    values = {
        "network": b"yes",
        "network_script": url.split("/", 3)[3].encode(),
        "request": url.encode(),
        "channel": b"PJSIP/trunk-0000002a",
        "uniqueid": b"1795860072.69",
        "callerid": POOL.encode(),
        "calleridname": b"Acme Sales",
        "callingpres": b"0",
        "dnid": b"unknown",
        "rdnis": b"unknown",
        "extension": b"0612340001",
        "accountcode": b"acme-sales",
    }
    if field is not None:
        values[field] += bad
    return b"".join(b"agi_" + k.encode() + b": " + v + b"\n" for k, v in values.items()) + b"\n"


async def raw_call(port: int, env: bytes, context_reply: bytes = b"200 result=1 (|1795860072.68)\n") -> str | None:
    """One session with exact bytes; returns the decision id the server set, or None (no verdict)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    decision: str | None = None
    try:
        writer.write(env)
        while line := await asyncio.wait_for(reader.readline(), 10):
            if line.startswith(b"GET FULL VARIABLE"):
                writer.write(context_reply)
            elif line.startswith(b"EXEC MSet"):
                decision = line.rstrip(b'"\n').rpartition(b"=")[2].decode()
                writer.write(b"200 result=0\n")
            else:
                writer.write(b"510 Invalid or unknown command\n")
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return decision


@pytest.fixture(params=["sqlite", "postgresql"])
async def serving(request: pytest.FixtureRequest, redis_server: PrivateRedis, tmp_path: Path) -> AsyncIterator[Service]:
    dsn = (
        f"sqlite:///{tmp_path / 'bytes.db'}"
        if request.param == "sqlite"
        else await asyncio.to_thread(shared_postgres().new_schema, f"bytes_{os.getpid()}_{random.getrandbits(32):x}")
    )
    settings = web_settings(redis_server.url, dsn, log={"instance": "bytes", "spool_dir": str(tmp_path)})
    await load_rows(settings, tmp_path)
    service = build_service(settings, registry=CollectorRegistry(), clock=pinned())
    await service.start()
    yield service
    await service.stop()


def fastagi_port(service: Service) -> int:
    return next(c for c in service.components if c.name == "fastagi").port  # type: ignore[attr-defined,no-any-return]


async def shipped_ids(service: Service) -> set[str]:
    shipper = next(c for c in service.components if isinstance(c, Shipper))
    await shipper.ship_once()
    return set(await stored_ids(service.settings.log.dsn))


async def test_bad_bytes_in_every_fastagi_field_never_lose_a_record(serving: Service) -> None:
    port = fastagi_port(serving)
    answered: list[str | None] = []
    for bad in BAD_BYTES:
        for field in ENV_FIELDS:
            answered.append(await raw_call(port, environment(field, bad)))
        # The campaign and the linkedid read from the channel (GET FULL VARIABLE) carry raw bytes too.
        reply = b"200 result=1 (acme-sales" + bad + b"|1795860072.68" + bad + b")\n"
        answered.append(await raw_call(port, environment(None, bad, url="agi://127.0.0.1/check"), reply))
        # A percent-escaped bad byte in the URL's parameters is refused as a protocol error (no verdict).
        escaped = "".join(f"%{b:02X}" for b in bad)
        refused = await raw_call(port, environment(None, bad, url=f"agi://127.0.0.1/check?campaign=x{escaped}"))
        assert refused is None or bad == b"\x00"  # %00 decodes to NUL: a control character, refused too
    assert all(answered), f"{answered.count(None)} calls got no verdict"
    assert {d for d in answered if d} <= await shipped_ids(serving)


async def test_bad_text_in_every_api_field_never_loses_a_record(serving: Service) -> None:
    url = f"http://127.0.0.1:{serving.http_port}/api/v1/check"
    headers = {"Authorization": f"Bearer {TOKENS['admin']}", "Content-Type": "application/json"}
    answered: list[str] = []
    async with aiohttp.ClientSession() as http:
        for text in ("\\u0000", "\\udcff", "\\ud800", "\\udfff\\ud800"):
            for field in ("number", "campaign", "caller_id"):
                values = {"number": "0612340001", "campaign": "acme-sales", "caller_id": POOL}
                body = "{" + ", ".join(f'"{k}": "{v}{text if k == field else ""}"' for k, v in values.items()) + "}"
                async with http.post(url, data=body.encode(), headers=headers) as response:
                    assert response.status in (200, 400), await response.text()
                    if response.status == 200:
                        answered.append((await response.json())["decision_id"])
    assert len(answered) >= 8  # campaign and caller_id with any text are decisions, not errors
    assert set(answered) <= await shipped_ids(serving)


# -- no verdict without its record -----------------------------------------------------------------------


async def test_no_verdict_when_neither_redis_nor_the_spool_takes_the_record(
    redis_server: PrivateRedis, tmp_path: Path
) -> None:
    (tmp_path / "not-a-directory").write_text("")
    settings = make_settings(
        redis_server.url, sections={"log": {"instance": "nowhere", "spool_dir": str(tmp_path / "not-a-directory")}}
    )
    await load_rows(settings, tmp_path)
    service = build_service(settings, registry=CollectorRegistry(), clock=pinned())
    await service.start()
    try:
        stream = f"{settings.index.prefix}:outbox:nowhere"
        await service.index.client.set(stream, "not a stream")  # XADD fails (WRONGTYPE), the spool cannot exist
        result = await run_session("127.0.0.1", fastagi_port(service), channel=sim_channel("0612340001"))
        assert "GATEKEEPER_RESULT" not in result.variables and result.agi_status is AgiStatus.SUCCESS
        outcome = service.metrics.registry.get_sample_value("gatekeeper_fastagi_sessions_total", {"outcome": "error"})
        assert outcome == 1
        await service.index.client.delete(stream)  # Redis takes records again: calls are answered again
        outbox = next(c for c in service.components if c.name == "outbox")
        outbox.spooling = False  # type: ignore[attr-defined]  # what its replay task does once Redis answers
        again = await run_session("127.0.0.1", fastagi_port(service), channel=sim_channel("0612340001"))
        assert again.variables["GATEKEEPER_RESULT"] == "ALLOW"
    finally:
        await service.stop()
