"""An import SIGKILLed in its generation switch leaves the tenant split between two generations: `status`,
`/readyz` and the metrics say so for that tenant (the instance stays ready for the others), the killed
import's lock expires within seconds, and the next import of the tenant finishes the switch."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from gatekeeper.cli import main
from gatekeeper.compose import build_service
from gatekeeper.config import Settings
from gatekeeper.devservers import PrivateRedis
from gatekeeper.index.health import census
from gatekeeper.index.keys import ALL_TAGS, BUILD_SUFFIX, TAGS
from gatekeeper.index.loader import SWITCH_TAGS_PER_PIPELINE, Loader
from gatekeeper.index.store import ConsentIndex
from gatekeeper.service import Service
from tests.conftest import PEPPER, make_settings, pinned, write_csv
from tests.interrupt import kill_import_at_switch

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
NUMBERS = [f"+3161234{i:04d}" for i in range(300)]
OTHERS = ["goededoel,0612345681,customer,2015-01-01,,donor", "other,0612345682,customer,2015-01-01,,o"]


def config_for(settings: Settings, directory: Path) -> Path:
    """A configuration file for the command line that reaches the same index as `settings`."""
    index = settings.index
    text = f'[index]\nredis_url = "{index.redis_url}"\npepper = "{PEPPER}"\nprefix = "{index.prefix}"\n'
    for campaign in settings.campaigns.values():
        text += f'[campaigns.{campaign.id}]\ntenant = "{campaign.tenant}"\n'
    path = directory / "gatekeeper.toml"
    path.write_text(text)
    return path


async def cli(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    """The command line, in a thread of its own (it runs its own event loop)."""
    code = await asyncio.to_thread(main, ["--config", str(config), *args])
    out, err = capsys.readouterr()
    return code, out, err


async def readyz(service: Service) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{service.http_port}/readyz") as response,
    ):
        return response.status, json.loads(await response.text())


async def references(index: ConsentIndex) -> set[str]:
    return {c.reference for found in await index.lookup_many("acme", NUMBERS) for c in found.facts.consents}


async def data_generations(index: ConsentIndex) -> set[int]:
    keys = [k.decode() async for k in index.client.scan_iter(match=f"{index.keys.prefix}:*:d:acme:*", count=5000)]
    return {int(k.split(":")[4]) for k in keys}


@pytest.fixture
async def service(redis_server: PrivateRedis, tmp_path: Path) -> Any:
    settings = make_settings(redis_server.url)
    service = build_service(settings, registry=CollectorRegistry(), clock=pinned())
    rows = [f"acme,{n},consent,2025-01-01,,old" for n in NUMBERS] + OTHERS
    await Loader(service.index).load(write_csv(tmp_path / "old.csv", rows), region="NL", replace=True, now=NOW)
    await service.start()
    yield service
    await service.stop()


async def test_a_split_is_reported_per_tenant_and_the_next_import_finishes_the_switch(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, index = service.settings, service.index
    config = config_for(settings, tmp_path)
    (old_generation,) = await data_generations(index)
    new = write_csv(tmp_path / "new.csv", [f"acme,{n},consent,2025-01-01,,new" for n in NUMBERS])

    await kill_import_at_switch(settings, new, "acme")  # returns once the dead import's lock has expired

    # The tenant is split for real: one pipeline of tags reads the new generation, the others the old one.
    counted = census(await index.pointer_hashes())["acme"]
    (new_generation,) = set(counted.current) - {old_generation}
    assert counted.current == {
        new_generation: SWITCH_TAGS_PER_PIPELINE,
        old_generation: TAGS - SWITCH_TAGS_PER_PIPELINE,
    }
    assert await references(index) == {"old", "new"}

    code, out, err = await cli(capsys, config, "status")
    assert code == 1 and "acme" in err
    assert (
        f"SPLIT: split between generation {old_generation} and generation {new_generation} "
        f"({SWITCH_TAGS_PER_PIPELINE} of {TAGS:,} hash tags switched): the import died during its switch; "
        "the next import of acme finishes the switch"
    ) in out
    assert "goededoel: generation" in out and "SPLIT" not in out.split("goededoel:")[1]

    await service.refresh_generations()
    status, body = await readyz(service)
    assert status == 200 and body["ready"] is True  # the other tenants' calls go on
    assert body["tenants"]["acme"]["condition"] == "split"
    assert body["tenants"]["acme"]["campaigns"] == ["acme-sales", "acme-shadow"]
    assert body["tenants"]["goededoel"]["condition"] == "loaded"
    split = f"split between generation {old_generation} and generation {new_generation}"
    assert f"acme (campaigns acme-sales, acme-shadow): {split}" in body["checks"]["index"]["detail"]
    gauge = service.metrics.registry.get_sample_value
    assert gauge("gatekeeper_index_tenant_split", {"tenant": "acme"}) == 1
    assert gauge("gatekeeper_index_tenant_split", {"tenant": "goededoel"}) == 0
    assert gauge("gatekeeper_index_tenant_loaded", {"tenant": "acme"}) == 1

    # The next import of the tenant (a merge of one row) finishes the switch first, at once (no lock wait).
    extra = write_csv(tmp_path / "extra.csv", ["acme,0612340999,consent,2025-03-01,,extra"])
    code, out, _ = await cli(capsys, config, "import", str(extra))
    assert code == 0, out
    assert (
        f"repaired: tenant acme: finished the switch to generation {new_generation} that an import left unfinished "
        f"({TAGS - SWITCH_TAGS_PER_PIPELINE:,} of {TAGS:,} hash tags were still on the old generation)"
    ) in out
    assert f"tenant acme: merged into generation {new_generation}" in out
    assert await references(index) == {"new"}
    assert await data_generations(index) == {new_generation}  # the old generation is dropped everywhere
    assert census(await index.pointer_hashes())["acme"].current == {new_generation: TAGS}
    assert await index.switches() == {}
    tenants = await index.tenants()
    assert tenants["acme"].generation == new_generation and tenants["acme"].records == len(NUMBERS) + 1

    code, out, _ = await cli(capsys, config, "status")
    assert code == 0 and "SPLIT" not in out and f"acme: generation {new_generation} (301 records" in out
    await service.refresh_generations()
    status, body = await readyz(service)
    assert status == 200 and body["tenants"]["acme"] == {
        "condition": "loaded",
        "generation": new_generation,
        "campaigns": ["acme-sales", "acme-shadow"],
        "detail": f"generation {new_generation}",
    }
    assert gauge("gatekeeper_index_tenant_split", {"tenant": "acme"}) == 0


async def test_a_split_that_cannot_be_finished_takes_a_snapshot(
    service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, index = service.settings, service.index
    config = config_for(settings, tmp_path)
    new = write_csv(tmp_path / "new.csv", [f"acme,{n},consent,2025-01-01,,new" for n in NUMBERS])
    await kill_import_at_switch(settings, new, "acme")
    # Someone removed the new generation's build marker from a tag the import had not switched yet.
    await index.client.hdel(index.keys.pointer(ALL_TAGS[-1]), "acme" + BUILD_SUFFIX)

    extra = write_csv(tmp_path / "extra.csv", ["acme,0612340999,consent,2025-03-01,,extra"])
    code, _, err = await cli(capsys, config, "import", str(extra))
    assert code == 2 and "missing in 1 hash tags" in err and "--replace" in err
    final = write_csv(tmp_path / "final.csv", [f"acme,{n},consent,2025-01-01,,final" for n in NUMBERS])
    code, out, _ = await cli(capsys, config, "import", str(final), "--replace")
    assert code == 0 and "could not be finished (1 hash tags lack it); this snapshot replaces both" in out
    assert await references(index) == {"final"}
    (generation,) = await data_generations(index)
    assert census(await index.pointer_hashes())["acme"].current == {generation: TAGS}
    assert await index.switches() == {}
    assert "SPLIT" not in (await cli(capsys, config, "status"))[1]
