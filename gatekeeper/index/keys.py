"""Every Redis key gatekeeper uses, in one place.

A number is never stored: its key material is HMAC-SHA256(pepper, E.164). The digest gives

- a 12-bit hash tag `{abc}` shared by every key that holds facts about the number, so one Lua script
  reads them all in one round trip, also on Redis Cluster (all keys of a tag live in one slot);
- a 10-byte hash field naming the number inside its bucket;
- sub-bucket bits that spread a large tenant over `2**sub_bits` small hashes per tag, so each stays in
  Redis' compact listpack encoding.

Layout (prefix `gk` by default; T = tenant, G = generation, S = sub-bucket):

    gk:{tag}:g            hash   T -> "G:bits" (current generation), "T#b" -> generation being built
    gk:{tag}:d:T:G:S      hash   field -> record (consents, relationships, imported objections)
    gk:{tag}:x:T:G:S      hash   field -> record too long for the compact bucket (spill)
    gk:{tag}:o:T          hash   field -> objections registered one by one (survive snapshot imports)
    gk:{tag}:s            hash   field -> global suppressions (erasures, do-not-call-anyone)
    gk:tenants            hash   T -> JSON summary of the current generation (for operators and metrics)
    gk:switches           hash   T -> JSON journal of a generation switch under way (or interrupted)
    gk:genseq             string generation counter
    gk:lock:T             string import lock (a short TTL, refreshed while the import runs)
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import NamedTuple

TAG_BITS = 12
TAGS = 1 << TAG_BITS
FIELD_BYTES = 10
BUILD_SUFFIX = "#b"
RECORDS_PER_BUCKET = 64  # target mean; Redis keeps hashes of up to 128 entries as listpacks by default


def tag_of(index: int) -> str:
    return f"{index:03x}"


ALL_TAGS = tuple(tag_of(i) for i in range(TAGS))


class NumberKey(NamedTuple):
    """Where one number lives in the index; `hash_hex` identifies it in the decision log."""

    tag: str
    field: bytes
    spread: int  # bits for choosing the sub-bucket
    digest: bytes

    @property
    def hash_hex(self) -> str:
        return self.digest[:16].hex()

    def sub(self, bits: int) -> int:
        return self.spread & ((1 << bits) - 1)


@dataclass(frozen=True, slots=True)
class Generation:
    number: int
    sub_bits: int

    def encode(self) -> bytes:
        return f"{self.number}:{self.sub_bits}".encode()

    @classmethod
    def decode(cls, value: bytes | str | None) -> Generation | None:
        if not value:
            return None
        text = value.decode() if isinstance(value, bytes) else value
        number, _, bits = text.partition(":")
        return cls(int(number), int(bits or 0))


class Keyspace:
    """Key names and number hashing for one deployment (prefix + pepper)."""

    __slots__ = ("_pepper", "genseq", "prefix", "switches", "tenants")

    def __init__(self, prefix: str, pepper: bytes) -> None:
        if not pepper:
            raise ValueError("the pepper must not be empty")
        self._pepper = pepper
        self.prefix = prefix
        self.tenants = f"{prefix}:tenants"
        self.switches = f"{prefix}:switches"
        self.genseq = f"{prefix}:genseq"

    def __repr__(self) -> str:
        return f"Keyspace(prefix={self.prefix!r}, pepper=<hidden>)"

    def number_key(self, e164: str) -> NumberKey:
        digest = hmac.digest(self._pepper, e164.encode(), "sha256")
        return NumberKey(
            ALL_TAGS[(digest[0] << 4) | (digest[1] >> 4)],  # the first TAG_BITS (12) bits
            digest[2 : 2 + FIELD_BYTES],
            int.from_bytes(digest[12:16]),
            digest,
        )

    def number_hash(self, e164: str) -> str:
        """The number's identifier in logs and reports (a keyed hash, never the number)."""
        return self.number_key(e164).hash_hex

    def pointer(self, tag: str) -> str:
        return f"{self.prefix}:{{{tag}}}:g"

    def data(self, tag: str, tenant: str, generation: Generation, sub: int) -> str:
        return f"{self.prefix}:{{{tag}}}:d:{tenant}:{generation.number}:{sub}"

    def spill(self, tag: str, tenant: str, generation: Generation, sub: int) -> str:
        return f"{self.prefix}:{{{tag}}}:x:{tenant}:{generation.number}:{sub}"

    def generation_keys(self, tag: str, tenant: str, generation: Generation) -> list[str]:
        """All data and spill keys of one tenant generation in one tag."""
        subs = range(1 << generation.sub_bits)
        return [self.data(tag, tenant, generation, s) for s in subs] + [
            self.spill(tag, tenant, generation, s) for s in subs
        ]

    def objections(self, tag: str, tenant: str) -> str:
        return f"{self.prefix}:{{{tag}}}:o:{tenant}"

    def suppressions(self, tag: str) -> str:
        return f"{self.prefix}:{{{tag}}}:s"

    def lock(self, tenant: str) -> str:
        return f"{self.prefix}:lock:{tenant}"


def sub_bits_for(records: int) -> int:
    """Sub-bucket bits so that a tenant of `records` numbers averages ≤ RECORDS_PER_BUCKET per hash."""
    bits = 0
    while records > TAGS * RECORDS_PER_BUCKET * (1 << bits) and bits < 16:
        bits += 1
    return bits
