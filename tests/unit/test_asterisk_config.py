"""The shipped dialplans fail closed: no Dial() unless gatekeeper said ALLOW and the AGI/Stasis succeeded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[2] / "asterisk-config"
LINE = re.compile(r"^\s*(exten|same)\s*=>\s*(.*)$")


def extensions(path: Path) -> dict[tuple[str, str], list[str]]:
    """(context, extension) -> the applications in order (comments and commented-out blocks dropped)."""
    result: dict[tuple[str, str], list[str]] = {}
    context, exten = "", ""
    for raw in path.read_text().splitlines():
        line = raw.split(";", 1)[0].rstrip()
        if line.startswith("["):
            context = line.strip("[] ")
            continue
        match = LINE.match(line)
        if not match:
            continue
        kind, rest = match.groups()
        if kind == "exten":
            exten, _, rest = rest.partition(",")
            _, _, rest = rest.partition(",")  # the priority
        else:
            _, _, rest = rest.partition(",")
        result.setdefault((context, exten), []).append(rest.strip())
    return result


FILES = sorted(CONFIG.glob("*.conf*"))
DIALPLANS = [p for p in FILES if "exten =>" in p.read_text()]


def test_all_integrations_are_shipped() -> None:
    names = {p.name for p in FILES}
    assert {"extensions.conf", "http.conf", "ari.conf", "extensions_custom.conf.freepbx",
            "vicidial-carrier.conf"} <= names  # fmt: skip


@pytest.mark.parametrize("path", DIALPLANS, ids=lambda p: p.name)
def test_every_dial_is_guarded_by_the_verdict_and_the_status(path: Path) -> None:
    dials = 0
    for (context, exten), apps in extensions(path).items():
        for i, app in enumerate(apps):
            if not app.startswith("Dial("):
                continue
            dials += 1
            before = " ".join(apps[:i])
            assert re.search(r'GotoIf\(\$\[.*"\$\{GATEKEEPER_RESULT\}" != "ALLOW"', before), (context, exten)
            assert re.search(r'"\$\{(AGISTATUS|STASISSTATUS)\}" != "SUCCESS"', before), (context, exten)
            check = next(j for j, a in enumerate(apps) if a.startswith(("AGI(", "Stasis(")))
            assert check < i, (context, exten)
    assert dials or "freepbx" in path.name


def test_freepbx_hook_bypasses_the_trunk_unless_allowed() -> None:
    apps = extensions(CONFIG / "extensions_custom.conf.freepbx")[("macro-dialout-trunk-predial-hook", "s")]
    text = " ".join(apps)
    assert 'GotoIf($["${AGISTATUS}" = "SUCCESS" & "${GATEKEEPER_RESULT}" = "ALLOW"]?allow)' in text
    assert apps.index("Set(PREDIAL_HOOK_RET=BYPASS)") < len(apps) - 1
    assert apps[-1] == "n(allow),Return()" or apps[-1].endswith("Return()")


def test_every_gatekeeper_url_uses_the_check_script() -> None:
    urls = [u for p in DIALPLANS for u in re.findall(r"AGI\((h?agi://[^,)]*)", p.read_text())]
    ours = [u for u in urls if ":4577/" not in u]  # 4577 is VICIdial's own FastAGI server (call_log)
    assert len(ours) >= 6
    for url in ours:
        assert re.match(r"h?agi://[^/]+/check(\?|$)", url), url


def test_results_are_cleared_before_each_check() -> None:
    plans = extensions(CONFIG / "extensions.conf")
    for (context, _exten), apps in plans.items():
        if any(a.startswith(("AGI(", "Stasis(")) for a in apps):
            first_check = next(i for i, a in enumerate(apps) if a.startswith(("AGI(", "Stasis(")))
            assert "Set(GATEKEEPER_RESULT=)" in apps[:first_check], context
