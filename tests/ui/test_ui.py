"""The compliance UI in a real headless Chromium (Debian's `chromium`), driven by Playwright.

Log in, filter the log, look a number up, open a decision, register an objection (with its confirmation
step), download a CSV, and save screenshots of the log and summary pages in `test-artifacts/`. The
browser may reach the service on loopback only: every other request is aborted and fails the test.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Page, Route, async_playwright, expect

from gatekeeper.devservers import PrivateRedis
from gatekeeper.simulator.fastagi import SimChannel, run_session
from gatekeeper.web.api import PREFIX
from tests.web_helpers import POOL, TOKENS, WebService, backend_dsn, start_web, web_settings

pytestmark = pytest.mark.integration
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}
TIMEOUT_MS = 10_000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: install Debian's package with `apt-get install -y chromium` "
            "(the UI tests never download a browser)"
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def web(redis_server: PrivateRedis, tmp_path: Path) -> AsyncIterator[WebService]:
    service = await start_web(web_settings(redis_server.url, backend_dsn("sqlite", tmp_path)), tmp_path)
    yield service
    await service.stop()


@pytest.fixture
async def page(browser: Browser, web: WebService) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-GB")
    context.set_default_timeout(TIMEOUT_MS)
    outside: list[str] = []

    async def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            await route.continue_()
        else:
            outside.append(route.request.url)
            await route.abort()

    await context.route("**/*", loopback_only)
    page = await context.new_page()
    yield page
    await context.close()
    assert outside == [], f"the UI asked for something outside loopback: {outside}"


async def fastagi_call(web: WebService, number: str) -> str | None:
    channel = SimChannel(
        url="agi://127.0.0.1/check?campaign=acme-sales",
        extension=number,
        callerid_num=POOL,
        callingpres=0,
        variables={},
        functions={"CHANNEL(linkedid)": "1795860072.68"},
    )
    result = await run_session("127.0.0.1", web.fastagi_port(), channel=channel)
    return result.variables.get("GATEKEEPER_REASON")


async def make_decisions(web: WebService) -> str:
    """A few calls through FastAGI and the API; returns the day they were made (YYYY-MM-DD)."""
    assert await fastagi_call(web, "0612345678") == "consent"
    assert await fastagi_call(web, "0612345680") == "objection"
    for number, campaign in (("0612345699", "acme-sales"), ("0612345681", "donors"), ("0612345678", "nope")):
        body = {"number": number, "campaign": campaign, "caller_id": POOL, "presentation": 0}
        status, _, _ = await web.request("POST", f"{PREFIX}/check", body=body)
        assert status == 200
    await web.sync()
    return web.service.gate.clock().date().isoformat()


async def log_in(page: Page, web: WebService, token: str) -> None:
    await page.goto(f"{web.base_url}/decisions")
    await expect(page).to_have_url(f"{web.base_url}/login?next=/decisions")
    await page.get_by_label("Token").fill(token)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(f"{web.base_url}/decisions")


async def test_a_compliance_officer_works_through_the_ui(page: Page, web: WebService) -> None:
    day = await make_decisions(web)
    ARTIFACTS.mkdir(exist_ok=True)

    # log in: a wrong token is refused, the right one opens the log
    await page.goto(f"{web.base_url}/login")
    await page.get_by_label("Token").fill("not-the-token")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not valid")
    await log_in(page, web, TOKENS["admin"])
    rows = page.locator("table.log tbody tr")
    await expect(rows).to_have_count(5)
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["gk_session"]["httpOnly"] and cookies["gk_session"]["sameSite"] == "Strict"

    # filter the log: blocked calls only
    await page.get_by_label("Verdict").select_option("block")
    await page.get_by_role("button", name="Filter").click()
    await expect(page).to_have_url(f"{web.base_url}/decisions?verdict=block")
    await expect(rows).to_have_count(3)
    await expect(page.locator("table.log .verdict.allow")).to_have_count(0)

    # filter by a typed number: the URL carries its hash, never the number
    await page.get_by_label("Number").fill("+31 6 1234 5680")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(1)
    assert "nh=" in page.url and "5680" not in page.url
    await expect(rows.first).to_contain_text("objection")
    await page.get_by_role("link", name="All numbers").click()
    await expect(rows).to_have_count(3)
    await page.get_by_role("link", name="Clear").click()
    await expect(rows).to_have_count(5)
    await page.screenshot(path=str(ARTIFACTS / "ui-decision-log.png"), full_page=True)

    # open a decision: the explanation and the evidence
    await rows.filter(has=page.get_by_text("consent", exact=True)).get_by_role("link").click()
    await expect(page.get_by_role("heading", name="Explanation")).to_be_visible()
    facts = page.locator("dl.facts").first
    await expect(facts).to_contain_text("form-1")  # the evidence reference
    await expect(facts).to_contain_text(re.compile(r"uniqueid \d+\.\d+"))  # the call's id in Asterisk
    await expect(facts).to_contain_text("fastagi")
    await expect(facts).to_contain_text("+31 6 ****5678")
    await expect(page.locator("p.explanation")).to_contain_text("consent given 2020-01-01")
    amsterdam = re.compile(r"\d\d:\d\d:\d\d (CET \(\+01:00\)|CEST \(\+02:00\))")  # the campaign's zone and offset
    await expect(facts.locator("dd").first).to_have_text(amsterdam)

    # look a number up: its facts for every tenant and its decisions
    await page.get_by_role("link", name="Number look-up").click()
    await page.get_by_label("Number").fill("0612345678")
    await page.get_by_role("button", name="Look up").click()
    await expect(page.get_by_role("heading", name="+31 6 ****5678")).to_be_visible()
    await expect(page.locator("table").first).to_contain_text("form-1")
    await expect(page.locator("table.log tbody tr")).to_have_count(2)

    # register an objection, with a confirmation step; the next call is blocked
    await page.get_by_role("link", name="Objection").click()
    await page.get_by_label("Tenant").select_option("acme")
    await page.get_by_label("Number").fill("06 12 34 56 78")
    await page.get_by_label("Reference").fill("letter <b>7</b>")
    await page.get_by_role("button", name="Continue").click()
    await expect(page.get_by_role("heading", name="Confirm")).to_be_visible()
    await expect(page.locator(".confirm")).to_contain_text("+31 6 ****5678")
    await expect(page.locator(".confirm")).to_contain_text("letter <b>7</b>")  # shown as text, not markup
    assert await fastagi_call(web, "0612345678") == "consent"  # nothing happens before the confirmation
    await page.get_by_role("button", name="Yes, register the objection").click()
    await expect(page.get_by_role("status")).to_contain_text("Objection registered for +31 6 ****5678")
    assert await fastagi_call(web, "0612345678") == "objection"
    await page.get_by_role("link", name="Audit").click()
    await expect(page.locator("tbody tr").first).to_contain_text("objection")
    await expect(page.locator("tbody tr").first).to_contain_text("via=ui")

    # download a CSV of the log
    await page.get_by_role("link", name="Decision log").click()
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Export CSV").click()
    download = await download_info.value
    path = ARTIFACTS / "ui-decisions.csv"
    await download.save_as(path)
    exported = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert len(exported) >= 6 and {r["reason"] for r in exported} >= {"consent", "objection", "no-basis"}
    assert all("5678" not in r["number_hash"] for r in exported)

    # the summary: blocked calls per reason and per campaign as charts
    await page.get_by_role("link", name="Summary").click()
    await expect(page.get_by_label("To")).to_have_value(day)  # the range ends with the newest decision
    await expect(page.locator("svg.chart")).to_have_count(2)
    await expect(page.locator("svg.chart").first.locator("rect[fill]")).not_to_have_count(0)
    await page.screenshot(path=str(ARTIFACTS / "ui-summary.png"), full_page=True)

    # Dutch labels
    await page.get_by_role("link", name="Nederlands").click()
    await expect(page.get_by_role("heading", name="Overzicht", exact=True)).to_be_visible()
    await page.get_by_role("link", name="Beslissingslog").click()
    await expect(page.get_by_role("heading", name="Beslissingslog")).to_be_visible()


async def test_a_viewer_sees_the_log_but_cannot_change_anything(page: Page, web: WebService) -> None:
    await make_decisions(web)
    await log_in(page, web, TOKENS["viewer"])
    await expect(page.locator("table.log tbody tr")).to_have_count(5)
    nav = page.get_by_role("navigation", name="Main")
    await expect(nav.get_by_role("link")).to_have_text(["Decision log", "Summary"])
    response = await page.goto(f"{web.base_url}/objections")
    assert response is not None and response.status == 403
    await expect(page.get_by_role("alert")).to_contain_text("may not")
    await page.goto(f"{web.base_url}/decisions")
    await page.get_by_role("button", name="Log out").click()
    await expect(page).to_have_url(f"{web.base_url}/login")
    await page.goto(f"{web.base_url}/decisions")
    await expect(page).to_have_url(f"{web.base_url}/login?next=/decisions")


async def test_a_crafted_login_link_never_leads_to_another_site(page: Page, web: WebService) -> None:
    # `next` as an attacker would write it in a link; a browser drops the tab or line break, or reads `\` as `/`
    attacks = ("%2F%09%2Fevil.example", "%2F%0A%2Fevil.example", "%2F%0D%0A%2Fevil.example", "%2F%5Cevil.example",
               "%5C%5Cevil.example", "%2F%2Fevil.example", "https%3A%2F%2Fevil.example")  # fmt: skip
    for target in attacks:
        await page.context.clear_cookies()
        await page.goto(f"{web.base_url}/login?next={target}")
        await page.get_by_label("Token").fill(TOKENS["viewer"])
        await page.get_by_role("button", name="Log in").click()
        await expect(page).to_have_url(f"{web.base_url}/decisions")  # `/`, which shows the log
