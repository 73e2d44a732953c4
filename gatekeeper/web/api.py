"""The HTTP API under `/api/v1`: JSON in and out, bearer tokens, one permission per endpoint.

The OpenAPI document (`gatekeeper.web.openapi`, served at `/api/v1/openapi.json`) describes every route
here; `tests/integration/test_web_schema.py` holds the two to each other with schemathesis.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from gatekeeper.contract import Source
from gatekeeper.gate import CallRequest
from gatekeeper.log.query import CursorError
from gatekeeper.log.sql import DATABASE_ERRORS
from gatekeeper.web.auth import Permission, Principal, TokenBook, bearer_token
from gatekeeper.web.compliance import Compliance, log_unavailable
from gatekeeper.web.inputs import ApiError, Query, date_time, decision_query, invalid, json_object
from gatekeeper.web.openapi import document

log = logging.getLogger(__name__)
PREFIX = "/api/v1"
CSV_TYPE = "text/csv; charset=utf-8"


def authorise(request: web.Request, tokens: TokenBook, permission: Permission) -> Principal:
    """The caller of an API request, if its token is valid and its role allows `permission`."""
    header = request.headers.get("Authorization")
    principal = tokens.authenticate(bearer_token(header))
    if principal is None:
        message = "a valid token is required (Authorization: Bearer <token>)" if header else "no token given"
        raise ApiError(401, "unauthorized", message)
    if not principal.can(permission):
        raise ApiError(403, "forbidden", f"the role {principal.role.value} may not {permission.value}")
    return principal


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


class Api:
    def __init__(self, compliance: Compliance, tokens: TokenBook) -> None:
        self.compliance = compliance
        self.tokens = tokens
        self._document = document(compliance.settings)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get(f"{PREFIX}/openapi.json", self.openapi, name="api-openapi")
        r.add_post(f"{PREFIX}/check", self.check, name="api-check")
        r.add_get(f"{PREFIX}/decisions", self.decisions, name="api-decisions")
        r.add_get(f"{PREFIX}/decisions.csv", self.decisions_csv, name="api-decisions-csv")
        r.add_get(f"{PREFIX}/decisions/{{id}}", self.decision, name="api-decision")
        r.add_post(f"{PREFIX}/consents", self.consents, name="api-consents")
        r.add_post(f"{PREFIX}/objections", self.objections, name="api-objections")
        r.add_post(f"{PREFIX}/erasures", self.erasures, name="api-erasures")
        r.add_get(f"{PREFIX}/numbers/{{number}}/report", self.report, name="api-report")

    def _auth(self, request: web.Request, permission: Permission) -> Principal:
        return authorise(request, self.tokens, permission)

    def _query(self, request: web.Request) -> Query:
        return decision_query(request.query, self.compliance.numbers, self.compliance.number_hash)

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(self._document)

    async def check(self, request: web.Request) -> web.Response:
        self._auth(request, Permission.CHECK)
        f = await json_object(request)
        number = f.required("number", limit=64)
        campaign = f.required("campaign", limit=64)
        at_text = f.text("at", limit=40)
        caller_id = f.text("caller_id", limit=64)
        presentation = f.integer("presentation", 0, 255)
        record = f.boolean("record", True)
        f.finish()
        at = date_time("at", at_text) if at_text is not None else None
        call = CallRequest(number, campaign, caller_id, presentation, at, source=Source.API)
        result = await self.compliance.check(call, record=record)
        return json_response(result.public_json())

    async def decisions(self, request: web.Request) -> web.Response:
        self._auth(request, Permission.READ_LOG)
        query = self._query(request)
        async with self.compliance.log.use() as reader:
            try:
                page = await reader.list_decisions(query.where, limit=query.limit, cursor=query.cursor)
            except CursorError as exc:
                raise invalid("cursor", str(exc)) from None
        return json_response({"items": [item.to_json() for item in page.items], "next": page.next})

    async def decision(self, request: web.Request) -> web.Response:
        self._auth(request, Permission.READ_LOG)
        decision_id = request.match_info["id"]
        async with self.compliance.log.use() as reader:
            stored = await reader.get(decision_id) if len(decision_id) <= 64 else None
        if stored is None:
            raise ApiError(404, "not-found", "no decision with that id")
        return json_response(stored.to_json())

    async def decisions_csv(self, request: web.Request) -> web.StreamResponse:
        self._auth(request, Permission.READ_LOG)
        return await stream_csv(request, self.compliance, self._query(request))

    async def consents(self, request: web.Request) -> web.Response:
        who = self._auth(request, Permission.UPSERT)
        f = await json_object(request)
        tenant, campaign = f.text("tenant", limit=64), f.text("campaign", limit=64)
        number = f.required("number", limit=64)
        kind = f.required("kind", limit=20)
        start = f.required("start", limit=40)
        end = f.text("end", limit=40)
        reference = f.text("reference")
        f.finish()
        item = self.compliance.consent_input(tenant, campaign, number, kind, start, end, reference)
        done = await self.compliance.upsert(who, "api", item)
        return json_response(done.to_json())

    async def objections(self, request: web.Request) -> web.Response:
        who = self._auth(request, Permission.OBJECT)
        f = await json_object(request)
        tenant, campaign = f.text("tenant", limit=64), f.text("campaign", limit=64)
        number = f.required("number", limit=64)
        reference = f.text("reference")
        f.finish()
        item = self.compliance.objection_input(tenant, campaign, number, reference)
        done = await self.compliance.object(who, "api", item)
        return json_response(done.to_json())

    async def erasures(self, request: web.Request) -> web.Response:
        who = self._auth(request, Permission.ERASE)
        f = await json_object(request)
        number = f.required("number", limit=64)
        reference = f.text("reference")
        f.finish()
        item = self.compliance.erasure_input(number, reference)
        done = await self.compliance.erase(who, "api", item)
        return json_response(done.to_json())

    async def report(self, request: web.Request) -> web.Response:
        who = self._auth(request, Permission.REPORT)
        wanted = request.query.get("format")
        if wanted not in (None, "json", "csv"):
            raise invalid("format", "must be json or csv")
        if wanted is None:
            wanted = "csv" if "text/csv" in request.headers.get("Accept", "") else "json"
        e164 = self.compliance.numbers.e164("number", request.match_info["number"])
        report = await self.compliance.report(who, "api", e164)
        if wanted == "csv":
            return web.Response(
                text=report.csv(self.compliance.zones),
                content_type="text/csv",
                charset="utf-8",
                headers={"Content-Disposition": f'attachment; filename="access-report-{report.number_hash}.csv"'},
            )
        return json_response(report.to_json())


async def stream_csv(request: web.Request, compliance: Compliance, query: Query) -> web.StreamResponse:
    """The matching decisions as CSV, streamed a page at a time (an error before the first byte is JSON)."""
    response = web.StreamResponse(
        headers={"Content-Type": CSV_TYPE, "Content-Disposition": 'attachment; filename="decisions.csv"'}
    )
    async with compliance.log.use() as reader:
        chunks = reader.export_csv(query.where, zones=compliance.zones)
        try:
            first = await anext(chunks)
        except DATABASE_ERRORS as exc:
            raise log_unavailable(exc) from None
    await response.prepare(request)
    await response.write(first.encode())
    async for chunk in chunks:  # a database failure now cuts the download short (it is not a valid CSV)
        await response.write(chunk.encode())
    await response.write_eof()
    return response


def error_response(error: ApiError) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="gatekeeper"'} if error.status == 401 else None
    return web.json_response(error.to_json(), status=error.status, headers=headers)


HTTP_CODES = {
    404: ("not-found", "no such endpoint"),
    405: ("method-not-allowed", "the endpoint does not take this method"),
    413: ("body-too-large", "the body is too large"),
}


@web.middleware
async def api_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every API failure as `{"error", "message", "field"?}`; an unexpected one is logged (never the URL)."""
    if not request.path.startswith(PREFIX + "/") and request.path != PREFIX:
        response: web.StreamResponse = await handler(request)
        return response
    try:
        response = await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = HTTP_CODES.get(exc.status, ("http-error", exc.reason))
        return error_response(ApiError(exc.status, code, message))
    except Exception:
        log.exception("API request failed: %s %s", request.method, request.match_info.route.name)
        return error_response(ApiError(500, "internal", "an unexpected error; it has been logged"))
    return response
