"""`gatekeeper log verify | purge | ship [--once]`.

Exit status as in `gatekeeper.cli`: 0 success, 1 the chain is broken / the purge stopped at a broken link,
2 usage error, 3 Redis or the SQL database is unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

from redis.exceptions import RedisError

from gatekeeper.config import Settings
from gatekeeper.core.times import shown
from gatekeeper.index.rows import deployment_zone
from gatekeeper.log.outbox import Outbox, OutboxKeys, Spool, default_spool_dir
from gatekeeper.log.shipper import Shipper, redis_description, shipper_client
from gatekeeper.log.sql import DATABASE_ERRORS, SchemaError
from gatekeeper.log.store import ChainReport, LogStore, PurgeReport

log = logging.getLogger(__name__)
T = TypeVar("T")

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


def add_log_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `log verify`, `log purge` and `log ship` to the CLI's subcommands."""
    lg = sub.add_parser("log", help="the decision log: verify the hash chain, purge old records, ship the outbox")
    actions = lg.add_subparsers(dest="log_action", required=True, metavar="ACTION")
    verify = actions.add_parser("verify", help="check every instance's hash chain (exit 1 if broken)")
    verify.add_argument("--instance", metavar="NAME", help="check one instance only")
    purge = actions.add_parser("purge", help="delete records older than the retention period")
    purge.add_argument("--days", type=int, metavar="N", help="keep the last N days (default: [log] retention_days)")
    ship = actions.add_parser("ship", help="move the outbox (and any spool) into SQL, until stopped")
    ship.add_argument("--once", action="store_true", help="drain once and exit (systemd timer)")
    ship.add_argument("--instance", metavar="NAME", help="ship this instance's outbox (default: this one)")
    ship.add_argument("--spool-dir", metavar="DIR", help="where the spool files are (default: next to the log)")


async def cmd_log(settings: Settings, args: argparse.Namespace) -> int:
    """Dispatch `gatekeeper log ACTION`."""
    if args.log_action == "verify":
        return await log_verify(settings, instance=args.instance)
    if args.log_action == "purge":
        return await log_purge(settings, days=args.days)
    spool_dir = Path(args.spool_dir) if args.spool_dir else None
    if args.once:
        return await log_ship_once(settings, instance=args.instance, spool_dir=spool_dir)
    return await log_ship_forever(settings, instance=args.instance, spool_dir=spool_dir)


async def log_ship_forever(settings: Settings, *, instance: str | None = None, spool_dir: Path | None = None) -> int:
    """The shipper in a process of its own (`[log] ship_in_serve = false`): ship until SIGTERM or SIGINT.

    It replays the instance's spool whenever Redis is back and ships the stream continuously; on a stop it
    ships what is waiting (bounded) and exits 0.
    """
    name = instance or settings.log.instance_name
    keys = OutboxKeys(settings.index.prefix, name)
    client = shipper_client(settings)
    outbox = Outbox(client, keys, Spool(spool_dir or default_spool_dir(settings), name))
    shipper = Shipper(
        client, LogStore.from_dsn(settings.log.dsn), keys, owns=True, redis_name=redis_description(settings)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await outbox.start()
    await shipper.start()
    log.info("shipping %s to %s until stopped", keys.stream, shipper.store.db.description)
    try:
        await stop.wait()
    finally:
        await outbox.stop()
        await shipper.stop()
    return EXIT_OK


def _unavailable(what: str, exc: BaseException, err: TextIO) -> int:
    err.write(f"gatekeeper: {what} is unavailable: {type(exc).__name__}: {exc}\n")
    return EXIT_UNAVAILABLE


async def _with_store(settings: Settings, err: TextIO, work: Callable[[LogStore], Awaitable[T]]) -> T | int:
    """Run `work` on the opened log; a schema or database problem becomes a message and an exit status."""
    store = LogStore.from_dsn(settings.log.dsn)
    try:
        await store.open()
        return await work(store)
    except SchemaError as exc:
        err.write(f"gatekeeper: {exc}\n")
        return EXIT_USAGE
    except DATABASE_ERRORS as exc:
        return _unavailable(store.db.description, exc, err)
    finally:
        await store.close()


async def log_verify(
    settings: Settings, *, instance: str | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr

    async def verify(store: LogStore) -> tuple[str, dict[str, Any], ChainReport]:
        return store.db.description, await store.chains(), await store.verify_chain(instance)

    result = await _with_store(settings, err, verify)
    if isinstance(result, int):
        return result
    description, chains, report = result
    out.write(f"decision log in {description}\n")
    for name, checked in sorted(report.checked.items()):
        state = chains.get(name)
        span = f" (seq {state.base_seq + 1}–{state.head_seq}, {state.purged} purged)" if state else ""
        out.write(f"  instance {name}: {checked:,} records verified{span}\n")
    if report.ok:
        out.write("chain intact\n")
        return EXIT_OK
    out.write(f"CHAIN BROKEN: {len(report.problems)} problem(s)\n")
    for problem in report.problems:
        out.write(f"  {problem}\n")
    return EXIT_PROBLEMS


async def log_purge(
    settings: Settings, *, days: int | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    keep = settings.log.retention_days if days is None else days
    if keep < 0:
        err.write("gatekeeper: --days must not be negative\n")
        return EXIT_USAGE

    async def purge(store: LogStore) -> PurgeReport:
        return await store.purge(days=keep)

    report = await _with_store(settings, err, purge)
    if isinstance(report, int):
        return report
    per = ", ".join(f"{name} {n:,}" for name, n in sorted(report.deleted.items()) if n)
    local = deployment_zone(settings.default_region)  # as the UI shows times that belong to no campaign
    out.write(
        f"purged {report.total:,} decision record(s) from before {shown(report.cutoff, local)} "
        f"({keep} days kept){f': {per}' if per else ''}\n"
    )
    for problem in report.stopped:
        err.write(f"gatekeeper: {problem}\n")
    return EXIT_PROBLEMS if report.stopped else EXIT_OK


async def log_ship_once(
    settings: Settings,
    *,
    instance: str | None = None,
    spool_dir: Path | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    name = instance or settings.log.instance_name
    keys = OutboxKeys(settings.index.prefix, name)
    client = shipper_client(settings)
    store = LogStore.from_dsn(settings.log.dsn)
    outbox = Outbox(client, keys, Spool(spool_dir or default_spool_dir(settings), name))
    shipper = Shipper(client, store, keys, redis_name=redis_description(settings))
    try:
        replayed = await outbox.replay()
        shipped = await shipper.ship_once()
    except RedisError as exc:
        return _unavailable(redis_description(settings), exc, err)
    except SchemaError as exc:
        err.write(f"gatekeeper: {exc}\n")
        return EXIT_USAGE
    except DATABASE_ERRORS as exc:
        return _unavailable(store.db.description, exc, err)
    finally:
        await client.aclose()
        await store.close()
    spooled = f"replayed {replayed:,} spooled record(s); " if replayed else ""
    out.write(
        f"{spooled}shipped {shipped:,} decision record(s) from {keys.stream} to {store.db.description}"
        f"{f' ({shipper.duplicates:,} already stored)' if shipper.duplicates else ''}; "
        f"{shipper.backlog:,} waiting\n"
    )
    return EXIT_OK
