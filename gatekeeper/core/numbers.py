"""Number normalisation: dialled digits to E.164, emergency/short numbers, time zones, masking.

`phonenumbers` is the authority on validity. A fast path handles the common forms (`+CC…`, `00CC…` and
the national `0…` form) for single-region countries by checking the national significant number against
phonenumbers' own metadata patterns, which is what `is_valid_number` does after parsing; anything the
fast path does not accept goes through the full parser, so the fast path can only agree with it
(`tests/unit/test_numbers.py` checks that on random input).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import phonenumbers
from phonenumbers import timezone as pn_timezone

from gatekeeper.core.model import Number, NumberKind

DEFAULT_EMERGENCY_NUMBERS = frozenset({"112", "911", "999", "144"})
MAX_INPUT_LENGTH = 40
_SEPARATORS = str.maketrans("", "", " \t-./()")
_DIGITS = re.compile(r"\+?[0-9]{1,32}")
_UNKNOWN_ZONE = "Etc/Unknown"
_TIMEZONE_DATA: dict[str, tuple[str, ...]] = getattr(pn_timezone, "TIMEZONE_DATA", {})


@dataclass(frozen=True, slots=True)
class NumberPlan:
    """How dialled digits are read: the PBX's outside-line prefix and the always-allowed short numbers."""

    trunk_prefix: str = ""
    emergency: frozenset[str] = field(default=DEFAULT_EMERGENCY_NUMBERS)


DEFAULT_PLAN = NumberPlan()


@dataclass(frozen=True, slots=True)
class _RegionFast:
    country_code: str
    national_prefix: str
    idd: str
    by_length: Mapping[int, re.Pattern[str]]  # NSN length -> the types whose lengths allow it, in one pattern
    general: re.Pattern[str]
    time_zones: tuple[str, ...]

    def valid_nsn(self, nsn: str) -> bool:
        """What `is_valid_number` decides: the general pattern and at least one number type match."""
        types = self.by_length.get(len(nsn))
        return types is not None and self.general.fullmatch(nsn) is not None and types.fullmatch(nsn) is not None


_TYPE_DESCS = (
    "premium_rate", "toll_free", "shared_cost", "voip", "personal_number",
    "pager", "uan", "voicemail", "fixed_line", "mobile",
)  # fmt: skip


def _desc(desc: object) -> tuple[frozenset[int], re.Pattern[str]] | None:
    pattern = getattr(desc, "national_number_pattern", None)
    if desc is None or pattern is None:
        return None
    return frozenset(getattr(desc, "possible_length", ()) or ()), re.compile(pattern)


@functools.cache
def _fast_region(region: str) -> _RegionFast | None:
    """Fast-path data for a region, or None where the simple rules do not hold."""
    md = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if md is None or md.country_code is None:
        return None
    if phonenumbers.region_codes_for_country_code(md.country_code) != (region,):
        return None  # shared country codes (+1, +7, +44 …) need the full parser to find the region
    if md.national_prefix != "0" or md.national_prefix_for_parsing not in (None, "0"):
        return None
    if md.national_prefix_transform_rule or md.leading_digits:
        return None
    general = _desc(md.general_desc)
    if general is None or not general[0]:
        return None
    types = [d for name in _TYPE_DESCS if (d := _desc(getattr(md, name, None))) is not None]
    zones = _country_time_zones(md.country_code)
    if len(zones) != 1:
        return None
    by_length = {}
    for length in general[0]:
        # A type without lengths of its own takes the general ones (as phonenumbers does).
        alternatives = [p.pattern for lengths, p in types if not lengths or length in lengths]
        if alternatives:
            by_length[length] = re.compile("|".join(f"(?:{a})" for a in alternatives))
    idd = md.international_prefix if md.international_prefix and md.international_prefix.isdigit() else ""
    return _RegionFast(str(md.country_code), "0", idd, by_length, general[1], zones)


@functools.cache
def _country_time_zones(country_code: int) -> tuple[str, ...]:
    """All time zones phonenumbers knows for a country code (one for most countries)."""
    prefix = str(country_code)
    zones: set[str] = set()
    for key, value in _TIMEZONE_DATA.items():
        if key.startswith(prefix):
            zones.update(value)
    if not zones:
        zones.update(_TIMEZONE_DATA.get(prefix, ()))
    return tuple(sorted(zones))


def country_time_zones(region: str) -> tuple[str, ...]:
    """The time zones of a region's country code (one for most countries)."""
    return _country_time_zones(phonenumbers.country_code_for_region(region))


def _zones_for(numobj: phonenumbers.PhoneNumber) -> tuple[str, ...]:
    return tuple(z for z in pn_timezone.time_zones_for_number(numobj) if z != _UNKNOWN_ZONE)


def _invalid(problem: str) -> Number:
    return Number(kind=NumberKind.INVALID, problem=problem)


def _fast(cleaned: str, region: str) -> Number | None:
    fast = _fast_region(region)
    if fast is None:
        return None
    cc = fast.country_code
    if cleaned.startswith("+"):
        if not cleaned.startswith(cc, 1):
            return None
        nsn = cleaned[1 + len(cc) :]
    elif fast.idd and cleaned.startswith(fast.idd + cc):
        nsn = cleaned[len(fast.idd) + len(cc) :]
    elif cleaned.startswith(fast.national_prefix) and not (fast.idd and cleaned.startswith(fast.idd)):
        nsn = cleaned[len(fast.national_prefix) :]
    else:
        return None
    if not nsn or nsn[0] == "0" or not fast.valid_nsn(nsn):
        return None
    return Number(
        kind=NumberKind.VALID,
        e164=f"+{cc}{nsn}",
        region=region,
        country_code=int(cc),
        time_zones=fast.time_zones,
    )


def normalise(dialled: str, region: str, plan: NumberPlan = DEFAULT_PLAN) -> Number:
    """Read dialled digits (national, `+` or `00` form) as the campaign's region would dial them."""
    text = dialled.strip()
    if not text:
        return _invalid("no digits")
    if len(text) > MAX_INPUT_LENGTH:
        return _invalid("too long")
    cleaned = text.translate(_SEPARATORS)
    if _DIGITS.fullmatch(cleaned) is None:
        return _invalid("not a telephone number")
    if plan.trunk_prefix and not cleaned.startswith("+") and cleaned.startswith(plan.trunk_prefix):
        cleaned = cleaned[len(plan.trunk_prefix) :]
    if cleaned in plan.emergency:
        return Number(kind=NumberKind.EMERGENCY, e164=None, region=region, masked_input=cleaned)
    fast = _fast(cleaned, region)
    if fast is not None:
        return fast
    try:
        numobj = phonenumbers.parse(cleaned, region)
    except phonenumbers.NumberParseException as exc:
        return _invalid(_parse_problem(exc))
    if not phonenumbers.is_valid_number(numobj):
        return _invalid(f"not a valid number for region {region}")
    e164 = phonenumbers.format_number(numobj, phonenumbers.PhoneNumberFormat.E164)
    return Number(
        kind=NumberKind.VALID,
        e164=e164,
        region=phonenumbers.region_code_for_number(numobj),
        country_code=int(numobj.country_code or 0),
        time_zones=_zones_for(numobj),
    )


def _parse_problem(exc: phonenumbers.NumberParseException) -> str:
    return {
        phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
        phonenumbers.NumberParseException.NOT_A_NUMBER: "not a telephone number",
        phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
        phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
        phonenumbers.NumberParseException.TOO_LONG: "too long",
    }.get(exc.error_type, "not a telephone number")


def normalise_e164(text: str, region: str = "NL") -> str | None:
    """E.164 form of a number that must be valid (configuration, import), or None."""
    number = normalise(text, region, NumberPlan(emergency=frozenset()))
    return number.e164 if number.kind is NumberKind.VALID else None


def mask(number: Number) -> str:
    """`+31 6 ****5678`: country code, first digit and last four; never the whole number."""
    return number.masked


def mask_e164(e164: str) -> str:
    """Mask an E.164 string without re-validating it (for numbers already in the index)."""
    try:
        numobj = phonenumbers.parse(e164, None)
        cc = int(numobj.country_code or 0)
    except phonenumbers.NumberParseException:
        return "(invalid)"
    return mask(Number(kind=NumberKind.VALID, e164=e164, country_code=cc))


def parse_caller_ids(values: Iterable[str], region: str) -> frozenset[str]:
    """E.164 forms of configured caller IDs; raises ValueError naming the first invalid one."""
    result = set()
    for value in values:
        e164 = normalise_e164(value, region)
        if e164 is None:
            raise ValueError(f"{value!r} is not a valid telephone number")
        result.add(e164)
    return frozenset(result)
