"""The HTTP API of `gatekeeper serve` against real Redis and a real decision log (SQLite; PostgreSQL too).

Every endpoint, every role, bad input that changes nothing, write-through objections seen by the very
next FastAGI call, the audit trail, and no plaintext number in answers, the audit table or the logs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import pytest_asyncio

from gatekeeper.devservers import PrivateRedis, free_port
from gatekeeper.index.store import ConsentIndex
from gatekeeper.simulator.fastagi import SimChannel, run_session
from gatekeeper.web.api import PREFIX
from gatekeeper.web.openapi import ERROR_CODES
from tests.web_helpers import POOL, TOKENS, UNKNOWN_TOKEN, WebService, backend_dsn, start_web, web_settings

pytestmark = pytest.mark.integration
NUMBER = "0612345678"  # consent on record for acme (form-1)
FORMS = ("0612345678", "+31612345678", "0031 6 1234 5678", "+31 6 12 34 56 78")
DIGITS = ("612345678", "6 1234 5678", "6-12345678")  # what a leaked number would look like
FRESH = "0612345699"  # nothing on record anywhere
BOTH = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
async def web(redis_server: PrivateRedis, tmp_path: Path, backend: str) -> AsyncIterator[WebService]:
    service = await start_web(web_settings(redis_server.url, backend_dsn(backend, tmp_path)), tmp_path)
    yield service
    await service.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def unchanged(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WebService]:
    """One service for the tests that prove a request changes nothing (each compares before and after)."""
    tmp_path = tmp_path_factory.mktemp("web")
    service = await start_web(web_settings(redis_server.url, backend_dsn("sqlite", tmp_path)), tmp_path)
    yield service
    await service.stop()


SHARED = pytest.mark.asyncio(loop_scope="module")


def check_body(number: str = NUMBER, campaign: str = "acme-sales", **extra: Any) -> dict[str, Any]:
    return {"number": number, "campaign": campaign, "caller_id": POOL, "presentation": 0, **extra}


async def check(web: WebService, number: str = NUMBER, **extra: Any) -> dict[str, Any]:
    status, body, _ = await web.request("POST", f"{PREFIX}/check", body=check_body(number, **extra))
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def fastagi_call(web: WebService, number: str = NUMBER) -> tuple[str | None, str | None]:
    channel = SimChannel(
        url="agi://127.0.0.1/check?campaign=acme-sales",
        extension=number,
        callerid_num=POOL,
        callingpres=0,
        variables={},
        functions={"CHANNEL(linkedid)": "1795860072.68"},
    )
    result = await run_session("127.0.0.1", web.fastagi_port(), channel=channel)
    return result.variables.get("GATEKEEPER_RESULT"), result.variables.get("GATEKEEPER_REASON")


async def index_state(index: ConsentIndex) -> dict[str, Any]:
    """Every consent-index key and its content (the decision log's outbox stream excluded)."""
    client = index.client
    keys = sorted(
        [k async for k in client.scan_iter(match=f"{index.keys.prefix}:*", count=10_000) if b":outbox:" not in k]
    )
    pipe: Any = client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
    return dict(zip(keys, await pipe.execute(), strict=True))


async def counts(web: WebService) -> tuple[int, int]:
    """(decisions in the log, audit entries) after shipping everything decided so far."""
    await web.sync()
    return await web.reader.count(), len(await web.audit())


# -- the document and the routes ----------------------------------------------------------------------


async def test_openapi_document_describes_every_api_route(web: WebService) -> None:
    status, doc, response = await web.request("GET", f"{PREFIX}/openapi.json", token=None)
    assert status == 200 and response.content_type == "application/json"
    assert doc["openapi"].startswith("3.1")
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in web.service.web.router.routes()
        if route.resource is not None and route.resource.canonical.startswith(PREFIX) and route.method != "HEAD"
    }
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert documented == routes
    assert set(doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"]) == set(ERROR_CODES)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (method, path)
            if path != f"{PREFIX}/openapi.json":
                assert {"401", "403"} <= set(op["responses"]), (method, path)


# -- authentication and roles -------------------------------------------------------------------------

ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/check", check_body()),
    ("GET", "/decisions", None),
    ("GET", "/decisions.csv", None),
    ("GET", "/decisions/06H00000000000000000000000", None),
    ("POST", "/consents", {"tenant": "acme", "number": FRESH, "kind": "consent", "start": "2024-01-01"}),
    ("POST", "/objections", {"tenant": "acme", "number": FRESH}),
    ("POST", "/erasures", {"number": "0612345698"}),
    ("GET", f"/numbers/{NUMBER}/report", None),
]
ALLOWED = {
    "admin": {"/check", "/decisions", "/decisions.csv", "/decisions/", "/consents", "/objections", "/erasures",
              "/numbers/"},
    "compliance": {"/check", "/decisions", "/decisions.csv", "/decisions/", "/objections", "/numbers/"},
    "viewer": {"/decisions", "/decisions.csv", "/decisions/"},
}  # fmt: skip


def _family(path: str) -> str:
    if path.startswith("/decisions/"):
        return "/decisions/"
    return "/numbers/" if path.startswith("/numbers/") else path


@SHARED
@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
async def test_every_endpoint_refuses_a_missing_or_unknown_token(
    unchanged: WebService, method: str, path: str, body: dict[str, Any] | None
) -> None:
    web = unchanged
    before = await index_state(web.service.index), await counts(web)
    for token, header in ((None, None), (UNKNOWN_TOKEN, None), (None, "Basic YWRtaW46YWRtaW4="), (None, "Bearer")):
        headers = {"Authorization": header} if header else None
        status, error, response = await web.request(method, PREFIX + path, token=token, body=body, headers=headers)
        assert status == 401, (token, header)
        assert error["error"] == "unauthorized" and error["message"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await index_state(web.service.index), await counts(web)) == before


async def test_each_role_may_do_what_it_is_for_and_nothing_else(web: WebService) -> None:
    for role, token in TOKENS.items():
        for method, path, body in ENDPOINTS:
            status, answer, _ = await web.request(method, PREFIX + path, token=token, body=body)
            if _family(path) in ALLOWED[role]:
                assert status in (200, 404), (role, path, answer)  # 404: the made-up decision id
            else:
                assert status == 403, (role, path)
                assert answer["error"] == "forbidden" and role in answer["message"]


async def test_a_forbidden_change_changes_nothing(web: WebService) -> None:
    before = await index_state(web.service.index), await counts(web)
    status, _, _ = await web.request("POST", f"{PREFIX}/erasures", token=TOKENS["compliance"], body={"number": NUMBER})
    assert status == 403
    status, _, _ = await web.request(
        "POST", f"{PREFIX}/objections", token=TOKENS["viewer"], body={"tenant": "acme", "number": NUMBER}
    )
    assert status == 403
    assert (await index_state(web.service.index), await counts(web)) == before


# -- check ---------------------------------------------------------------------------------------------


async def test_check_decides_like_the_pbx_and_records_the_decision(web: WebService) -> None:
    allowed = await check(web)
    assert (allowed["verdict"], allowed["reason"], allowed["basis_reference"]) == ("allow", "consent", "form-1")
    assert allowed["number_masked"] == "+31 6 ****5678" and allowed["tenant"] == "acme"
    blocked = await check(web, "0612345680")
    assert (blocked["verdict"], blocked["reason"]) == ("block", "objection")
    await web.sync()
    status, stored, _ = await web.request("GET", f"{PREFIX}/decisions/{allowed['decision_id']}", token=TOKENS["viewer"])
    assert status == 200
    assert stored["source"] == "api" and stored["verdict"] == "allow" and stored["number_masked"] == "+31 6 ****5678"
    assert stored["number_hash"] == allowed["number_hash"] and stored["basis_reference"] == "form-1"
    counted = web.service.metrics.registry.get_sample_value(
        "gatekeeper_decisions_total", {"verdict": "allow", "reason": "consent", "campaign": "acme-sales"}
    )
    assert counted == 1.0


async def test_check_with_record_false_is_neither_logged_nor_counted(web: WebService) -> None:
    answer = await check(web, record=False)
    assert answer["verdict"] == "allow"
    assert (await counts(web))[0] == 0
    status, _, _ = await web.request("GET", f"{PREFIX}/decisions/{answer['decision_id']}")
    assert status == 404
    counted = web.service.metrics.registry.get_sample_value(
        "gatekeeper_decisions_total", {"verdict": "allow", "reason": "consent", "campaign": "acme-sales"}
    )
    assert counted == 0.0


async def test_an_unknown_campaign_or_invalid_number_is_a_decision_not_an_error(web: WebService) -> None:
    unknown = await check(web, campaign="spam-blast")
    assert (unknown["verdict"], unknown["reason"], unknown["tenant"]) == ("block", "unknown-campaign", None)
    invalid = await check(web, "06-CALL-ME")
    assert (invalid["verdict"], invalid["reason"], invalid["number_hash"]) == ("block", "invalid-number", None)
    at = await check(web, at="2026-12-05T16:30:00+01:00")  # a Saturday after 16:00
    assert (at["reason"], at["at"]) == ("outside-hours", "2026-12-05T15:30:00.000000Z")  # the record's UTC form


# -- the decision log ------------------------------------------------------------------------------------


@BOTH
async def test_decisions_are_filtered_and_paged_newest_first(web: WebService) -> None:
    made = [
        await check(web),
        await check(web, "0612345680"),
        await check(web, FRESH),
        await check(web, "0612345681", campaign="donors"),
        await check(web, campaign="acme-shadow"),
    ]
    await web.sync()
    status, page, _ = await web.request("GET", f"{PREFIX}/decisions", token=TOKENS["viewer"])
    assert status == 200 and page["next"] is None
    assert [d["decision_id"] for d in page["items"]] == [m["decision_id"] for m in reversed(made)]

    async def ids(query: str) -> list[str]:
        status, page, _ = await web.request("GET", f"{PREFIX}/decisions?{query}")
        assert status == 200, page
        return [d["decision_id"] for d in page["items"]]

    assert await ids("campaign=donors") == [made[3]["decision_id"]]
    assert await ids("tenant=goededoel") == [made[3]["decision_id"]]
    assert await ids("verdict=block") == [made[2]["decision_id"], made[1]["decision_id"]]
    assert await ids("reason=no-basis") == [made[2]["decision_id"]]
    for form in FORMS:  # a typed number in any form finds its decisions (hashed, not stored)
        found = await ids(urlencode({"number": form}))
        assert found == [made[4]["decision_id"], made[0]["decision_id"]], form
    day = made[0]["at"][:10]
    assert len(await ids(f"from={day}&to={day}")) == 5
    assert await ids(f"to={day}&from={day}&campaign=nope") == []
    assert await ids(urlencode({"from": made[2]["at"]})) == [m["decision_id"] for m in reversed(made[2:])]
    assert await ids(urlencode({"to": made[2]["at"]})) == [made[1]["decision_id"], made[0]["decision_id"]]
    # paging: two at a time, following `next`, gives all five newest first and then stops
    seen: list[str] = []
    cursor = ""
    while True:
        status, page, _ = await web.request("GET", f"{PREFIX}/decisions?limit=2{cursor}")
        seen += [d["decision_id"] for d in page["items"]]
        if page["next"] is None:
            break
        cursor = f"&cursor={page['next']}"
    assert seen == [m["decision_id"] for m in reversed(made)]


@BOTH
async def test_the_csv_export_streams_the_filtered_decisions(web: WebService) -> None:
    first, second = await check(web), await check(web, "0612345680")
    await web.sync()
    status, text, response = await web.request("GET", f"{PREFIX}/decisions.csv?verdict=block", token=TOKENS["viewer"])
    assert status == 200 and response.content_type == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["decision_id"] for r in rows] == [second["decision_id"]]
    assert rows[0]["reason"] == "objection" and rows[0]["number_masked"].endswith("****5680")
    status, text, _ = await web.request("GET", f"{PREFIX}/decisions.csv")
    assert [r["decision_id"] for r in csv.DictReader(io.StringIO(text))] == [
        second["decision_id"],
        first["decision_id"],
    ]


async def test_an_unknown_decision_is_not_found(web: WebService) -> None:
    for decision_id in ("06H00000000000000000000000", "x" * 100):
        status, error, _ = await web.request("GET", f"{PREFIX}/decisions/{decision_id}")
        assert (status, error["error"]) == (404, "not-found")


# -- changes ---------------------------------------------------------------------------------------------


async def test_a_consent_upserted_through_the_api_allows_the_next_call(web: WebService) -> None:
    assert (await check(web, FRESH))["reason"] == "no-basis"
    body = {"campaign": "acme-sales", "number": FRESH, "kind": "consent", "start": "2024-01-01", "reference": "web-7"}
    status, done, _ = await web.request("POST", f"{PREFIX}/consents", body=body)
    assert status == 200, done
    assert done["action"] == "consent-upsert" and done["tenant"] == "acme" and done["kind"] == "consent"
    assert (done["created"], done["added"], done["suppressed"]) == (True, 1, False)
    assert done["number_masked"] == "+31 6 ****5699"
    allowed = await check(web, FRESH)
    assert (allowed["verdict"], allowed["reason"], allowed["basis_reference"]) == ("allow", "consent", "web-7")
    status, again, _ = await web.request("POST", f"{PREFIX}/consents", body=body)
    assert (status, again["created"], again["added"]) == (200, False, 0)  # the same fact is stored once
    customer = {"tenant": "goededoel", "number": FRESH, "kind": "customer", "start": "2023-01-01", "end": "2025-06-30"}
    status, done, _ = await web.request("POST", f"{PREFIX}/consents", body=customer)
    assert (status, done["kind"], done["tenant"]) == (200, "customer", "goededoel")


async def test_an_objection_registered_through_the_api_blocks_the_very_next_fastagi_call(web: WebService) -> None:
    assert await fastagi_call(web) == ("ALLOW", "consent")
    status, done, _ = await web.request(
        "POST", f"{PREFIX}/objections", token=TOKENS["compliance"],
        body={"tenant": "acme", "number": "+31 6 12345678", "reference": "letter 2026-11"},
    )  # fmt: skip
    assert status == 200, done
    assert (done["action"], done["tenant"], done["number_masked"]) == ("objection", "acme", "+31 6 ****5678")
    assert await fastagi_call(web) == ("BLOCK", "objection")
    other = await check(web, campaign="donors")  # objections are per tenant
    assert other["reason"] != "objection"


async def test_an_erasure_removes_every_fact_and_suppresses_the_number(web: WebService) -> None:
    status, done, _ = await web.request(
        "POST", f"{PREFIX}/erasures", body={"number": "0612345680", "reference": "art17-9"}
    )
    assert status == 200, done
    assert done["action"] == "erasure" and done["removed"] >= 1 and done["number_masked"] == "+31 6 ****5680"
    blocked = await check(web, "0612345680")
    assert (blocked["verdict"], blocked["reason"]) == ("block", "suppressed")
    status, report, _ = await web.request("GET", f"{PREFIX}/numbers/0612345680/report")
    assert status == 200
    assert all(not (t["consents"] or t["customer"] or t["objections"]) for t in report["tenants"])
    assert [s["reference"] for s in report["suppressions"]] == ["art17-9"]
    body = {"tenant": "acme", "number": "0612345680", "kind": "consent", "start": "2024-01-01"}
    status, upsert, _ = await web.request("POST", f"{PREFIX}/consents", body=body)
    assert (status, upsert["suppressed"], upsert["added"]) == (200, True, 0)  # an erased number takes no facts


@BOTH
async def test_the_access_report_lists_facts_per_tenant_and_every_decision(web: WebService) -> None:
    made = [await check(web, "0612345681", campaign="donors"), await check(web, "+31612345681")]
    await web.sync()
    status, report, _ = await web.request("GET", f"{PREFIX}/numbers/%2B31612345681/report", token=TOKENS["compliance"])
    assert status == 200
    assert report["number_masked"] == "+31 6 ****5681" and report["number_hash"] == made[0]["number_hash"]
    by_tenant = {t["tenant"]: t for t in report["tenants"]}
    assert set(by_tenant) == {"acme", "goededoel", "other"}
    assert by_tenant["goededoel"]["customer"] == [{"start": "2015-01-01", "end": None, "reference": "donor"}]
    assert by_tenant["acme"]["consents"] == [] and by_tenant["other"]["generation"] is None
    assert [d["decision_id"] for d in report["decisions"]] == [m["decision_id"] for m in reversed(made)]
    for query, headers in (("?format=csv", None), ("", {"Accept": "text/csv"})):
        status, text, response = await web.request("GET", f"{PREFIX}/numbers/0612345681/report{query}", headers=headers)
        assert status == 200 and response.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [r["record"] for r in rows] == ["fact", "decision", "decision"]
        assert rows[0]["kind"] == "customer" and rows[0]["reference"] == "donor"
        assert {r["number_hash"] for r in rows} == {made[0]["number_hash"]}


# -- bad input ---------------------------------------------------------------------------------------------

BIG = "x" * (64 * 1024 + 1)
HUGE = "9" * 5000  # digits: more than Python's int() converts (4,300)
BAD: list[tuple[str, str, Any, int, str, str | None]] = [
    # path, description, body (dict: JSON; str/bytes: raw), status, error, field
    ("/objections", "invalid number", {"tenant": "acme", "number": "12"}, 400, "invalid-field", "number"),
    ("/objections", "letters", {"tenant": "acme", "number": "06-CALL-ME"}, 400, "invalid-field", "number"),
    ("/objections", "emergency", {"tenant": "acme", "number": "112"}, 400, "invalid-field", "number"),
    ("/objections", "unknown tenant", {"tenant": "nope", "number": NUMBER}, 400, "unknown-tenant", "tenant"),
    ("/objections", "no tenant", {"number": NUMBER}, 400, "invalid-field", "tenant"),
    ("/objections", "tenant and campaign", {"tenant": "acme", "campaign": "acme-sales", "number": NUMBER}, 400,
     "invalid-field", "campaign"),
    ("/objections", "unknown field", {"tenant": "acme", "number": NUMBER, "numbr": 1}, 400, "invalid-field", "numbr"),
    ("/objections", "number not a string", {"tenant": "acme", "number": 31612345678}, 400, "invalid-field", "number"),
    ("/objections", "control characters", {"tenant": "acme", "number": NUMBER, "reference": "a\x00b"}, 400,
     "invalid-field", "reference"),
    ("/objections", "malformed JSON", '{"tenant": "acme", "number": ', 400, "invalid-json", None),
    ("/objections", "not an object", '["acme", "0612345678"]', 400, "invalid-json", None),
    ("/objections", "not UTF-8", b'{"tenant": "\xff"}', 400, "invalid-json", None),
    ("/objections", "empty body", "", 400, "invalid-json", None),
    ("/objections", "oversized body", json.dumps({"tenant": "acme", "number": NUMBER, "reference": BIG}), 413,
     "body-too-large", None),
    ("/consents", "unknown campaign", {"campaign": "spam-blast", "number": NUMBER, "kind": "consent",
                                       "start": "2024-01-01"}, 400, "unknown-campaign", "campaign"),
    ("/consents", "bad start date", {"tenant": "acme", "number": NUMBER, "kind": "consent", "start": "2024-13-01"},
     400, "invalid-field", "start"),
    ("/consents", "end before start", {"tenant": "acme", "number": NUMBER, "kind": "consent", "start": "2024-05-01",
                                       "end": "2024-01-01"}, 400, "invalid-field", "end"),
    ("/consents", "bad kind", {"tenant": "acme", "number": NUMBER, "kind": "objection", "start": "2024-01-01"}, 400,
     "invalid-field", "kind"),
    ("/consents", "no start", {"tenant": "acme", "number": NUMBER, "kind": "consent"}, 400, "invalid-field", "start"),
    ("/consents", "invalid number", {"tenant": "acme", "number": "+999", "kind": "consent", "start": "2024-01-01"},
     400, "invalid-field", "number"),
    ("/erasures", "invalid number", {"number": "0612"}, 400, "invalid-field", "number"),
    ("/erasures", "unknown field", {"number": NUMBER, "tenant": "acme"}, 400, "invalid-field", "tenant"),
    ("/check", "bad time", check_body(at="tomorrow"), 400, "invalid-field", "at"),
    ("/check", "time without offset", check_body(at="2026-12-01T10:30:00"), 400, "invalid-field", "at"),
    ("/check", "time out of range", check_body(at="1066-10-14T09:00:00Z"), 400, "invalid-field", "at"),
    ("/check", "presentation out of range", check_body(presentation=300), 400, "invalid-field", "presentation"),
    ("/check", "record not a boolean", check_body(record="no"), 400, "invalid-field", "record"),
    ("/check", "no campaign", {"number": NUMBER}, 400, "invalid-field", "campaign"),
    ("/check", "unknown field", check_body(dry_run=True), 400, "invalid-field", "dry_run"),
    ("/check", "malformed JSON", "{number: 0612345678}", 400, "invalid-json", None),
    ("/check", "oversized body", BIG, 413, "body-too-large", None),
    # numbers Python's int() or float() would refuse or overflow on: a 400, never a 500
    ("/check", "5,000-digit integer", f'{{"number": "{NUMBER}", "campaign": "acme-sales", "presentation": {HUGE}}}',
     400, "invalid-json", None),
    ("/check", "negative 5,000-digit integer", f'{{"number": "{NUMBER}", "campaign": "acme-sales", '
     f'"presentation": -{HUGE}}}', 400, "invalid-json", None),
    ("/check", "NaN", f'{{"number": "{NUMBER}", "campaign": "acme-sales", "presentation": NaN}}', 400,
     "invalid-json", None),
    ("/check", "-Infinity", f'{{"number": "{NUMBER}", "campaign": "acme-sales", "presentation": -Infinity}}', 400,
     "invalid-json", None),
    ("/check", "number out of range", f'{{"number": "{NUMBER}", "campaign": "acme-sales", "presentation": 1e400}}',
     400, "invalid-json", None),
    ("/check", "nested too deeply", "[" * 60_000, 400, "invalid-json", None),
    ("/consents", "5,000-digit integer", f'{{"tenant": "acme", "number": {HUGE}, "kind": "consent", '
     '"start": "2024-01-01"}', 400, "invalid-json", None),
    ("/objections", "5,000-digit integer", f'{{"tenant": "acme", "number": "{NUMBER}", "reference": {HUGE}}}', 400,
     "invalid-json", None),
    ("/erasures", "5,000-digit integer in an unknown field", f'{{"number": "{NUMBER}", "n": {HUGE}}}', 400,
     "invalid-json", None),
    ("/consents", "end in the year 9999", {"tenant": "acme", "number": NUMBER, "kind": "consent",
                                           "start": "2024-01-01", "end": "9999-12-31"}, 400, "invalid-field", "end"),
    ("/consents", "start in the year 1", {"tenant": "acme", "number": NUMBER, "kind": "consent",
                                          "start": "0001-01-01", "end": "2030-12-31"}, 400, "invalid-field", "start"),
]  # fmt: skip


@SHARED
@pytest.mark.parametrize(("path", "what", "body", "status", "code", "field"), BAD, ids=[f"{p} {w}" for p, w, *_ in BAD])
async def test_bad_input_gives_a_clear_error_and_changes_nothing(
    unchanged: WebService, path: str, what: str, body: Any, status: int, code: str, field: str | None
) -> None:
    web = unchanged
    before = await index_state(web.service.index), await counts(web)
    if isinstance(body, dict):
        got, error, response = await web.request("POST", PREFIX + path, body=body)
    else:
        data = body.encode() if isinstance(body, str) else body
        got, error, response = await web.request(
            "POST", PREFIX + path, data=data, headers={"Content-Type": "application/json"}
        )
    assert response.content_type == "application/json"
    assert (got, error["error"], error.get("field")) == (status, code, field), error
    assert error["message"] and (field is None or error["message"].startswith(field))
    assert (await index_state(web.service.index), await counts(web)) == before


BAD_QUERIES = [
    ("verdict=maybe", "verdict"),
    ("reason=bad-luck", "reason"),
    ("from=yesterday", "from"),
    ("to=2026-02-30", "to"),
    ("from=2026-03-02&to=2026-03-01", "to"),
    ("limit=0", "limit"),
    ("limit=501", "limit"),
    ("limit=ten", "limit"),
    ("limit=%C2%B2", "limit"),  # "²": str.isdigit() says yes, int() says no
    ("limit=%D9%A3", "limit"),  # "٣", an Arabic-Indic 3
    ("limit=-1", "limit"),
    ("from=9999-12-31", "from"),
    ("to=0001-01-01T00:00:00Z", "to"),
    ("cursor=not-a-cursor", "cursor"),
    ("number=12", "number"),
]


@SHARED
@pytest.mark.parametrize(("query", "field"), BAD_QUERIES)
async def test_bad_filters_name_the_parameter(unchanged: WebService, query: str, field: str) -> None:
    web = unchanged
    for path in ("/decisions", "/decisions.csv"):
        if path.endswith(".csv") and field in ("limit", "cursor"):
            continue
        status, error, _ = await web.request("GET", f"{PREFIX}{path}?{query}")
        assert (status, error["error"], error["field"]) == (400, "invalid-field", field), (path, error)


@SHARED
async def test_an_oversized_integer_is_named_in_the_error(unchanged: WebService) -> None:
    for path in ("/check", "/consents", "/objections", "/erasures"):
        status, error, _ = await unchanged.request(
            "POST", PREFIX + path, data=f'{{"number": {HUGE}}}', headers={"Content-Type": "application/json"}
        )
        assert (status, error["message"]) == (400, "the body holds an integer of 5,000 digits (at most 20)"), path


async def test_bad_report_requests(web: WebService) -> None:
    status, error, _ = await web.request("GET", f"{PREFIX}/numbers/12/report")
    assert (status, error["error"], error["field"]) == (400, "invalid-field", "number")
    status, error, _ = await web.request("GET", f"{PREFIX}/numbers/{NUMBER}/report?format=pdf")
    assert (status, error["field"]) == (400, "format")
    assert await web.audit() == []


async def test_unknown_routes_and_methods_answer_in_json(web: WebService) -> None:
    status, error, _ = await web.request("GET", f"{PREFIX}/nothing-here")
    assert (status, error["error"]) == (404, "not-found")
    status, error, _ = await web.request("DELETE", f"{PREFIX}/decisions")
    assert (status, error["error"]) == (405, "method-not-allowed")


# -- unavailable backends -------------------------------------------------------------------------------------


async def test_without_redis_changes_fail_with_503_and_calls_fail_closed(tmp_path: Path) -> None:
    settings = web_settings(f"redis://127.0.0.1:{free_port()}/0", backend_dsn("sqlite", tmp_path))
    web = await start_web(settings, tmp_path, rows=[])
    try:
        for path, body in (
            ("/objections", {"tenant": "acme", "number": NUMBER}),
            ("/erasures", {"number": NUMBER}),
            ("/consents", {"tenant": "acme", "number": NUMBER, "kind": "consent", "start": "2024-01-01"}),
        ):
            status, error, _ = await web.request("POST", PREFIX + path, body=body)
            assert (status, error["error"]) == (503, "index-unavailable"), path
        status, error, _ = await web.request("GET", f"{PREFIX}/numbers/{NUMBER}/report")
        assert (status, error["error"]) == (503, "index-unavailable")
        decided = await check(web)
        assert (decided["verdict"], decided["reason"]) == ("block", "index-unavailable")
        assert await web.audit() == []  # nothing was changed, so nothing is audited
    finally:
        await web.stop()


async def test_without_the_log_database_reads_fail_with_503_and_calls_still_decide(
    redis_server: PrivateRedis, tmp_path: Path
) -> None:
    settings = web_settings(redis_server.url, f"postgresql://postgres@127.0.0.1:{free_port()}/none?connect_timeout=2")
    service = await start_web(settings, tmp_path, open_log=False)
    try:
        for path in ("/decisions", "/decisions.csv", "/decisions/06H00000000000000000000000"):
            status, error, _ = await service.request("GET", PREFIX + path, token=TOKENS["viewer"])
            assert (status, error["error"]) == (503, "log-unavailable"), path
        before = await index_state(service.service.index)
        status, error, _ = await service.request(
            "POST", f"{PREFIX}/objections", body={"tenant": "acme", "number": NUMBER}
        )
        assert (status, error["error"]) == (503, "log-unavailable")  # no change without its audit entry
        assert await index_state(service.service.index) == before
        status, decided, _ = await service.request("POST", f"{PREFIX}/check", body=check_body())
        assert (status, decided["verdict"]) == (200, "allow")
    finally:
        await service.stop()


# -- audit and privacy ------------------------------------------------------------------------------------------


@BOTH
async def test_the_audit_table_records_who_did_what_without_a_number(web: WebService) -> None:
    await web.request("POST", f"{PREFIX}/objections", token=TOKENS["compliance"],
                      body={"campaign": "acme-sales", "number": NUMBER, "reference": "call 1"})  # fmt: skip
    await web.request("POST", f"{PREFIX}/consents",
                      body={"tenant": "acme", "number": FRESH, "kind": "consent", "start": "2024-01-01"})  # fmt: skip
    await web.request("POST", f"{PREFIX}/erasures", body={"number": "0612345680"})
    await web.request("GET", f"{PREFIX}/numbers/{NUMBER}/report", token=TOKENS["compliance"])
    entries = list(reversed(await web.audit()))
    assert [(e.actor, e.role, e.action) for e in entries] == [
        ("compliance-desk", "compliance", "objection"),
        ("admin-desk", "admin", "consent-upsert"),
        ("admin-desk", "admin", "erasure"),
        ("compliance-desk", "compliance", "access-report"),
    ]
    keys = web.service.index.keys
    assert [e.number_hash for e in entries] == [
        keys.number_hash("+31612345678"), keys.number_hash("+31612345699"), keys.number_hash("+31612345680"),
        keys.number_hash("+31612345678"),
    ]  # fmt: skip
    assert entries[0].details == {"via": "api", "tenant": "acme", "reference": "call 1"}
    assert entries[2].details["removed"] >= 1
    assert all(e.at.tzinfo is not None for e in entries)
    async with web.reader.db.transaction(write=False) as tx:
        dump = repr(await tx.fetchall("SELECT * FROM audit"))
    assert not any(d in dump for d in ("612345678", "612345699", "612345680"))


async def test_no_plaintext_number_in_answers_or_logs(web: WebService, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answers: list[str] = []
    for number in FORMS:
        for method, path, body in (
            ("POST", "/check", check_body(number)),
            ("POST", "/objections", {"tenant": "acme", "number": number}),
            ("POST", "/consents", {"tenant": "acme", "number": number, "kind": "consent", "start": "2024-01-01"}),
            ("GET", f"/numbers/{quote(number, safe='')}/report", None),
            ("GET", f"/numbers/{quote(number, safe='')}/report?format=csv", None),
            ("GET", "/decisions?" + urlencode({"number": number}), None),
            ("GET", "/decisions.csv?" + urlencode({"number": number}), None),
            ("POST", "/objections", {"tenant": "nope", "number": number}),
        ):
            status, body_out, _ = await web.request(method, PREFIX + path, body=body)
            assert status in (200, 400), (path, body_out)
            answers.append(body_out if isinstance(body_out, str) else json.dumps(body_out))
        await web.sync()
    status, _, _ = await web.request("POST", f"{PREFIX}/erasures", body={"number": NUMBER})
    assert status == 200
    text = "\n".join(answers) + caplog.text
    assert "****5678" in text
    assert not any(digits in text for digits in DIGITS)


async def test_security_headers_on_api_answers(web: WebService) -> None:
    for token in (TOKENS["viewer"], None):
        _, _, response = await web.request("GET", f"{PREFIX}/decisions", token=token)
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
