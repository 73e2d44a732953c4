"""The public contract is named once (gatekeeper.contract) and the adapters, metrics and docs use it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gatekeeper import contract
from gatekeeper.ari.app import ChannelVariable
from gatekeeper.contract import ChannelResult, IndexFailure, Reason, SessionOutcome, Source, Verdict
from gatekeeper.fastagi.protocol import exec_mset
from gatekeeper.fastagi.server import verdict_command
from gatekeeper.metrics import FASTAGI_OUTCOMES, INDEX_ERROR_KINDS, SOURCES
from gatekeeper.record import new_decision_id
from tests.conftest import make_record

README = (Path(__file__).parents[2] / "README.md").read_text()
CHANNEL_VARIABLES = (
    contract.GATEKEEPER_RESULT,
    contract.GATEKEEPER_REASON,
    contract.GATEKEEPER_DECISION_ID,
    contract.GATEKEEPER_CAMPAIGN,
)


def in_code(value: str) -> bool:
    """`value` appears in the README as code (`value`), not just as a word of the prose."""
    return re.search(rf"`{re.escape(value)}`", README) is not None


@pytest.mark.parametrize(
    "value",
    [
        *CHANNEL_VARIABLES,
        *ChannelResult,
        *Reason,
        *SessionOutcome,
        *IndexFailure,
        *Source,
    ],
)
def test_the_readme_documents_every_public_value(value: str) -> None:
    assert in_code(value), f"README.md does not list `{value}`"


def test_adapters_and_metrics_take_their_names_from_the_contract() -> None:
    assert {v.value for v in ChannelVariable} >= set(CHANNEL_VARIABLES)
    assert tuple(SessionOutcome) == FASTAGI_OUTCOMES
    assert tuple(IndexFailure) == INDEX_ERROR_KINDS
    assert tuple(Source) == SOURCES


@pytest.mark.parametrize(("verdict", "result"), [(Verdict.ALLOW, "ALLOW"), (Verdict.BLOCK, "BLOCK")])
def test_the_channel_variables_are_a_projection_of_the_record(verdict: Verdict, result: str) -> None:
    record = make_record(verdict=verdict, reason=Reason.CONSENT, decision_id="01JZ0000000000000000000001")
    assert record.channel_variables() == [
        ("GATEKEEPER_RESULT", result),
        ("GATEKEEPER_REASON", "consent"),
        ("GATEKEEPER_DECISION_ID", "01JZ0000000000000000000001"),
    ]


@pytest.mark.parametrize("verdict", list(Verdict))
@pytest.mark.parametrize("reason", list(Reason))
def test_the_cached_mset_line_is_the_one_exec_mset_builds(verdict: Verdict, reason: Reason) -> None:
    for decision_id in (new_decision_id(1_785_000_000.0), new_decision_id(1_785_000_001.5), "not-an-id"):
        record = make_record(verdict=verdict, reason=reason, decision_id=decision_id)
        assert verdict_command(record) == exec_mset(record.channel_variables())
