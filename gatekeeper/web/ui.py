"""The compliance web UI: server-rendered pages (Jinja2, autoescaped), no JavaScript.

Log in with a token, then a signed session cookie; every form carries the session's CSRF token. A number
typed into a form is hashed (or masked) in the response and never put in a URL: filter forms post, and
redirect to a URL that carries the number's hash.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlencode

import jinja2
from aiohttp import web
from markupsafe import Markup

from gatekeeper.core.model import Moment, Reason, Verdict
from gatekeeper.core.times import shown
from gatekeeper.log.query import CursorError
from gatekeeper.web import i18n
from gatekeeper.web.api import stream_csv
from gatekeeper.web.auth import LOGIN_SECONDS, SESSION_SECONDS, Permission, Session, Signer, TokenBook, same
from gatekeeper.web.charts import stacked_bars
from gatekeeper.web.compliance import Action, Compliance
from gatekeeper.web.inputs import (
    EARLIEST_YEAR,
    LATEST_YEAR,
    MAX_BODY,
    ApiError,
    Query,
    decision_query,
    whole_number,
)

log = logging.getLogger(__name__)
SESSION_COOKIE = "gk_session"
LOGIN_COOKIE = "gk_login"
LANG_COOKIE = "gk_lang"
PAGE = 50
SUMMARY_DAYS = 14
MAX_SUMMARY_DAYS = 366
HASH = re.compile(r"[0-9a-f]{32}")
FILTER_KEYS = ("from", "to", "campaign", "verdict", "reason", "nh")
MAX_AUDIT_ID = 2**63 - 1  # the audit table's ids are 64-bit
MAX_NEXT = 2000  # characters of the `next` path of the login form
LOCAL_PATH = re.compile(r"/(?!/)[\x21-\x5b\x5d-\x7e]*")  # "/" (not "//"), printable ASCII but space and backslash
DECODED_LOCAL_PATH = re.compile(r"/(?![/\\])[^\x00-\x1f\x7f\\]*")  # the same, percent-decoded


class UiError(Exception):
    """A page that cannot be shown: rendered as an error page with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("gatekeeper.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def safe_next(target: str | None) -> str:
    """Where to go after logging in: `target` if it is a path on this site, else `/`.

    Accepted is only the kind of value `require` puts there: a path that starts with exactly one `/`, in
    printable ASCII without spaces or backslashes (browsers drop tabs and line breaks and read `\\` as
    `/`, so `/<TAB>/evil.example` would go to `//evil.example`), and whose percent-decoded forms (once,
    twice, …) neither start with `//` or `/\\` nor hold a control character or a backslash.
    """
    if not target or len(target) > MAX_NEXT or not LOCAL_PATH.fullmatch(target):
        return "/"
    decoded, previous = unquote(target), target
    while decoded != previous:  # each round shortens it: `/%252F%252Fevil.example` takes two
        if not DECODED_LOCAL_PATH.fullmatch(decoded):
            return "/"
        decoded, previous = unquote(decoded), decoded
    return target


class Ui:
    def __init__(self, compliance: Compliance, tokens: TokenBook, signer: Signer) -> None:
        self.compliance = compliance
        self.settings = compliance.settings
        self.tokens = tokens
        self.signer = signer
        self.env = templates()
        self.zone = compliance.numbers.zone

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self.root, name="ui-root")
        r.add_get("/login", self.login_form, name="ui-login")
        r.add_post("/login", self.login, name="ui-login-post")
        r.add_post("/logout", self.logout, name="ui-logout")
        r.add_get("/decisions", self.decisions, name="ui-decisions")
        r.add_post("/decisions", self.filter_decisions, name="ui-decisions-filter")
        r.add_get("/decisions/{id}", self.decision, name="ui-decision")
        r.add_get("/export.csv", self.export, name="ui-export")
        r.add_get("/numbers", self.numbers_form, name="ui-numbers")
        r.add_post("/numbers", self.numbers, name="ui-numbers-post")
        r.add_post("/numbers/report.csv", self.report_csv, name="ui-report-csv")
        r.add_get("/summary", self.summary, name="ui-summary")
        for kind in ("objections", "erasures"):
            r.add_get(f"/{kind}", self.change_form, name=f"ui-{kind}")
            r.add_post(f"/{kind}/confirm", self.change_confirm, name=f"ui-{kind}-confirm")
            r.add_post(f"/{kind}", self.change, name=f"ui-{kind}-post")
        r.add_get("/audit", self.audit, name="ui-audit")

    # -- rendering -----------------------------------------------------------------------------------

    def language(self, request: web.Request) -> str:
        return i18n.choose(request.query.get("lang"), request.cookies.get(LANG_COOKIE),
                           request.headers.get("Accept-Language"))  # fmt: skip

    def render(
        self,
        request: web.Request,
        template: str,
        session: Session | None,
        *,
        status: int = 200,
        page_url: str | None = None,
        **context: Any,
    ) -> web.Response:
        lang = self.language(request)
        other = "en" if lang == "nl" else "nl"
        if page_url is None:
            page_url = request.path if request.method == "GET" else "/decisions"
        query = dict(request.query) if request.method == "GET" else {}
        query["lang"] = other
        html = self.env.get_template(template).render(
            _=i18n.translator(lang),
            lang=lang,
            other_lang=other,
            lang_url=f"{page_url}?{urlencode(query)}",
            session=session,
            csrf=session.csrf if session is not None else "",
            can=(lambda p: session is not None and session.principal.can(Permission(p))),
            local=self.local,
            zone=self.zone.key,
            **{"nav": "", **context},
        )
        response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
        if request.query.get("lang") in i18n.LANGUAGES:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, path="/", httponly=True, samesite="Strict",
                                secure=request.secure)  # fmt: skip
        return response

    def local(self, moment: Moment | None, *, campaign: str | None = None, tenant: str | None = None) -> str:
        """A time as the pages show it: in its campaign's (or tenant's) zone, with the zone's UTC offset."""
        if moment is None:
            return ""
        zones = self.compliance.zones
        return shown(moment, zones.of_tenant(tenant) if tenant is not None else zones.of_campaign(campaign))

    def error_page(self, request: web.Request, status: int, message: str) -> web.Response:
        session = self.signer.read_session(request.cookies.get(SESSION_COOKIE))
        try:
            return self.render(request, "error.html", session, status=status, status_code=status, message=message)
        except Exception:
            log.exception("rendering the error page failed")
            return web.Response(text=f"{status}: {message}", status=status)

    # -- sessions ------------------------------------------------------------------------------------

    def session(self, request: web.Request) -> Session | None:
        return self.signer.read_session(request.cookies.get(SESSION_COOKIE))

    def require(self, request: web.Request, permission: Permission) -> Session:
        session = self.session(request)
        if session is None:
            target = request.rel_url.raw_path_qs if request.method == "GET" else "/decisions"
            raise web.HTTPSeeOther(f"/login?{urlencode({'next': target})}")
        if not session.principal.can(permission):
            _ = i18n.translator(self.language(request))
            raise UiError(403, _("Your role may not do this."))
        return session

    async def form(self, request: web.Request, session: Session | None) -> Mapping[str, str]:
        """The posted form, after the body limit and (with a session) the CSRF check."""
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise UiError(413, "The form is too large.")
        posted = await request.post()
        fields = {k: v for k, v in posted.items() if isinstance(v, str)}
        if session is not None and not same(fields.get("csrf", ""), session.csrf):
            _ = i18n.translator(self.language(request))
            raise UiError(403, _("The form has expired. Go back, reload the page and try again."))
        return fields

    async def root(self, request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/decisions")

    async def login_form(self, request: web.Request, *, error: str | None = None) -> web.Response:
        cookie, csrf = self.signer.issue_login()
        next_url = safe_next(request.query.get("next"))
        response = self.render(request, "login.html", None, status=401 if error else 200, login_csrf=csrf,
                               next_url=next_url, error=error, page_url="/login")  # fmt: skip
        response.set_cookie(LOGIN_COOKIE, cookie, max_age=LOGIN_SECONDS, path="/login", httponly=True,
                            samesite="Strict", secure=request.secure)  # fmt: skip
        return response

    async def login(self, request: web.Request) -> web.Response:
        fields = await self.form(request, None)
        _ = i18n.translator(self.language(request))
        if not self.signer.check_login(request.cookies.get(LOGIN_COOKIE), fields.get("csrf", "")):
            return await self.login_form(request, error=_("The login form has expired; please try again."))
        principal = self.tokens.authenticate(fields.get("token", "").strip() or None)
        if principal is None:
            return await self.login_form(request, error=_("That token is not valid."))
        value, _session = self.signer.issue_session(principal)
        response = web.HTTPSeeOther(safe_next(fields.get("next")))
        response.set_cookie(SESSION_COOKIE, value, max_age=SESSION_SECONDS, path="/", httponly=True,
                            samesite="Strict", secure=request.secure)  # fmt: skip
        response.del_cookie(LOGIN_COOKIE, path="/login")
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        session = self.session(request)
        if session is not None:
            await self.form(request, session)
        response = web.HTTPSeeOther("/login")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response

    # -- the decision log ----------------------------------------------------------------------------

    def filters(self, params: Mapping[str, str]) -> tuple[Query, dict[str, str]]:
        """The log filter of a GET (`nh` is a number hash; a plaintext number never travels in a URL)."""
        kept = {k: params[k] for k in FILTER_KEYS if params.get(k)}
        number_hash = kept.get("nh")
        if number_hash is not None and not HASH.fullmatch(number_hash):
            raise ApiError(400, "invalid-field", "nh: not a number hash", "nh")
        wanted = {k: v for k, v in kept.items() if k != "nh"}
        if params.get("cursor"):
            wanted["cursor"] = params["cursor"]
        query = decision_query(wanted, self.compliance.numbers, self.compliance.number_hash, number_hash=number_hash)
        return query, kept

    def choices(self) -> dict[str, Any]:
        return {
            "campaigns": sorted(self.settings.campaigns),
            "tenants": sorted(self.settings.tenants),
            "verdicts": [v.value for v in Verdict],
            "reasons": [r.value for r in Reason],
        }

    async def decisions(self, request: web.Request) -> web.Response:
        session = self.require(request, Permission.READ_LOG)
        return await self._decisions(request, session, dict(request.query))

    async def _decisions(
        self, request: web.Request, session: Session, params: Mapping[str, str], error: str | None = None
    ) -> web.Response:
        items: tuple[Any, ...] = ()
        next_url = None
        kept = {k: params[k] for k in FILTER_KEYS if params.get(k)}
        if error is None:
            try:
                query, kept = self.filters(params)
                async with self.compliance.log.use() as reader:
                    page = await reader.list_decisions(query.where, limit=PAGE, cursor=query.cursor)
                items = page.items
                if page.next is not None:
                    next_url = "/decisions?" + urlencode({**kept, "cursor": page.next})
            except CursorError:
                error = "cursor: not a valid page"
            except ApiError as exc:
                if exc.status >= 500:
                    raise
                error = exc.message
        return self.render(
            request,
            "decisions.html",
            session,
            status=400 if error else 200,
            nav="log",
            items=items,
            filters=kept,
            error=error,
            next_url=next_url,
            first_url="/decisions?" + urlencode(kept) if params.get("cursor") else None,
            export_url="/export.csv?" + urlencode(kept),
            all_numbers_url="/decisions?" + urlencode({k: v for k, v in kept.items() if k != "nh"}),
            page_url="/decisions",
            **self.choices(),
        )

    async def filter_decisions(self, request: web.Request) -> web.Response:
        """The filter form posts (it may carry a typed number); answer with a redirect to a hash-only URL."""
        session = self.require(request, Permission.READ_LOG)
        fields = await self.form(request, session)
        params = {k: fields[k].strip() for k in ("from", "to", "campaign", "verdict", "reason") if fields.get(k)}
        number = fields.get("number", "").strip()
        try:
            if number:
                params["nh"] = self.compliance.number_hash(self.compliance.numbers.e164("number", number))
            elif fields.get("nh") and not fields.get("clear_number"):
                params["nh"] = fields["nh"]
            self.filters(params)
        except ApiError as exc:
            return await self._decisions(request, session, params, error=exc.message)
        raise web.HTTPSeeOther("/decisions?" + urlencode(params))

    async def decision(self, request: web.Request) -> web.Response:
        session = self.require(request, Permission.READ_LOG)
        decision_id = request.match_info["id"]
        async with self.compliance.log.use() as reader:
            stored = await reader.get(decision_id) if len(decision_id) <= 64 else None
        if stored is None:
            _ = i18n.translator(self.language(request))
            raise UiError(404, _("No decision with that id."))
        return self.render(request, "decision.html", session, nav="log", item=stored, page_url=request.path)

    async def export(self, request: web.Request) -> web.StreamResponse:
        self.require(request, Permission.READ_LOG)
        query, _kept = self.filters(request.query)
        return await stream_csv(request, self.compliance, query)

    # -- number look-up (GDPR art. 15) ---------------------------------------------------------------

    async def numbers_form(self, request: web.Request) -> web.Response:
        session = self.require(request, Permission.REPORT)
        return self.render(request, "numbers.html", session, nav="numbers", report=None, error=None, number="")

    async def numbers(self, request: web.Request) -> web.Response:
        session = self.require(request, Permission.REPORT)
        fields = await self.form(request, session)
        number = fields.get("number", "").strip()
        try:
            e164 = self.compliance.numbers.e164("number", number)
        except ApiError as exc:
            return self.render(request, "numbers.html", session, status=400, nav="numbers", report=None,
                               error=exc.message, number="", page_url="/numbers")  # fmt: skip
        report = await self.compliance.report(session.principal, "ui", e164, action=Action.LOOKUP)
        return self.render(request, "numbers.html", session, nav="numbers", report=report, error=None,
                           number=number, page_url="/numbers")  # fmt: skip

    async def report_csv(self, request: web.Request) -> web.Response:
        session = self.require(request, Permission.REPORT)
        fields = await self.form(request, session)
        try:
            e164 = self.compliance.numbers.e164("number", fields.get("number", ""))
        except ApiError as exc:
            raise UiError(400, exc.message) from None
        report = await self.compliance.report(session.principal, "ui", e164)
        return web.Response(
            text=report.csv(self.compliance.zones),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="access-report-{report.number_hash}.csv"'},
        )

    # -- summary -------------------------------------------------------------------------------------

    async def summary(self, request: web.Request) -> web.Response:
        session = self.require(request, Permission.READ_LOG)
        _ = i18n.translator(self.language(request))
        today = await self._latest_day()
        error = None
        try:
            end = _day(request.query.get("to") or today.isoformat())
            default_start = end - dt.timedelta(days=SUMMARY_DAYS - 1)
            start = _day(request.query.get("from") or default_start.isoformat())
        except ValueError:
            error = _("Dates are written YYYY-MM-DD, from %(first)s to %(last)s.") % {
                "first": EARLIEST_YEAR,
                "last": LATEST_YEAR,
            }
            start, end = today - dt.timedelta(days=SUMMARY_DAYS - 1), today
        if end < start or (end - start).days >= MAX_SUMMARY_DAYS:
            error = _("Choose a range of at most a year, from before to.")
            start, end = today - dt.timedelta(days=SUMMARY_DAYS - 1), today
        async with self.compliance.log.use() as reader:
            summary = await reader.summary(start, end, tz=self.zone.key)
        days = summary.days()
        per_reason = summary.blocked_per_reason()
        per_campaign = summary.blocked_per_campaign()
        charts: dict[str, Markup] = {
            "reason": stacked_bars(days, per_reason, title=_("Blocked calls per reason"), other=_("other")),
            "campaign": stacked_bars(days, per_campaign, title=_("Blocked calls per campaign"), other=_("other")),
        }
        reasons: dict[str, int] = {}
        campaigns: dict[str, int] = {}
        for counts, into in ((per_reason, reasons), (per_campaign, campaigns)):
            for day_counts in counts.values():
                for name, n in day_counts.items():
                    into[name] = into.get(name, 0) + n
        return self.render(
            request,
            "summary.html",
            session,
            status=400 if error else 200,
            nav="summary",
            start=start.isoformat(),
            end=end.isoformat(),
            error=error,
            totals=summary.totals(),
            charts=charts,
            reasons=sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])),
            campaigns=sorted(campaigns.items(), key=lambda kv: (-kv[1], kv[0])),
        )

    async def _latest_day(self) -> dt.date:
        """Today, or the day of the newest decision when that is later (a demo clock runs ahead)."""
        today = dt.datetime.now(self.zone).date()
        async with self.compliance.log.use() as reader:
            newest = await reader.list_decisions(limit=1)
        if newest.items:
            return max(today, newest.items[0].record.at.astimezone(self.zone).date())
        return today

    # -- objections and erasures (with a confirmation step) ------------------------------------------

    def _kind(self, request: web.Request) -> tuple[str, Permission]:
        kind = "objections" if request.path.startswith("/objections") else "erasures"
        return kind, Permission.OBJECT if kind == "objections" else Permission.ERASE

    def _change_form(
        self, request: web.Request, session: Session, kind: str, *, status: int = 200, error: str | None = None,
        values: Mapping[str, str] | None = None, done: Any = None,
    ) -> web.Response:  # fmt: skip
        return self.render(request, "change.html", session, status=status, nav=kind, kind=kind, error=error,
                           values=dict(values or {}), done=done, page_url=f"/{kind}", **self.choices())  # fmt: skip

    async def change_form(self, request: web.Request) -> web.Response:
        kind, permission = self._kind(request)
        session = self.require(request, permission)
        return self._change_form(request, session, kind)

    def _validate(self, kind: str, fields: Mapping[str, str]) -> Any:
        number, reference = fields.get("number", ""), fields.get("reference", "")
        if kind == "objections":
            return self.compliance.objection_input(fields.get("tenant", ""), None, number, reference)
        return self.compliance.erasure_input(number, reference)

    async def _change_input(self, request: web.Request) -> tuple[str, Any, dict[str, str], Any] | web.Response:
        """The posted objection/erasure form, checked: (kind, session, values, input), or the form page
        again with the reason it did not validate."""
        kind, permission = self._kind(request)
        session = self.require(request, permission)
        fields = await self.form(request, session)
        values = {k: fields.get(k, "").strip() for k in ("tenant", "number", "reference")}
        try:
            return kind, session, values, self._validate(kind, values)
        except ApiError as exc:
            return self._change_form(request, session, kind, status=400, error=exc.message, values=values)

    async def change_confirm(self, request: web.Request) -> web.Response:
        checked = await self._change_input(request)
        if isinstance(checked, web.Response):
            return checked
        kind, session, values, item = checked
        return self.render(request, "confirm.html", session, nav=kind, kind=kind, values=values,
                           masked=self.compliance.mask(item.e164), page_url=f"/{kind}")  # fmt: skip

    async def change(self, request: web.Request) -> web.Response:
        checked = await self._change_input(request)
        if isinstance(checked, web.Response):
            return checked
        kind, session, _, item = checked
        if kind == "objections":
            done = await self.compliance.object(session.principal, "ui", item)
        else:
            done = await self.compliance.erase(session.principal, "ui", item)
        return self._change_form(request, session, kind, done=done)

    # -- audit ---------------------------------------------------------------------------------------

    async def audit(self, request: web.Request) -> web.Response:
        session = self.require(request, Permission.AUDIT)
        before = request.query.get("before")
        before_id = whole_number("before", before, 1, MAX_AUDIT_ID) if before else None
        async with self.compliance.log.use() as reader:
            entries = await reader.list_audit(limit=PAGE, before_id=before_id)
        older = f"/audit?before={entries[-1].id}" if len(entries) == PAGE else None
        return self.render(request, "audit.html", session, nav="audit", entries=entries, older_url=older,
                           newest_url="/audit" if before_id is not None else None)  # fmt: skip


def _day(text: str) -> dt.date:
    """A date of the summary's range (ValueError if it is not one, or outside the years a filter takes)."""
    day = dt.date.fromisoformat(text)
    if not EARLIEST_YEAR <= day.year <= LATEST_YEAR:
        raise ValueError(f"{day} is out of range")
    return day


@web.middleware
async def ui_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Failures of UI pages as HTML error pages (the API has its own JSON ones)."""
    ui: Ui | None = request.app.get(UI_KEY)
    if ui is None or request.path.startswith(("/api/", "/static/")) or request.path in OPEN_PATHS:
        response: web.StreamResponse = await handler(request)
        return response
    try:
        response = await handler(request)
    except UiError as exc:
        return ui.error_page(request, exc.status, exc.message)
    except ApiError as exc:
        return ui.error_page(request, exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status in (404, 405):
            return ui.error_page(request, exc.status, exc.reason)
        raise
    except Exception:
        log.exception("UI request failed: %s %s", request.method, request.match_info.route.name)
        return ui.error_page(request, 500, "An unexpected error; it has been logged.")
    return response


OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
UI_KEY = web.AppKey("gatekeeper_ui", Ui)
