"""Scale-out on existing engines, against real servers started by the test on loopback:

- a three-master Redis Cluster: import, decide, objections and erasures written through one instance and
  seen by another, and one round trip per decision (MONITOR on every node: one EVALSHA, on the node that
  owns the number's slot, and nothing else);
- Redis Sentinel (one primary, one replica, three sentinels configured from deploy/redis/sentinel.conf):
  the primary is killed during a stream of decisions; decisions fail closed during the failover, never
  allow without a basis, recover without restarting anything, and every decision record reaches the SQL
  log exactly once;
- two gatekeeper instances sharing one index and one PostgreSQL decision log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from redis.crc import key_slot

from gatekeeper.compose import build_service, dry_gate
from gatekeeper.config import LogSettings, Settings
from gatekeeper.core.model import Reason, Verdict
from gatekeeper.core.policy import zone
from gatekeeper.devservers import PrivateRedis, free_port
from gatekeeper.gate import CallRequest, Gate
from gatekeeper.index.connect import connect
from gatekeeper.index.loader import Loader
from gatekeeper.index.store import ConsentIndex
from gatekeeper.log.outbox import Outbox, OutboxKeys, Spool
from gatekeeper.log.shipper import Shipper
from gatekeeper.log.store import LogStore
from gatekeeper.record import DecisionRecord
from gatekeeper.service import Service
from gatekeeper.simulator.fastagi import SimChannel, run_session
from tests.conftest import TUESDAY_MORNING, make_settings, pinned, write_csv
from tests.pg import shared_postgres

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
POOL = "+31201234567"
AT = dt.datetime(2026, 7, 7, 10, 30, tzinfo=zone("Europe/Amsterdam"))  # a Tuesday within calling hours
CONSENTED = [f"06{12340000 + i:08d}" for i in range(40)]
OBJECTED = "0612345680"
UNKNOWN = "0612349999"
WAIT = 30.0  # seconds for anything the servers must get to (cluster formed, failover done, log shipped)


def rows() -> list[str]:
    return [f"acme,{n},consent,2020-01-01,,form-{i}" for i, n in enumerate(CONSENTED)] + [
        f"acme,{OBJECTED},consent,2020-01-01,,form-x",
        f"acme,{OBJECTED},objection,2021-01-01,,call",
        "goededoel,0612345681,customer,2015-01-01,,donor",
    ]


def expected(number: str) -> tuple[Verdict, Reason]:
    if number in CONSENTED:
        return Verdict.ALLOW, Reason.CONSENT
    if number == OBJECTED:
        return Verdict.BLOCK, Reason.OBJECTION
    return Verdict.BLOCK, Reason.NO_BASIS


def request(number: str) -> CallRequest:
    return CallRequest(number, "acme-sales", caller_id=POOL, presentation=0, at=AT, source="fastagi")


def poll_sync(condition: Any, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


async def poll(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# -- Redis Cluster -------------------------------------------------------------------------------------


class PrivateCluster:
    """Three cluster-enabled redis-servers on free loopback ports, joined into one cluster (no replicas)."""

    def __init__(self) -> None:
        self.nodes: list[PrivateRedis] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> PrivateCluster:
        try:
            for _ in range(3):
                # The bus port is set explicitly: the default (port + 10000) overflows for high free ports.
                extra = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                         "--cluster-port", str(free_port()), "--cluster-node-timeout", "2000")  # fmt: skip
                self.nodes.append(PrivateRedis(extra=extra).start())
            created = subprocess.run(
                ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                 "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, text=True, timeout=WAIT, check=False,
            )  # fmt: skip
            assert created.returncode == 0, created.stdout + created.stderr
            poll_sync(lambda: all(self.client(n.port).cluster("INFO")["cluster_state"] == "ok" for n in self.nodes),
                      "cluster_state:ok on every node")  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def client(port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2)

    def owner(self) -> dict[int, int]:
        """Slot -> port of the node that serves it."""
        slots: dict[int, int] = {}
        layout: list[Any] = self.client(self.nodes[0].port).execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
        for start, end, primary, *_ in layout:
            slots.update(dict.fromkeys(range(start, end + 1), int(primary[1])))
        return slots

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    started = PrivateCluster().start()
    yield started
    started.stop()


_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')


class Monitor:
    """MONITOR on one node: the commands clients send it, without those its Lua scripts run."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Monitor:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(b"MONITOR\r\n")
        async with asyncio.timeout(5):
            assert await self.reader.readline() == b"+OK\r\n"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()

    async def until(self, marker: str) -> list[list[str]]:
        """Client commands seen until `ECHO marker` (sent by the test after the work)."""
        assert self.reader is not None
        commands: list[list[str]] = []
        async with asyncio.timeout(10):
            while True:
                line = (await self.reader.readline()).decode(errors="replace")
                if " [0 lua] " in line or "[" not in line:
                    continue
                args = _ARG.findall(line)
                if args[:2] == ["ECHO", marker]:
                    return commands
                commands.append(args)


async def test_cluster_import_decide_write_through_and_one_round_trip(cluster: PrivateCluster, tmp_path: Path) -> None:
    settings = make_settings(cluster.url)
    first, second = (ConsentIndex.from_settings(settings.index) for _ in range(2))  # two "instances"
    try:
        report = await Loader(first).load(write_csv(tmp_path / "data.csv", rows()), region="NL", replace=True)
        assert report.error_count == 0 and report.tenants["acme"].records_created == len(CONSENTED) + 1
        sizes = [PrivateCluster.client(n.port).dbsize() for n in cluster.nodes]
        assert all(size > 100 for size in sizes), sizes  # the index spans every node
        gate_a, gate_b = dry_gate(settings, first), dry_gate(settings, second)
        await first.warm()
        await second.warm()

        for number in (*CONSENTED[:5], OBJECTED, UNKNOWN):
            for gate in (gate_a, gate_b):
                d = await gate.check(request(number))
                assert (d.verdict, d.reason) == expected(number), number

        # Write-through: an objection registered on one instance blocks the next call on the other.
        target = CONSENTED[0]
        await first.object("acme", "+31" + target[1:], AT - dt.timedelta(days=1), "phone-call")
        assert (await gate_b.check(request(target))).reason is Reason.OBJECTION
        # Erasure through the second instance: the first sees a suppression at once.
        erased = CONSENTED[1]
        assert await second.erase("+31" + erased[1:], AT - dt.timedelta(days=1)) >= 1
        assert (await gate_a.check(request(erased))).reason is Reason.SUPPRESSED
        # A scrub (batched lookups) on the cluster: pipelined LOOKUPs, node by node.
        scrub = await gate_a.check_many("acme-sales", [CONSENTED[2], OBJECTED, UNKNOWN], AT)
        assert [d.reason for d in scrub] == [Reason.CONSENT, Reason.OBJECTION, Reason.NO_BASIS]

        # One round trip per decision: one EVALSHA, sent to the node that owns the number's slot.
        owner = cluster.owner()
        numbers = CONSENTED[2:32]
        marker = secrets.token_hex(4)
        monitors = [Monitor(n.port) for n in cluster.nodes]
        async with contextlib.AsyncExitStack() as stack:
            markers = [await stack.enter_async_context(aioredis.Redis(port=n.port)) for n in cluster.nodes]
            for raw in markers:
                await raw.ping()  # connected (handshake done) before the monitors start
            for monitor in monitors:
                await stack.enter_async_context(monitor)
            for number in numbers:
                assert (await gate_a.check(request(number))).verdict is Verdict.ALLOW
            for raw in markers:
                await raw.echo(marker)
            seen = {m.port: await m.until(marker) for m in monitors}
        sent = [(port, args) for port, commands in seen.items() for args in commands]
        assert [args[0] for _, args in sent] == ["EVALSHA"] * len(numbers), sent
        assert all(owner[key_slot(args[3].encode())] == port for port, args in sent)
        assert len({port for port, _ in sent}) == 3  # the numbers' slots live on all three nodes

        # A snapshot import through one instance: the other notices the new generation by itself (a lookup
        # with a stale generation is answered "stale" and asked again) and Lua scripts flushed from every
        # node are loaded again; decisions stay right throughout.
        await Loader(first).load(write_csv(tmp_path / "again.csv", rows()), region="NL", replace=True)
        for node in cluster.nodes:
            PrivateCluster.client(node.port).script_flush()
        assert (await gate_b.check(request(CONSENTED[3]))).reason is Reason.CONSENT
        assert (await gate_b.check(request(target))).reason is Reason.OBJECTION  # survives the import

        latencies = []
        for i in range(400):
            started = time.perf_counter()
            await second.lookup("acme", "+31" + CONSENTED[i % len(CONSENTED)][1:])
            latencies.append(time.perf_counter() - started)
        cuts = statistics.quantiles(latencies, n=100)
        print(f"\nRedis Cluster lookup (one EVALSHA): p50 {cuts[49] * 1e6:.0f} µs, p99 {cuts[98] * 1e6:.0f} µs")
    finally:
        await first.close()
        await second.close()


class Interrupted(Exception):
    """Stands for an import stopped half-way (Ctrl-C, a crash of the importing process's work)."""


async def test_cluster_interrupted_import_leaves_nothing_behind(cluster: PrivateCluster, tmp_path: Path) -> None:
    settings = make_settings(cluster.url)
    index = ConsentIndex.from_settings(settings.index)
    prefix = settings.index.prefix

    def interrupt(rows_read: int) -> None:
        raise Interrupted(rows_read)

    try:
        await Loader(index).load(write_csv(tmp_path / "data.csv", rows()), region="NL", replace=True)
        with pytest.raises(Interrupted):
            await Loader(index, batch_rows=10).load(
                write_csv(tmp_path / "next.csv", rows()), region="NL", replace=True, progress=interrupt
            )
        (current,) = {cur for cur, _ in (await index.pointer_state("acme")).values()}
        assert current is not None
        generations = {
            int(key.split(b":")[-2])
            for node in cluster.nodes
            for pattern in (f"{prefix}:*:d:acme:*", f"{prefix}:*:x:acme:*")
            for key in PrivateCluster.client(node.port).scan_iter(match=pattern, count=1000)
        }
        assert generations == {current.number}  # the half-written generation is gone from every node
        assert all(build is None for _, build in (await index.pointer_state("acme")).values())
        gate = dry_gate(settings, index)
        assert (await gate.check(request(CONSENTED[0]))).reason is Reason.CONSENT  # generation 1 intact
    finally:
        await index.close()


async def test_cluster_carries_the_decision_log(cluster: PrivateCluster, tmp_path: Path) -> None:
    """The outbox (XADD) and the shipper (consumer group, MULTI of XACK + XDEL) work on a cluster too."""
    settings = dataclasses.replace(
        make_settings(cluster.url), log=LogSettings(dsn=f"sqlite:///{tmp_path / 'log.db'}", instance="cl-1")
    )
    index = ConsentIndex.from_settings(settings.index)
    keys = OutboxKeys(settings.index.prefix, "cl-1")
    outbox = Outbox(index.client, keys, Spool(tmp_path, "cl-1"))
    shipper = Shipper(connect(settings.index, socket_timeout=5.0), LogStore.from_dsn(settings.log.dsn), keys,
                      block=0.2, owns=True)  # fmt: skip
    gate = Gate(settings, index, outbox)
    try:
        await Loader(index).load(write_csv(tmp_path / "data.csv", rows()), region="NL", replace=True)
        made = [(await gate.check(request(n))).decision_id for n in (*CONSENTED[:10], OBJECTED)]
        assert outbox.appended == len(made) and outbox.spooled == 0
        assert await shipper.ship_once() == len(made)
        assert await stored_ids(shipper.store) == {i: "cl-1" for i in made}
    finally:
        await shipper.stop()
        await index.close()


async def stored_ids(store: LogStore) -> dict[str, str]:
    async with store.db.transaction(write=False) as tx:
        found = await tx.fetchall("SELECT decision_id, instance FROM decisions")
    return {str(r[0]): str(r[1]) for r in found}


# -- Redis Sentinel ------------------------------------------------------------------------------------

DATA_PASSWORD = "data-" + secrets.token_hex(8)
SENTINEL_PASSWORD = "sentinel-" + secrets.token_hex(8)
SERVICE = "gatekeeper"


def sentinel_config(port: int, primary: int, directory: Path) -> str:
    """deploy/redis/sentinel.conf with this test's ports, directory, passwords and a 1 s down-after."""
    replaced = {
        ("port",): f"port {port}",
        ("bind",): "bind 127.0.0.1",
        ("dir",): f"dir {directory}",
        ("logfile",): f'logfile "{directory / f"sentinel-{port}.log"}"',
        ("sentinel", "monitor"): f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2",
        ("sentinel", "auth-pass"): f"sentinel auth-pass {SERVICE} {DATA_PASSWORD}",
        ("sentinel", "down-after-milliseconds"): f"sentinel down-after-milliseconds {SERVICE} 1000",
        ("sentinel", "failover-timeout"): f"sentinel failover-timeout {SERVICE} 10000",
        ("requirepass",): f"requirepass {SENTINEL_PASSWORD}",
        ("sentinel", "sentinel-pass"): f"sentinel sentinel-pass {SENTINEL_PASSWORD}",
    }
    out, used = [], set()
    for line in (ROOT / "deploy" / "redis" / "sentinel.conf").read_text().splitlines():
        words = line.split()
        key = next((k for k in replaced if tuple(words[: len(k)]) == k), None) if words else None
        if key is not None and not line.startswith("#"):
            used.add(key)
            out.append(replaced[key])
        else:
            out.append(line)
    assert used == set(replaced), set(replaced) - used  # the sample still has every directive the test sets
    return "\n".join(out) + "\n"


class SentinelSetup:
    """One primary, one replica and three sentinels on free loopback ports, all with passwords."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gatekeeper-sentinel-"))
        self.primary: PrivateRedis | None = None
        self.replica: PrivateRedis | None = None
        self.sentinels: list[tuple[int, subprocess.Popen[bytes]]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port, _ in self.sentinels)
        return f"redis+sentinel://:{DATA_PASSWORD}@{hosts}/{SERVICE}?sentinel_password={SENTINEL_PASSWORD}"

    def sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=SENTINEL_PASSWORD, socket_timeout=1)

    def master(self) -> dict[str, Any]:
        state = self.sentinel(self.sentinels[0][0]).sentinel_master(SERVICE)
        assert isinstance(state, dict)
        return state

    def start(self) -> SentinelSetup:
        try:
            self.primary = PrivateRedis(password=DATA_PASSWORD, extra=("--repl-diskless-sync-delay", "0")).start()
            self.replica = PrivateRedis(
                password=DATA_PASSWORD,
                extra=("--replicaof", "127.0.0.1", str(self.primary.port), "--masterauth", DATA_PASSWORD),
            ).start()
            replica = redis.Redis(port=self.replica.port, password=DATA_PASSWORD)
            poll_sync(lambda: replica.info("replication")["master_link_status"] == "up", "the replica's sync")
            for _ in range(3):
                port = free_port()
                config = self.dir / f"sentinel-{port}.conf"
                config.write_text(sentinel_config(port, self.primary.port, self.dir))
                process = subprocess.Popen(
                    ["redis-server", str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                self.sentinels.append((port, process))

            def ready() -> bool:
                try:
                    states: list[Any] = [self.sentinel(port).sentinel_master(SERVICE) for port, _ in self.sentinels]
                except redis.RedisError:
                    return False
                return all(s["num-other-sentinels"] == 2 and s["num-slaves"] == 1 for s in states)

            poll_sync(ready, "three sentinels that know each other and the replica")
        except BaseException:
            self.stop()
            raise
        return self

    def kill_primary(self) -> None:
        assert self.primary is not None and self.primary.process is not None
        os.kill(self.primary.process.pid, signal.SIGKILL)

    def stop(self) -> None:
        for _, process in self.sentinels:
            process.terminate()
        for _, process in self.sentinels:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for server in (self.replica, self.primary):
            if server is not None:
                server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def sentinel_setup() -> Iterator[SentinelSetup]:
    setup = SentinelSetup().start()
    yield setup
    setup.stop()


async def test_sentinel_failover_fails_closed_recovers_and_loses_no_record(
    sentinel_setup: SentinelSetup, tmp_path: Path
) -> None:
    instance = "sentinel-1"
    settings = dataclasses.replace(
        make_settings(sentinel_setup.url),
        log=LogSettings(dsn=f"sqlite:///{tmp_path / 'decisions.db'}", instance=instance),
    )
    index = ConsentIndex.from_settings(settings.index)
    keys = OutboxKeys(settings.index.prefix, instance)
    spool = Spool(tmp_path / "spool", instance)
    outbox = Outbox(index.client, keys, spool, timeout=0.5, retry_initial=0.05, retry_max=0.5)
    shipper = Shipper(
        connect(settings.index, socket_timeout=5.0, client_name="gatekeeper-shipper"),
        LogStore.from_dsn(settings.log.dsn),
        keys,
        block=0.2,
        retry_initial=0.05,
        retry_max=0.5,
        owns=True,
    )
    gate = Gate(settings, index, outbox)
    made: list[tuple[float, str, DecisionRecord]] = []  # (time, dialled, decision)
    stop = asyncio.Event()
    try:
        await Loader(index).load(write_csv(tmp_path / "data.csv", rows()), region="NL", replace=True)
        await index.warm()
        await outbox.start()
        await shipper.start()

        async def stream(worker: int) -> None:
            numbers = [*CONSENTED, OBJECTED, UNKNOWN]
            i = worker
            while not stop.is_set():
                number = numbers[i % len(numbers)]
                made.append((time.monotonic(), number, await gate.check(request(number))))
                i += 3
                await asyncio.sleep(0.01)  # a dialler's pace, not a tight loop

        workers = [asyncio.create_task(stream(w)) for w in range(3)]
        await poll(_async(lambda: len(made) >= 60), "decisions before the failover")
        killed = time.monotonic()
        await asyncio.to_thread(sentinel_setup.kill_primary)

        def recovered() -> bool:
            after = [d for t, _, d in made if t > killed]
            failed = [i for i, d in enumerate(after) if d.reason is Reason.INDEX_UNAVAILABLE]
            return bool(failed) and len(after) - failed[-1] > 60  # 60 good decisions after the last failure

        await poll(_async(recovered), "decisions to recover after the failover")
        recovery = next(t for t, _, d in reversed(made) if d.reason is Reason.INDEX_UNAVAILABLE) - killed
        stop.set()
        await asyncio.gather(*workers)

        new_primary = await asyncio.to_thread(sentinel_setup.master)
        assert sentinel_setup.replica is not None and int(new_primary["port"]) == sentinel_setup.replica.port
        wrong = []
        for _, number, result in made:
            d, want = result, expected(number)
            if (d.verdict, d.reason) == want:
                continue
            if (d.verdict, d.reason) == (Verdict.BLOCK, Reason.INDEX_UNAVAILABLE):
                continue  # failed closed
            wrong.append((number, d.verdict, d.reason))
        assert wrong == []  # never an allow without a basis, never a wrong block
        fail_closed = sum(1 for _, _, r in made if r.reason is Reason.INDEX_UNAVAILABLE)
        assert fail_closed > 0
        print(f"\nSentinel failover: {len(made)} decisions, {fail_closed} failed closed, last one "
              f"{recovery:.2f} s after the primary was killed")  # fmt: skip

        # No record lost: the ones written to the old primary, the spooled ones (replayed into the new
        # primary), all reach SQL, each exactly once.
        await poll(_async(lambda: not outbox.spooling and not spool.has_records()), "the spool to be replayed")
        ids = {r.decision_id for _, _, r in made}
        assert len(ids) == len(made)

        async def shipped() -> bool:
            await shipper.ship_once()
            return set(await stored_ids(shipper.store)) >= ids

        await poll(shipped, "every decision in the SQL log")
        assert set(await stored_ids(shipper.store)) == ids  # the primary key makes each one exactly once
        assert outbox.spooled > 0 and outbox.replayed >= outbox.spooled
        assert (await shipper.store.verify_chain()).ok
    finally:
        stop.set()
        await outbox.stop()
        await shipper.stop()
        await index.close()


def _async(condition: Any) -> Any:
    async def check() -> bool:
        return bool(condition())

    return check


# -- two instances, one index, one PostgreSQL decision log --------------------------------------------


def instance_settings(redis_url: str, prefix: str, dsn: str, name: str) -> Settings:
    base = make_settings(redis_url, prefix=prefix)
    return dataclasses.replace(base, log=LogSettings(dsn=dsn, instance=name))


def serving(settings: Settings, spool_dir: Path) -> Service:
    """`gatekeeper serve` with its decision log, each instance spooling into a directory of its own."""
    spooled = dataclasses.replace(settings, log=dataclasses.replace(settings.log, spool_dir=spool_dir))
    return build_service(spooled, registry=CollectorRegistry(), clock=pinned())


@pytest.fixture
async def postgres_dsn() -> str:
    """A fresh schema in the test run's private PostgreSQL (tests/pg.py)."""
    server = await asyncio.to_thread(shared_postgres)
    return await asyncio.to_thread(server.new_schema, f"scaleout_{secrets.token_hex(4)}")


async def test_two_instances_share_one_index_and_one_postgresql_log(
    redis_server: PrivateRedis, postgres_dsn: str, tmp_path: Path
) -> None:
    prefix = f"t{secrets.token_hex(4)}"
    services = [
        serving(instance_settings(redis_server.url, prefix, postgres_dsn, name), tmp_path / name)
        for name in ("pbx-a", "pbx-b")
    ]
    store = LogStore.from_dsn(postgres_dsn)
    try:
        await Loader(services[0].index).load(write_csv(tmp_path / "data.csv", rows()), region="NL", replace=True)
        for service in services:
            await service.start()
        ports = [next(c for c in s.components if c.name == "fastagi").port for s in services]  # type: ignore[attr-defined]

        async def call(which: int, number: str) -> tuple[str, str, str]:
            channel = SimChannel(
                url="agi://127.0.0.1:4573/check?campaign=acme-sales&callback=1",
                extension=number,
                callerid_num=POOL,
                callingpres=0,
                variables={},
                functions={"CHANNEL(linkedid)": "1795860072.68"},
            )
            result = await run_session("127.0.0.1", ports[which], channel=channel)
            v = result.variables
            return v["GATEKEEPER_RESULT"], v["GATEKEEPER_REASON"], v["GATEKEEPER_DECISION_ID"]

        made: dict[str, str] = {}
        for i, number in enumerate(CONSENTED[:10]):
            verdict, reason, decision_id = await call(i % 2, number)
            assert (verdict, reason) == ("ALLOW", "consent")
            made[decision_id] = ("pbx-a", "pbx-b")[i % 2]
        # An objection registered through instance A blocks the very next call through instance B.
        objected = TUESDAY_MORNING - dt.timedelta(hours=1)  # before the (pinned) call time
        await services[0].index.object("acme", "+31" + CONSENTED[0][1:], objected, "letter")
        verdict, reason, decision_id = await call(1, CONSENTED[0])
        assert (verdict, reason) == ("BLOCK", "objection")
        made[decision_id] = "pbx-b"

        await store.open()

        async def shipped() -> bool:
            return await stored_ids(store) == made

        await poll(shipped, "both instances' decisions in PostgreSQL")
        chains = await store.chains()
        assert {name: state.head_seq for name, state in chains.items()} == {"pbx-a": 5, "pbx-b": 6}
        assert (await store.verify_chain()).ok
    finally:
        for service in services:
            await service.stop()
        await store.close()
