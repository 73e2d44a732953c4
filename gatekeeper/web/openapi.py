"""The OpenAPI 3.1 document of the API, served at `GET /api/v1/openapi.json`.

Built here, next to nothing else, so it reads as the API's reference: every route of `gatekeeper.web.api`,
its parameters, bodies, responses and error codes. Schemathesis checks the running API against it.
"""

from __future__ import annotations

from typing import Any

from gatekeeper import __version__
from gatekeeper.config import Settings
from gatekeeper.contract import IndexFailure, Reason, Source, Verdict
from gatekeeper.web.inputs import MAX_BODY, MAX_PAGE, MAX_TEXT

ERROR_CODES = (
    "unauthorized",
    "forbidden",
    "not-found",
    "method-not-allowed",
    "invalid-json",
    "invalid-field",
    "body-too-large",
    "unknown-campaign",
    "unknown-tenant",
    "index-unavailable",
    "log-unavailable",
    "internal",
    "http-error",
)

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **extra: Any) -> Schema:
    return {"type": [kind, "null"], **extra}


TEXT = {"type": "string", "maxLength": MAX_TEXT}
NAME = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"\S"}
NUMBER_IN = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "pattern": r"\S",
    "description": "A telephone number as dialled: E.164 (+31612345678), 0031…, or national for the default region.",
    "examples": ["+31612345678", "0612345678"],
}
HASH = {"type": "string", "description": "The number's keyed hash (HMAC-SHA256 with the pepper): never the number."}
MASKED = {"type": "string", "description": "The masked number, e.g. `+31 6 ****5678`.", "examples": ["+31 6 ****5678"]}
TIME = {"type": "string", "format": "date-time"}
MOMENT = {
    "type": ["string", "null"],
    "description": "A whole day (YYYY-MM-DD, in the campaign's time zone) or an instant (date-time, UTC).",
}


# The decision record's fields (`gatekeeper.record.DecisionRecord.public_json`), and what the log adds.
RECORD_PROPERTIES: dict[str, Schema] = {
    "decision_id": {"type": "string"},
    "at": TIME,
    "instance": {"type": "string"},
    "campaign": {"type": "string"},
    "tenant": _nullable("string"),
    "number_masked": MASKED,
    "number_hash": _nullable("string"),
    "verdict": {"type": "string", "enum": [v.value for v in Verdict]},
    "reason": {"type": "string", "enum": [r.value for r in Reason]},
    "would_block": {"type": "boolean"},
    "regime": _nullable("string"),
    "explanation": {"type": "string"},
    "basis_reference": _nullable("string", description="The evidence: e.g. the consent's reference."),
    "rule": {"type": "integer"},
    "generation": _nullable("integer", description="The consent-index generation the decision used."),
    "uniqueid": {"type": "string"},
    "linkedid": {"type": "string"},
    "source": {"type": "string", "enum": [s.value for s in Source]},
    "latency_us": {"type": "integer", "description": "Microseconds from the request to the verdict."},
    "index_error": _nullable(
        "string", description="Why the consent index did not answer (the call was blocked): " + ", ".join(IndexFailure)
    ),
}
CHAIN_PROPERTIES: dict[str, Schema] = {
    "seq": {"type": "integer"},
    "stream_id": {"type": "string"},
    "shipped_at": TIME,
    "prev_hash": {"type": "string"},
    "hash": {"type": "string"},
}


def _schemas() -> dict[str, Schema]:
    fact = {
        "type": "object",
        "required": ["start", "end", "reference"],
        "additionalProperties": False,
        "properties": {"start": MOMENT, "end": MOMENT, "reference": {"type": "string"}},
    }
    dated = {
        "type": "object",
        "required": ["at", "reference"],
        "additionalProperties": False,
        "properties": {"at": MOMENT, "reference": {"type": "string"}},
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "additionalProperties": False,
            "properties": {
                "error": {"type": "string", "enum": list(ERROR_CODES), "description": "A stable error code."},
                "message": {"type": "string", "description": "What is wrong, for a person."},
                "field": {"type": "string", "description": "The body field or parameter at fault (bad input only)."},
            },
        },
        "CheckRequest": {
            "type": "object",
            "required": ["number", "campaign"],
            "additionalProperties": False,
            "properties": {
                "number": NUMBER_IN,
                "campaign": {**NAME, "description": "A configured campaign; an unknown one is decided (blocked)."},
                "at": {**TIME, "description": "The call time (with an offset; years 2000–2100). Default: now."},
                "caller_id": _nullable("string", maxLength=64, description="The presented caller ID, if any."),
                "presentation": _nullable(
                    "integer",
                    minimum=0,
                    maximum=255,
                    description="Asterisk's numeric calling presentation (0 = allowed).",
                ),
                "record": _nullable(
                    "boolean", description="Record the decision in the log like a call (default true)."
                ),
            },
        },
        "CheckResult": {
            "type": "object",
            "description": "The decision record, as the gate made it (the log adds its chain fields).",
            "required": list(RECORD_PROPERTIES),
            "additionalProperties": False,
            "properties": RECORD_PROPERTIES,
        },
        "Decision": {
            "type": "object",
            "description": "A decision as the log keeps it, with its place in its instance's hash chain.",
            "required": [*RECORD_PROPERTIES, *CHAIN_PROPERTIES],
            "additionalProperties": False,
            "properties": {**RECORD_PROPERTIES, **CHAIN_PROPERTIES},
        },
        "DecisionPage": {
            "type": "object",
            "required": ["items", "next"],
            "additionalProperties": False,
            "properties": {
                "items": {"type": "array", "items": _ref("Decision")},
                "next": _nullable("string", description="Pass as `cursor` for the next (older) page; null at the end."),
            },
        },
        "ConsentRequest": {
            "type": "object",
            "description": "Give exactly one of tenant and campaign (a campaign stands for its tenant).",
            "required": ["number", "kind", "start"],
            "additionalProperties": False,
            "properties": {
                "tenant": _nullable("string", maxLength=64),
                "campaign": _nullable("string", maxLength=64),
                "number": NUMBER_IN,
                "kind": {"type": "string", "enum": ["consent", "customer"]},
                "start": {"type": "string", "maxLength": 40, "description": "YYYY-MM-DD or a date-time."},
                "end": _nullable("string", maxLength=40, description="YYYY-MM-DD or a date-time; absent: open."),
                "reference": _nullable("string", maxLength=MAX_TEXT, description="Where the evidence is kept."),
            },
        },
        "ConsentResult": {
            "type": "object",
            "required": [
                "action",
                "number_masked",
                "number_hash",
                "at",
                "tenant",
                "kind",
                "created",
                "added",
                "suppressed",
            ],
            "additionalProperties": False,
            "properties": {
                "action": {"const": "consent-upsert"},
                "number_masked": MASKED,
                "number_hash": HASH,
                "at": TIME,
                "tenant": {"type": "string"},
                "kind": {"type": "string", "enum": ["consent", "customer"]},
                "created": {"type": "boolean", "description": "The number had no record for the tenant before."},
                "added": {"type": "integer", "description": "Entries that were new (0: already on record)."},
                "suppressed": {"type": "boolean", "description": "The number is erased/suppressed: nothing stored."},
            },
        },
        "ObjectionRequest": {
            "type": "object",
            "description": "Give exactly one of tenant and campaign.",
            "required": ["number"],
            "additionalProperties": False,
            "properties": {
                "tenant": _nullable("string", maxLength=64),
                "campaign": _nullable("string", maxLength=64),
                "number": NUMBER_IN,
                "reference": _nullable("string", maxLength=MAX_TEXT),
            },
        },
        "ObjectionResult": {
            "type": "object",
            "required": ["action", "number_masked", "number_hash", "at", "tenant"],
            "additionalProperties": False,
            "properties": {
                "action": {"const": "objection"},
                "number_masked": MASKED,
                "number_hash": HASH,
                "at": TIME,
                "tenant": {"type": "string"},
            },
        },
        "ErasureRequest": {
            "type": "object",
            "required": ["number"],
            "additionalProperties": False,
            "properties": {"number": NUMBER_IN, "reference": _nullable("string", maxLength=MAX_TEXT)},
        },
        "ErasureResult": {
            "type": "object",
            "required": ["action", "number_masked", "number_hash", "at", "removed"],
            "additionalProperties": False,
            "properties": {
                "action": {"const": "erasure"},
                "number_masked": MASKED,
                "number_hash": HASH,
                "at": TIME,
                "removed": {"type": "integer", "description": "Records removed from the index."},
            },
        },
        "Report": {
            "type": "object",
            "description": "GDPR art. 15: every fact the index holds for the number, per tenant, and its decisions.",
            "required": ["number_masked", "number_hash", "generated_at", "tenants", "suppressions", "decisions"],
            "additionalProperties": False,
            "properties": {
                "number_masked": MASKED,
                "number_hash": HASH,
                "generated_at": TIME,
                "tenants": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["tenant", "generation", "consents", "customer", "objections"],
                        "additionalProperties": False,
                        "properties": {
                            "tenant": {"type": "string"},
                            "generation": _nullable("integer"),
                            "consents": {"type": "array", "items": fact},
                            "customer": {"type": "array", "items": fact},
                            "objections": {"type": "array", "items": dated},
                        },
                    },
                },
                "suppressions": {"type": "array", "items": dated},
                "decisions": {"type": "array", "items": _ref("Decision")},
            },
        },
    }


def _error(description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


ERRORS = {
    "400": _error("Bad input: `invalid-json`, `invalid-field` (with `field`), `unknown-campaign`, `unknown-tenant`."),
    "401": _error("`unauthorized`: no token, or not a configured one."),
    "403": _error("`forbidden`: the token's role does not allow this."),
    "404": _error("`not-found`."),
    "413": _error(f"`body-too-large`: the body exceeds {MAX_BODY} bytes."),
    "503": _error("`index-unavailable` (Redis) or `log-unavailable` (the SQL decision log); nothing was changed."),
}


def _errors(*codes: str) -> dict[str, Schema]:
    return {code: ERRORS[code] for code in codes}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(name: str) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _query(name: str, description: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


FILTERS = [
    _query(
        "from",
        "Decisions at or after: a date (from its start, in the default region's time zone) or a date-time.",
        {"type": "string", "maxLength": 40},
    ),
    _query(
        "to",
        "Decisions before: a date (including that whole day) or a date-time (exclusive).",
        {"type": "string", "maxLength": 40},
    ),
    _query("campaign", "Only this campaign.", {"type": "string", "maxLength": 64}),
    _query("tenant", "Only this tenant.", {"type": "string", "maxLength": 64}),
    _query("verdict", "Only this verdict.", {"type": "string", "enum": [v.value for v in Verdict]}),
    _query("reason", "Only this reason.", {"type": "string", "enum": [r.value for r in Reason]}),
    _query(
        "number",
        "Only this number: hashed with the pepper before the query, never stored.",
        {"type": "string", "maxLength": 64},
    ),
]
PAGING = [
    _query("limit", f"Page size (1–{MAX_PAGE}, default 50).", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
    _query("cursor", "The `next` of the previous page.", {"type": "string", "maxLength": 200}),
]


def document(settings: Settings | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document (campaign names of `settings` appear as examples)."""
    campaigns = sorted(settings.campaigns) if settings is not None else []
    schemas = _schemas()
    if campaigns:
        schemas["CheckRequest"]["properties"]["campaign"]["examples"] = campaigns[:5]
    csv_ok = {
        "description": "CSV (UTF-8, header row first), streamed. Times are ISO 8601 in the time zone of the "
        "decision's campaign, with its offset (2026-12-03T00:32:32.120000+01:00).",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gatekeeper API",
            "version": __version__,
            "description": "Check calls, maintain consent records, register objections and erasures, read the "
            "decision log and answer access requests. Send `Authorization: Bearer <token>`; roles: admin "
            "(everything), compliance (read, check, reports, objections), viewer (read the log). Errors are JSON "
            "`{error, message, field?}` with a stable `error` code. Numbers in responses are masked or hashed.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document (no token needed).",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
                }
            },
            "/api/v1/check": {
                "post": {
                    "operationId": "check",
                    "summary": "Decide a call like the PBX would (roles: admin, compliance).",
                    "description": "An unknown campaign or an invalid number is a decision (blocked), not an error.",
                    "requestBody": _body("CheckRequest"),
                    "responses": {
                        "200": _json(_ref("CheckResult"), "The decision."),
                        **_errors("400", "401", "403", "413"),
                    },
                }
            },
            "/api/v1/decisions": {
                "get": {
                    "operationId": "listDecisions",
                    "summary": "Decisions, newest first, one page at a time (all roles).",
                    "parameters": FILTERS + PAGING,
                    "responses": {
                        "200": _json(_ref("DecisionPage"), "One page."),
                        **_errors("400", "401", "403", "503"),
                    },
                }
            },
            "/api/v1/decisions.csv": {
                "get": {
                    "operationId": "exportDecisions",
                    "summary": "Every matching decision as CSV, newest first (all roles).",
                    "parameters": FILTERS,
                    "responses": {"200": csv_ok, **_errors("400", "401", "403", "503")},
                }
            },
            "/api/v1/decisions/{id}": {
                "get": {
                    "operationId": "getDecision",
                    "summary": "One decision (all roles).",
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": _json(_ref("Decision"), "The decision."),
                        **_errors("401", "403", "404", "503"),
                    },
                }
            },
            "/api/v1/consents": {
                "post": {
                    "operationId": "upsertConsent",
                    "summary": "Add a consent or customer record for a number (role: admin).",
                    "description": "Merged into the tenant's current index generation (and one being imported). "
                    "Recorded in the audit table.",
                    "requestBody": _body("ConsentRequest"),
                    "responses": {
                        "200": _json(_ref("ConsentResult"), "Stored (or already on record)."),
                        **_errors("400", "401", "403", "413", "503"),
                    },
                }
            },
            "/api/v1/objections": {
                "post": {
                    "operationId": "registerObjection",
                    "summary": "Register an objection; the very next call is blocked (roles: admin, compliance).",
                    "requestBody": _body("ObjectionRequest"),
                    "responses": {
                        "200": _json(_ref("ObjectionResult"), "Registered."),
                        **_errors("400", "401", "403", "413", "503"),
                    },
                }
            },
            "/api/v1/erasures": {
                "post": {
                    "operationId": "eraseNumber",
                    "summary": "GDPR art. 17: remove the number's facts for every tenant, keep a suppression "
                    "hash so it is never called again (role: admin).",
                    "requestBody": _body("ErasureRequest"),
                    "responses": {
                        "200": _json(_ref("ErasureResult"), "Erased."),
                        **_errors("400", "401", "403", "413", "503"),
                    },
                }
            },
            "/api/v1/numbers/{number}/report": {
                "get": {
                    "operationId": "accessReport",
                    "summary": "GDPR art. 15 access report: facts and decisions for a number (roles: admin, "
                    "compliance). JSON (times in UTC), or CSV with `format=csv` or `Accept: text/csv` (times in "
                    "ISO 8601 with the offset of the tenant's or campaign's time zone).",
                    "parameters": [
                        {"name": "number", "in": "path", "required": True, "schema": NUMBER_IN},
                        _query("format", "json (default) or csv.", {"type": "string", "enum": ["json", "csv"]}),
                    ],
                    "responses": {
                        "200": {
                            "description": "The report.",
                            "content": {
                                "application/json": {"schema": _ref("Report")},
                                "text/csv": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors("400", "401", "403", "404", "503"),
                    },
                }
            },
        },
    }
