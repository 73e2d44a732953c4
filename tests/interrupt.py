"""A snapshot import SIGKILLed in the middle of its generation switch, for the tests of what that leaves.

The import runs in a process of its own. Once it has switched its first pipeline of hash tags it says so
and waits; the test then kills it with SIGKILL, so nothing of it runs afterwards (no `finally`, no
cleanup, no lock release): exactly what an OOM kill or a power cut does at that moment.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from gatekeeper.config import Settings
from gatekeeper.index.store import ConsentIndex

ROOT = Path(__file__).resolve().parents[1]
WAIT = 30.0  # seconds for the child to reach its switch, and for its lock to expire

CHILD = r"""
import asyncio, sys
from pathlib import Path

from gatekeeper.index.loader import SWITCH_TAGS_PER_PIPELINE, Loader
from gatekeeper.index.store import ConsentIndex
from tests.conftest import make_settings


class DiesInItsSwitch(Loader):
    async def _switch_tags(self, tenant, gen, tags):
        await super()._switch_tags(tenant, gen, tags[:SWITCH_TAGS_PER_PIPELINE])
        print("switched", flush=True)
        await asyncio.Event().wait()  # the parent kills this process here


async def main(url, prefix, path, lock_ttl):
    index = ConsentIndex.from_settings(make_settings(url, prefix).index)
    await DiesInItsSwitch(index, lock_ttl=float(lock_ttl)).load(Path(path), region="NL", replace=True)


asyncio.run(main(*sys.argv[1:]))
"""


async def kill_import_at_switch(settings: Settings, path: Path, tenant: str, *, lock_ttl: float = 2.0) -> None:
    """Run `import --replace` of `path` (rows of `tenant`) in a child process and SIGKILL it after its first
    switched tags; return once its import lock has expired (as it does, `lock_ttl` seconds after the kill)."""
    index = settings.index
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, index.redis_url, index.prefix, str(path), str(lock_ttl),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), WAIT)
        assert line == b"switched\n", line
    finally:
        child.kill()  # SIGKILL
        await child.wait()
    consent_index = ConsentIndex.from_settings(index)
    try:
        deadline = time.monotonic() + WAIT
        while await consent_index.locked([tenant]):
            assert time.monotonic() < deadline, "the killed import's lock did not expire"
            await asyncio.sleep(0.05)
    finally:
        await consent_index.close()
