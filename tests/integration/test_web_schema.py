"""Schemathesis against the OpenAPI document: the running API on loopback answers every generated request
(valid and invalid) without a server error, with a documented status, content type and body shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gatekeeper.devservers import PrivateRedis
from gatekeeper.web.api import PREFIX
from tests.web_helpers import TOKENS, WebService, backend_dsn, start_web, web_settings

pytestmark = pytest.mark.integration
EXAMPLES = 40  # per operation and generation mode: about 700 requests in all
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
async def web(redis_server: PrivateRedis, tmp_path: Path) -> AsyncIterator[WebService]:
    service = await start_web(web_settings(redis_server.url, backend_dsn("sqlite", tmp_path)), tmp_path)
    yield service
    await service.stop()


def fuzz(document: dict[str, Any], base_url: str) -> list[str]:
    """Run every operation in both generation modes; returns the (operation, mode) pairs exercised."""
    schema = schemathesis.openapi.from_dict(document)
    headers = {"Authorization": f"Bearer {TOKENS['admin']}"}
    exercised = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document itself is valid
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(hypothesis.HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case[Any]) -> None:
                case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=10)

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    raise
                continue  # nothing to make invalid (the document itself takes no input)
            exercised.append(f"{operation.label} ({mode.value})")
    return exercised


async def test_the_api_conforms_to_its_openapi_document(web: WebService) -> None:
    await web.request("POST", f"{PREFIX}/check", body={"number": "0612345678", "campaign": "acme-sales"})
    await web.sync()  # one decision in the log, so list and export answers have items to check
    status, document, _ = await web.request("GET", f"{PREFIX}/openapi.json", token=None)
    assert status == 200
    exercised = await asyncio.to_thread(fuzz, document, web.base_url)
    operations = sum(len(ops) for ops in document["paths"].values())
    assert len(exercised) == 2 * operations - 1, exercised
