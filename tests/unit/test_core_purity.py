"""The core does no I/O: it imports nothing that talks to the network, disk or event loop."""

from __future__ import annotations

import ast
from pathlib import Path

import gatekeeper.core

FORBIDDEN = {"asyncio", "redis", "aiohttp", "socket", "subprocess", "os", "pathlib", "io", "sqlite3", "asyncpg",
             "psycopg", "urllib", "http", "requests", "logging", "threading", "time", "prometheus_client"}  # fmt: skip
ALLOWED_PACKAGES = {"gatekeeper.core", "phonenumbers", "dateutil", "zoneinfo", "datetime", "dataclasses", "enum",
                    "functools", "re", "collections", "typing", "__future__"}  # fmt: skip


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_imports_no_io_modules() -> None:
    core = Path(gatekeeper.core.__file__).parent
    files = sorted(core.glob("*.py"))
    assert len(files) >= 5
    for path in files:
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in FORBIDDEN, f"{path.name} imports {name}"
            assert any(name == p or name.startswith(p + ".") for p in ALLOWED_PACKAGES), f"{path.name}: {name}"
