"""A private PostgreSQL server for the tests: initdb + pg_ctl in a temporary directory, loopback, a free port.

Never touches the machine's shared cluster (port 5432, /var/lib/postgresql). PostgreSQL refuses to run as
root, so under root the server runs as the `postgres` system user (the Debian package creates it).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from gatekeeper.devservers import free_port

INSTALL_HINT = "PostgreSQL server binaries not found: apt-get install postgresql"


def find_bindir() -> Path:
    """The newest /usr/lib/postgresql/*/bin that has initdb and pg_ctl (or the ones on PATH)."""
    candidates = sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    initdb = shutil.which("initdb")
    if initdb is not None and shutil.which("pg_ctl") is not None:
        return Path(initdb).parent
    raise RuntimeError(INSTALL_HINT)


class PrivatePostgres:
    """`start()` runs initdb (once) and the server; `stop()` / `start()` again keep the data and port."""

    def __init__(self, *, port: int | None = None) -> None:
        self.bindir = find_bindir()
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="gatekeeper-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root needs the `postgres` user: apt-get install postgresql") from None
            self._user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._initialised = False

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
            **self._user,
        )
        if result.returncode != 0:
            tail = self.logfile.read_text()[-1500:] if self.logfile.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}\n{tail}")

    def start(self) -> PrivatePostgres:
        if not self._initialised:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                      "--locale=C", "--no-sync")  # fmt: skip
            self._initialised = True
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w", "-t", "30", "start")
        deadline = time.monotonic() + 10
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown: open connections are cut, as in a crash of the database host."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def cleanup(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def new_schema(self, name: str) -> str:
        """A fresh schema and a DSN whose search_path points at it (one per test: isolation without initdb)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.dsn}?options=-csearch_path%3D{name}"


_shared: PrivatePostgres | None = None


def shared_postgres() -> PrivatePostgres:
    """One private server for the whole test run (started on first use, removed at exit)."""
    global _shared  # noqa: PLW0603 (a per-process singleton, like a session fixture shared by modules)
    if _shared is None:
        server = PrivatePostgres()
        server.__enter__()
        atexit.register(server.cleanup)
        _shared = server
    return _shared
