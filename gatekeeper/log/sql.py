"""SQL storage for the decision log: one small interface over SQLite (default) and PostgreSQL, and the schema.

Statements are written once, with `?` placeholders, and work on both. Times are fixed-width UTC text
(see `record.format_time`) in both dialects, compared byte-wise (`COLLATE "C"` on PostgreSQL), so range
filters, keyset pagination and hourly buckets (`substr(at, 1, 13)`) need no per-dialect SQL.

SQLite runs in one worker thread per database with WAL and `synchronous=FULL` (a commit is on disk
before the outbox entry is acknowledged); PostgreSQL uses psycopg 3 with one connection, reopened after
a failure. Each `Database` serialises its transactions; open a second one for concurrent readers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from gatekeeper.config import redact_url, sqlite_path
from gatekeeper.log.record import format_time

T = TypeVar("T")
Row = tuple[Any, ...]
SQLITE_BUSY_TIMEOUT = 10.0  # seconds to wait for another process's write lock on the SQLite file
PG_CONNECT_TIMEOUT = 5  # seconds (libpq takes whole seconds)
PG_STATEMENT_TIMEOUT_MS = 60_000  # no statement of the log runs long; a hung server must not hang the shipper
_MIGRATION_LOCK = 0x6761_7465_6B70  # pg_advisory_xact_lock key: one migrator at a time

# Errors that mean "the database cannot be used right now" (the shipper retries, commands report them).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, psycopg.Error, OSError)


class Dialect(StrEnum):
    SQLITE = "sqlite"
    POSTGRES = "postgresql"


class SchemaError(Exception):
    """The database holds a newer schema than this gatekeeper knows."""


class Tx(Protocol):
    """Statements inside one transaction."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...


class Database(ABC):
    dialect: Dialect
    description: str  # for messages; never contains a password

    @abstractmethod
    def transaction(self, *, write: bool) -> contextlib.AbstractAsyncContextManager[Tx]:
        """A transaction; a write transaction holds the database's write lock from its first statement."""

    @abstractmethod
    async def close(self) -> None: ...


# -- SQLite ------------------------------------------------------------------------------------------


class _SqliteTx:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self._db.run(lambda c: c.execute(sql, tuple(params)).rowcount)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        return await self._db.run(lambda c: c.executemany(sql, [tuple(r) for r in rows]).rowcount)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return await self._db.run(lambda c: c.execute(sql, tuple(params)).fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return await self._db.run(lambda c: c.execute(sql, tuple(params)).fetchone())


class SqliteDatabase(Database):
    dialect = Dialect.SQLITE

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"SQLite file {path}"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatekeeper-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None)
            # Switching a new file to WAL takes a lock that the busy timeout does not wait for: two first
            # connections can race here, so the loser tries again for a moment.
            for attempt in range(50):
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    # the primary code (low byte) of the extended one: SQLITE_BUSY_RECOVERY etc. are busy too
                    if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or attempt == 49:
                        raise
                    time.sleep(0.02)
            conn.execute("PRAGMA synchronous=FULL")
            self._conn = conn
        return self._conn

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` on the connection in the database's own thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(self._connect()))

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[Tx]:
        async with self._lock:
            try:
                await self.run(lambda c: c.execute("BEGIN IMMEDIATE" if write else "BEGIN"))
            except BaseException:
                # Cancelled while the BEGIN waited in the database's thread: it still runs there, and left
                # open it would refuse every later transaction ("cannot start a transaction within a
                # transaction"). The thread runs one thing at a time, so this rollback follows it.
                await asyncio.shield(self.run(_rollback))
                raise
            try:
                yield _SqliteTx(self)
            except BaseException:
                await asyncio.shield(self.run(_rollback))
                raise
            try:
                await self.run(lambda c: c.execute("COMMIT"))
            except BaseException:
                await asyncio.shield(self.run(_rollback))
                raise

    async def close(self) -> None:
        """Close the file and the database's thread; closing twice is harmless."""

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        async with self._lock:
            if self._closed:
                return
            self._closed = True
            await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


# -- PostgreSQL --------------------------------------------------------------------------------------

PgConnection = psycopg.AsyncConnection[TupleRow]


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class _PgTx:
    def __init__(self, conn: PgConnection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._conn.cursor() as cur:
            await cur.execute(_pg(sql), tuple(params))
            return cur.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        async with self._conn.cursor() as cur:
            await cur.executemany(_pg(sql), [tuple(r) for r in rows])
            return cur.rowcount

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._conn.cursor() as cur:
            await cur.execute(_pg(sql), tuple(params))
            return await cur.fetchall()

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        async with self._conn.cursor() as cur:
            await cur.execute(_pg(sql), tuple(params))
            return await cur.fetchone()


class PostgresDatabase(Database):
    dialect = Dialect.POSTGRES

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.description = f"PostgreSQL {redact_url(dsn)}"
        self._conn: PgConnection | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresDatabase({redact_url(self._dsn)!r})"

    async def _connection(self) -> PgConnection:
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            await self._discard()
        if self._conn is None:
            conn = await psycopg.AsyncConnection.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=PG_CONNECT_TIMEOUT,
                keepalives=1,  # notice a vanished server within about 25 s
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
            )
            await conn.execute(f"SET statement_timeout = {PG_STATEMENT_TIMEOUT_MS}")
            self._conn = conn
        return self._conn

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    @asynccontextmanager
    async def transaction(self, *, write: bool) -> AsyncIterator[Tx]:
        async with self._lock:
            conn = await self._connection()
            try:
                async with conn.transaction():
                    tx = _PgTx(conn)
                    if not write:  # one snapshot for every statement of a read (verify, pages)
                        await tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    yield tx
            except BaseException:
                if conn.broken or conn.info.transaction_status is not TransactionStatus.IDLE:
                    await asyncio.shield(self._discard())
                raise

    async def close(self) -> None:
        async with self._lock:
            await self._discard()


# -- opening -----------------------------------------------------------------------------------------


def open_database(dsn: str) -> Database:
    """A database for a `[log] dsn`; nothing is connected until the first transaction."""
    scheme = urlsplit(dsn).scheme
    if scheme == "sqlite":
        return SqliteDatabase(sqlite_path(dsn))
    if scheme in ("postgresql", "postgres"):
        return PostgresDatabase(dsn)
    raise ValueError(f"{redact_url(dsn)!r}: use sqlite:///PATH or postgresql://…")


# -- schema ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


_TOKENS = {
    Dialect.SQLITE: {"key": "TEXT", "serial_pk": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    Dialect.POSTGRES: {"key": 'TEXT COLLATE "C"', "serial_pk": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"},
}

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "decisions, chains, audit, dead letters",
        (
            """CREATE TABLE decisions (
                decision_id {key} PRIMARY KEY,
                instance {key} NOT NULL,
                seq BIGINT NOT NULL,
                stream_id TEXT NOT NULL,
                at {key} NOT NULL,
                shipped_at {key} NOT NULL,
                campaign {key} NOT NULL,
                tenant {key},
                number_masked TEXT NOT NULL,
                number_hash {key},
                verdict {key} NOT NULL,
                reason {key} NOT NULL,
                would_block BOOLEAN NOT NULL,
                regime TEXT,
                explanation TEXT NOT NULL,
                basis_reference TEXT,
                rule INTEGER NOT NULL,
                generation BIGINT,
                uniqueid TEXT NOT NULL,
                linkedid TEXT NOT NULL,
                source TEXT NOT NULL,
                latency_us BIGINT NOT NULL,
                index_error TEXT,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL,
                UNIQUE (instance, seq)
            )""",
            "CREATE INDEX decisions_at ON decisions (at, decision_id)",
            "CREATE INDEX decisions_number ON decisions (number_hash, at, decision_id)",
            "CREATE INDEX decisions_campaign ON decisions (campaign, at, decision_id)",
            "CREATE INDEX decisions_tenant ON decisions (tenant, at, decision_id)",
            "CREATE INDEX decisions_reason ON decisions (reason, at, decision_id)",
            """CREATE TABLE chains (
                instance {key} PRIMARY KEY,
                head_seq BIGINT NOT NULL,
                head_hash TEXT NOT NULL,
                base_seq BIGINT NOT NULL,
                base_hash TEXT NOT NULL,
                purged BIGINT NOT NULL,
                purged_at TEXT
            )""",
            """CREATE TABLE audit (
                id {serial_pk},
                at {key} NOT NULL,
                actor TEXT NOT NULL,
                role TEXT NOT NULL,
                action TEXT NOT NULL,
                number_hash {key},
                details TEXT NOT NULL
            )""",
            "CREATE INDEX audit_at ON audit (at)",
            "CREATE INDEX audit_number ON audit (number_hash)",
            """CREATE TABLE dead_letters (
                instance {key} NOT NULL,
                stream_id {key} NOT NULL,
                payload TEXT NOT NULL,
                error TEXT NOT NULL,
                at TEXT NOT NULL,
                PRIMARY KEY (instance, stream_id)
            )""",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


async def migrate(db: Database) -> int:
    """Bring the schema up to date (one transaction, one migrator at a time); returns the version."""
    tokens = _TOKENS[db.dialect]
    async with db.transaction(write=True) as tx:
        if db.dialect is Dialect.POSTGRES:
            await tx.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
        await tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        row = await tx.fetchone("SELECT MAX(version) FROM schema_migrations")
        current = int(row[0]) if row is not None and row[0] is not None else 0
        if current > SCHEMA_VERSION:
            raise SchemaError(
                f"{db.description} has decision-log schema version {current}; this gatekeeper knows up to "
                f"{SCHEMA_VERSION}: upgrade gatekeeper"
            )
        for migration in MIGRATIONS[current:]:
            for statement in migration.statements:
                await tx.execute(statement.format(**tokens))
            await tx.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, format_time(dt.datetime.now(dt.UTC))),
            )
    return SCHEMA_VERSION
