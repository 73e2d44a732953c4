from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.core.model import NumberKind
from gatekeeper.core.numbers import NumberPlan, mask_e164, normalise, parse_caller_ids


@pytest.mark.parametrize(
    "text",
    ["0612345678", "06 12 34 56 78", "06-1234 5678", "+31612345678", "+31 6 12345678", "0031612345678",
     "(06) 12345678", "+310612345678", " 0612345678 "],
)  # fmt: skip
def test_dutch_mobile_forms(text: str) -> None:
    number = normalise(text, "NL")
    assert (number.kind, number.e164, number.region) == (NumberKind.VALID, "+31612345678", "NL")
    assert number.time_zones == ("Europe/Amsterdam",)


def test_trunk_prefix_is_stripped_once() -> None:
    plan = NumberPlan(trunk_prefix="9")
    assert normalise("90612345678", "NL", plan).e164 == "+31612345678"
    assert normalise("9112", "NL", plan).kind is NumberKind.EMERGENCY
    assert normalise("+31612345678", "NL", plan).e164 == "+31612345678"


def test_foreign_numbers_and_regions() -> None:
    us = normalise("+1 212 555 0100", "NL")
    assert (us.e164, us.region, us.time_zones) == ("+12125550100", "US", ("America/New_York",))
    assert normalise("0032 2 555 12 12", "NL").e164 == "+3225551212"
    assert normalise("(212) 555-0100", "US").e164 == "+12125550100"


@pytest.mark.parametrize(
    ("text", "problem"),
    [("", "no digits"), ("abc", "not a telephone number"), ("0" * 50, "too long"), ("06123", None),
     ("+999 1234567", None), ("0800123", None), ("06;12345678", "not a telephone number")],
)  # fmt: skip
def test_invalid_numbers(text: str, problem: str | None) -> None:
    number = normalise(text, "NL")
    assert number.kind is NumberKind.INVALID and number.e164 is None
    if problem:
        assert number.problem == problem


def test_emergency_list_is_configurable() -> None:
    assert normalise("112", "NL").kind is NumberKind.EMERGENCY
    assert normalise("112", "NL", NumberPlan(emergency=frozenset({"911"}))).kind is NumberKind.INVALID
    assert normalise("0900", "NL", NumberPlan(emergency=frozenset({"0900"}))).kind is NumberKind.EMERGENCY


def test_masking_never_shows_the_whole_number() -> None:
    assert normalise("0612345678", "NL").masked == "+31 6 ****5678"
    assert normalise("0201234567", "NL").masked == "+31 2 ****4567"
    assert normalise("xyz", "NL").masked == "(invalid)"
    assert normalise("112", "NL").masked == "112"
    assert mask_e164("+12125550100") == "+1 2 ****0100"


def test_caller_id_pool_parsing() -> None:
    assert parse_caller_ids(["020 123 4567", "+31201234567"], "NL") == frozenset({"+31201234567"})
    with pytest.raises(ValueError, match="not a valid"):
        parse_caller_ids(["12"], "NL")


def _reference(text: str, region: str) -> str | None:
    try:
        numobj = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(numobj):
        return None
    return phonenumbers.format_number(numobj, phonenumbers.PhoneNumberFormat.E164)


prefixes = st.sampled_from(["", "0", "00", "0031", "+31", "+310", "06", "+316", "0031 6", "+32", "0044", "+1"])


@settings(max_examples=3000, deadline=None)
@given(prefix=prefixes, digits=st.text(alphabet="0123456789", min_size=0, max_size=12))
def test_fast_path_agrees_with_phonenumbers(prefix: str, digits: str) -> None:
    text = prefix + digits
    number = normalise(text, "NL", NumberPlan(emergency=frozenset()))
    assert number.e164 == _reference(text.replace(" ", ""), "NL")


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_garbage_never_raises(text: str) -> None:
    number = normalise(text, "NL")
    assert number.kind in (NumberKind.VALID, NumberKind.INVALID, NumberKind.EMERGENCY)
