"""The compliance UI over plain HTTP (no browser): sessions, CSRF, roles, escaping, headers, languages.

The browser walk-through is `tests/ui/test_ui.py`; these are the rules a browser would not show.
"""

from __future__ import annotations

import csv
import html
import io
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from yarl import URL

from gatekeeper.config import ApiToken, Settings
from gatekeeper.devservers import PrivateRedis
from gatekeeper.web import WEB_KEY, new_token
from gatekeeper.web.api import PREFIX
from gatekeeper.web.auth import (
    SESSION_SECONDS,
    Principal,
    Role,
    Signer,
    TokenBook,
    bearer_token,
    hash_token,
    with_token,
)
from gatekeeper.web.charts import stacked_bars
from gatekeeper.web.i18n import NL, choose
from tests.web_helpers import POOL, TOKENS, WebService, backend_dsn, start_web, web_settings

pytestmark = pytest.mark.integration
TEMPLATES = Path(__file__).resolve().parents[2] / "gatekeeper" / "web" / "templates"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
FRESH = "0612345699"
PAGES = ["/decisions", "/summary", "/numbers", "/objections", "/erasures", "/audit", "/decisions/06H0000000000"]


@pytest.fixture
async def web(redis_server: PrivateRedis, tmp_path: Path) -> AsyncIterator[WebService]:
    service = await start_web(web_settings(redis_server.url, backend_dsn("sqlite", tmp_path)), tmp_path)
    yield service
    await service.stop()


class Browser:
    """A cookie-keeping HTTP client that does not follow redirects (so they can be checked)."""

    def __init__(self, base_url: str, language: str = "en") -> None:
        self.base_url = base_url
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept-Language": language}
        )
        self.csrf = ""

    async def get(self, path: str) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(self.base_url + path, allow_redirects=False) as response:
            text = await response.text()
        if found := CSRF.search(text):
            self.csrf = found.group(1)
        return response.status, text, response

    async def post(
        self, path: str, fields: dict[str, str], *, csrf: bool = True
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        data = {**({"csrf": self.csrf} if csrf else {}), **fields}
        async with self.http.post(self.base_url + path, data=data, allow_redirects=False) as response:
            text = await response.text()
        if found := CSRF.search(text):
            self.csrf = found.group(1)
        return response.status, text, response

    def cookie(self, name: str) -> str | None:
        for cookie in self.http.cookie_jar:
            if cookie.key == name:
                return cookie.value
        return None

    async def close(self) -> None:
        await self.http.close()


@pytest.fixture
async def browser(web: WebService) -> AsyncIterator[Browser]:
    b = Browser(web.base_url)
    yield b
    await b.close()


async def log_in(browser: Browser, token: str) -> None:
    status, _, _ = await browser.get("/login")
    assert status == 200
    status, _, response = await browser.post("/login", {"token": token, "next": "/decisions"})
    assert (status, response.headers["Location"]) == (303, "/decisions")
    assert browser.cookie("gk_session")
    await browser.get("/decisions")  # the session's CSRF token


async def test_every_page_asks_for_a_login_first(browser: Browser) -> None:
    for path in PAGES:
        status, _, response = await browser.get(path)
        assert status == 303, path
        assert urlsplit(response.headers["Location"]).path == "/login"
        assert parse_qs(urlsplit(response.headers["Location"]).query)["next"] == [path]
    for path in ("/objections", "/objections/confirm", "/erasures", "/numbers", "/decisions"):
        status, _, response = await browser.post(path, {"number": "0612345678", "tenant": "acme"}, csrf=False)
        assert status == 303 and response.headers["Location"].startswith("/login"), path


async def test_login_needs_the_form_token_and_a_valid_api_token(browser: Browser, web: WebService) -> None:
    status, _, _ = await browser.post("/login", {"token": TOKENS["admin"], "csrf": "forged"}, csrf=False)
    assert status == 401 and browser.cookie("gk_session") is None  # no login form was served: refused
    await browser.get("/login")
    status, text, _ = await browser.post("/login", {"token": "wrong"})
    assert status == 401 and "not valid" in text and browser.cookie("gk_session") is None
    status, _, response = await browser.post("/login", {"token": TOKENS["viewer"], "next": "//evil.example/x"})
    assert (status, response.headers["Location"]) == (303, "/")  # never off to another site
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and f"Max-Age={SESSION_SECONDS}" in cookie
    assert TOKENS["viewer"] not in cookie


# `next` values that must not take a freshly logged-in user to another site (browsers drop tabs and line
# breaks from a URL and read a backslash as a slash), or anywhere but a plain path of this one
OPEN_REDIRECTS = [
    "/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example", "/\r/evil.example", "\t//evil.example",
    "//evil.example", "///evil.example", "/\\evil.example", "\\\\evil.example", "/\\/evil.example", "\\/evil.example",
    "https://evil.example", "http:evil.example", "HTTPS://evil.example/decisions", "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>", "evil.example", " /decisions", "/ /evil.example",
    "/%2F/evil.example", "/%2f%2fevil.example", "/%5Cevil.example", "/%09/evil.example", "/%0D%0A/evil.example",
    "%2F%2Fevil.example", "/%252F%252Fevil.example", "/\u3000/evil.example",
    "/\uff0fevil.example", "/decisions\r\nSet-Cookie: gk_session=x", "/x\x00", "/" + "a" * 5000,
]  # fmt: skip
SAME_SITE = ["/", "/decisions", "/decisions?verdict=block&nh=0123", "/decisions/06H00000", "/summary?to=2026-01-01"]


async def test_login_returns_only_to_a_path_of_this_site(web: WebService) -> None:
    for target in OPEN_REDIRECTS + SAME_SITE:
        expected = target if target in SAME_SITE else "/"
        browser = Browser(web.base_url)
        try:
            status, text, _ = await browser.get(f"/login?{urlencode({'next': target})}")
            shown = html.unescape(re.search(r'name="next" value="([^"]*)"', text).group(1))  # type: ignore[union-attr]
            assert (status, shown) == (200, expected), repr(target)
            for posted in (target, shown):  # what an attacker posts, and what the form carries
                status, _, response = await browser.post("/login", {"token": TOKENS["viewer"], "next": posted})
                assert (status, response.headers["Location"]) == (303, expected), repr(posted)
                await browser.get("/login")  # a fresh login form
        finally:
            await browser.close()


async def test_forms_without_the_sessions_csrf_token_change_nothing(browser: Browser, web: WebService) -> None:
    await log_in(browser, TOKENS["admin"])
    fields = {"tenant": "acme", "number": "0612345678", "reference": "x"}
    for csrf in (None, "forged"):
        extra = {} if csrf is None else {"csrf": csrf}
        for path in ("/objections", "/erasures", "/objections/confirm", "/numbers", "/logout", "/decisions"):
            status, text, _ = await browser.post(path, {**fields, **extra}, csrf=False)
            assert status == 403 and "expired" in text, path
    assert await web.audit() == []
    status, decided, _ = await web.request(
        "POST", f"{PREFIX}/check", body={"number": "0612345678", "campaign": "acme-sales", "caller_id": POOL,
                                         "presentation": 0})  # fmt: skip
    assert (status, decided["reason"]) == (200, "consent")


async def test_a_tampered_expired_or_revoked_session_is_no_session(browser: Browser, web: WebService) -> None:
    await log_in(browser, TOKENS["viewer"])
    value = browser.cookie("gk_session")
    assert value is not None
    body, _, mac = value.partition(".")
    ui = web.service.web[WEB_KEY].ui
    forged, _ = Signer(b"another secret of the same length!", web.service.web[WEB_KEY].tokens).issue_session(
        Principal("admin-desk", Role.ADMIN)
    )
    for bad in (f"{body}x.{mac}", f"{body}.{mac[:-2]}AA", forged, "", "garbage"):
        browser.http.cookie_jar.clear()
        browser.http.cookie_jar.update_cookies({"gk_session": bad}, response_url=URL(web.base_url))
        status, _, response = await browser.get("/decisions")
        assert status == 303 and response.headers["Location"].startswith("/login"), bad
    expired, _ = ui.signer.issue_session(Principal("viewer-desk", Role.VIEWER), now=time.time() - SESSION_SECONDS - 1)
    assert ui.signer.read_session(expired) is None
    signer = Signer(b"0123456789abcdef0123", TokenBook(web.settings.http.tokens))
    session_value, _ = signer.issue_session(Principal("viewer-desk", Role.VIEWER))
    assert signer.read_session(session_value) is not None
    revoked = Signer(b"0123456789abcdef0123", TokenBook([t for t in web.settings.http.tokens if t.role != "viewer"]))
    assert revoked.read_session(session_value) is None  # the token left the configuration
    promoted = Signer(b"0123456789abcdef0123", TokenBook([ApiToken("viewer-desk", "admin", hash_token("x"))]))
    assert promoted.read_session(session_value) is None  # its role changed: log in again


async def test_roles_limit_the_pages(browser: Browser, web: WebService) -> None:
    await log_in(browser, TOKENS["viewer"])
    for path in ("/numbers", "/objections", "/erasures", "/audit"):
        status, text, response = await browser.get(path)
        assert status == 403 and response.content_type == "text/html" and "may not" in text, path
    status, text, _ = await browser.get("/decisions")
    assert status == 200 and 'href="/audit"' not in text and 'href="/objections"' not in text
    compliance = Browser(web.base_url)
    try:
        await log_in(compliance, TOKENS["compliance"])
        assert (await compliance.get("/objections"))[0] == 200
        assert (await compliance.get("/erasures"))[0] == 403
        status, _, _ = await compliance.post("/erasures/confirm", {"number": "0612345678"})
        assert status == 403
        assert (await compliance.get("/audit"))[0] == 403
    finally:
        await compliance.close()


async def test_odd_numbers_and_dates_in_page_queries_are_a_400(browser: Browser) -> None:
    await log_in(browser, TOKENS["admin"])
    for path, field in (
        ("/audit?before=%C2%B2", "before"),  # "²": str.isdigit() says yes, int() says no
        ("/audit?before=" + "9" * 5000, "before"),
        ("/audit?before=-3", "before"),
        ("/decisions?from=9999-12-31", "from"),
        ("/decisions?to=0001-01-01T00:00:00%2B14:00", "to"),
        ("/summary?to=9999-12-31", "YYYY-MM-DD"),
        ("/summary?from=0001-01-01&to=0001-01-02", "YYYY-MM-DD"),
    ):
        status, text, response = await browser.get(path)
        assert (status, response.content_type) == (400, "text/html") and field in text, path
    assert (await browser.get("/audit?before=12"))[0] == 200


async def test_a_typed_number_becomes_a_hash_in_the_url(browser: Browser, web: WebService) -> None:
    await log_in(browser, TOKENS["viewer"])
    status, _, response = await browser.post("/decisions", {"number": "+31 6 12345678", "verdict": "allow"})
    assert status == 303
    location = response.headers["Location"]
    expected = web.service.index.keys.number_hash("+31612345678")
    assert parse_qs(urlsplit(location).query) == {"verdict": ["allow"], "nh": [expected]}
    status, text, _ = await browser.post("/decisions", {"number": "12"})
    assert status == 400 and "number" in text and "12" not in urlsplit(str(_.url)).query
    status, text, _ = await browser.get("/decisions?nh=not-a-hash")
    assert status == 400 and "nh" in text


async def test_the_ui_escapes_what_it_shows(browser: Browser, web: WebService) -> None:
    evil = "<script>alert(1)</script>"
    await web.request("POST", f"{PREFIX}/check", body={"number": "0612345678", "campaign": evil})
    reference = '"><img src=x onerror=alert(1)>'
    await web.request("POST", f"{PREFIX}/objections", body={"tenant": "acme", "number": FRESH, "reference": reference})
    await web.sync()
    await log_in(browser, TOKENS["admin"])
    for path in ("/decisions", "/audit"):
        status, text, _ = await browser.get(path)
        assert status == 200
        assert "<script>alert" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (await browser.get("/decisions"))[1]
    svg = stacked_bars([], {}, title="<b>")
    assert "<b>" not in svg and "&lt;b&gt;" in svg


async def test_ui_changes_are_confirmed_then_audited(browser: Browser, web: WebService) -> None:
    await log_in(browser, TOKENS["admin"])
    status, text, _ = await browser.post("/erasures/confirm", {"number": "0612345680", "reference": "art17"})
    assert status == 200 and "+31 6 ****5680" in text and "Yes, erase the number" in text
    assert await web.audit() == []  # the confirmation page changes nothing
    status, text, _ = await browser.post("/erasures", {"number": "0612345680", "reference": "art17"})
    assert status == 200 and "+31 6 ****5680 erased" in text
    status, text, _ = await browser.post("/objections/confirm", {"tenant": "nope", "number": "0612345678"})
    assert status == 400 and "tenant" in text
    entries = await web.audit()
    assert [(e.actor, e.action, e.details["via"]) for e in entries] == [("admin-desk", "erasure", "ui")]
    status, text, _ = await browser.get("/audit")
    assert status == 200 and "erasure" in text and "admin-desk" in text


async def test_the_number_look_up_and_its_csv_report(browser: Browser, web: WebService) -> None:
    await log_in(browser, TOKENS["compliance"])
    status, text, _ = await browser.post("/numbers", {"number": "0612345681"})
    assert status == 200 and "+31 6 ****5681" in text and "donor" in text
    async with browser.http.post(
        f"{web.base_url}/numbers/report.csv", data={"csrf": browser.csrf, "number": "0612345681"}
    ) as response:
        assert response.status == 200 and response.content_type == "text/csv"
        assert "attachment" in response.headers["Content-Disposition"]
        assert "fact,goededoel,customer,2015-01-01" in await response.text()
    assert [e.action for e in await web.audit()] == ["access-report", "number-lookup"]


# The issue's example: a consent given at 23:32:32 UTC, which is 00:32:32 the next day in Amsterdam (CET)
CONSENT_START, CONSENT_SHOWN = "2026-12-02T23:32:32Z", "2026-12-03 00:32:32 CET (+01:00)"
CONSENT_ISO = "2026-12-03T00:32:32+01:00"  # in CSV files
CALL_AT, CALL_SHOWN, CALL_ISO = "2027-01-05T09:30:00Z", "2027-01-05 10:30:00 CET (+01:00)", "2027-01-05T10:30:00+01:00"
LOCAL_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (CET \(\+01:00\)|CEST \(\+02:00\))")  # Europe/Amsterdam


async def test_every_time_is_shown_in_the_campaigns_zone_with_its_offset(browser: Browser, web: WebService) -> None:
    consent = {"tenant": "acme", "number": FRESH, "kind": "consent", "start": CONSENT_START, "reference": "web"}
    assert (await web.request("POST", f"{PREFIX}/consents", body=consent))[0] == 200
    status, decided, _ = await web.request("POST", f"{PREFIX}/check", body={
        "number": FRESH, "campaign": "acme-sales", "caller_id": POOL, "presentation": 0, "at": CALL_AT})  # fmt: skip
    assert (status, decided["reason"]) == (200, "consent")
    assert decided["explanation"].startswith(f"Allowed under nl-2026: consent given {CONSENT_SHOWN} (ref web); "
                                             "Tuesday 2027-01-05 10:30 CET (+01:00) is within")  # fmt: skip
    await web.sync()
    await log_in(browser, TOKENS["admin"])
    pages = {
        "log": (await browser.get("/decisions"))[1],
        "detail": (await browser.get(f"/decisions/{decided['decision_id']}"))[1],
        "look-up": (await browser.post("/numbers", {"number": FRESH}))[1],
        "audit": (await browser.get("/audit"))[1],
    }
    for name in ("log", "detail", "look-up"):
        assert CALL_SHOWN in pages[name], name
    assert CONSENT_SHOWN in pages["detail"]  # the explanation
    assert pages["look-up"].count(CONSENT_SHOWN) == 2  # the fact, and the decision's explanation
    assert LOCAL_TIME.search(pages["audit"])  # the audit entries: now, in the deployment's zone
    for name, text in pages.items():
        assert "+00:00" not in text and "UTC" not in text.replace("offset from UTC", ""), name
    async with browser.http.get(f"{web.base_url}/export.csv") as response:
        exported = list(csv.DictReader(io.StringIO(await response.text())))
    assert [r["at"] for r in exported if r["decision_id"] == decided["decision_id"]] == [CALL_ISO]
    assert all(r["shipped_at"].endswith(("+01:00", "+02:00")) for r in exported)
    form = {"csrf": browser.csrf, "number": FRESH}
    async with browser.http.post(f"{web.base_url}/numbers/report.csv", data=form) as response:
        report = list(csv.DictReader(io.StringIO(await response.text())))
    assert [(r["record"], r["start"] or r["at"]) for r in report] == [("fact", CONSENT_ISO), ("decision", CALL_ISO)]
    _, api, _ = await web.request("GET", f"{PREFIX}/decisions/{decided['decision_id']}")
    assert api["at"] == "2027-01-05T09:30:00.000000Z"  # the JSON API stays in UTC


async def test_pages_carry_security_headers_and_the_stylesheet_is_served(browser: Browser) -> None:
    for path in ("/login", "/static/style.css"):
        status, _, response = await browser.get(path)
        assert status == 200
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (await browser.get("/login"))[2].headers["Cache-Control"] == "no-store"
    status, text, _ = await browser.get("/login")
    assert "<script" not in text and "style=" not in text  # nothing the CSP would have to allow


async def test_dutch_and_english_labels(web: WebService) -> None:
    dutch = Browser(web.base_url, language="nl-NL,nl;q=0.9,en;q=0.5")
    try:
        status, text, _ = await dutch.get("/login")
        assert status == 200 and "Inloggen" in text and 'lang="nl"' in text
        status, text, response = await dutch.get("/login?lang=en")
        assert "Log in with an API token" in text and "gk_lang=en" in response.headers["Set-Cookie"]
        assert "Log in with an API token" in (await dutch.get("/login"))[1]  # the choice is remembered
    finally:
        await dutch.close()
    assert choose(None, None, "de-DE,de;q=0.9,nl;q=0.8") == "nl"
    assert choose("xx", None, "fr") == "en"
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""_\(\s*["']([^"']+)["']\s*\)""", template.read_text()))
    assert sorted(used - set(NL)) == []  # every label has its Dutch translation


def test_tokens_helpers(settings: Settings) -> None:
    token, entry = new_token("demo", "admin")
    demo = with_token(settings, entry)
    assert demo.http.tokens[-1] == entry and settings.http.tokens == ()
    with pytest.raises(ValueError, match="configured already"):
        with_token(demo, entry)
    assert entry == ApiToken("demo", "admin", hash_token(token)) and len(token) >= 40
    assert token not in repr(entry)
    book = TokenBook([entry, ApiToken("other", "viewer", hash_token("other-token"))])
    assert book.authenticate(token) == Principal("demo", Role.ADMIN)
    assert book.authenticate("other-token") == Principal("other", Role.VIEWER)
    assert book.authenticate(token + "x") is None and book.authenticate(None) is None
    assert bearer_token(f"Bearer {token}") == token and bearer_token(f"bearer  {token} ") == token
    assert bearer_token("Basic abc") is None and bearer_token("Bearer") is None and bearer_token(None) is None
    with pytest.raises(ValueError):
        new_token("bad name!")
