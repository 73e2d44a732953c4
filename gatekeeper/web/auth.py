"""Who is asking, and may they: API tokens, roles, UI sessions and CSRF tokens.

Tokens are configured as SHA-256 hex digests (`[[http.tokens]]`); a presented token is hashed and compared
with every configured digest in constant time, so neither the answer nor its timing tells which digest
came close. The UI exchanges a token for a session cookie: a signed (HMAC-SHA256), expiring payload that
names the token and its role and carries the session's CSRF token. No token is ever stored or logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from gatekeeper.config import NAME, ApiToken, Settings

SESSION_SECONDS = 8 * 3600  # a working day; then the UI asks for the token again
LOGIN_SECONDS = 3600  # how long a login form stays valid
TOKEN_BYTES = 32
MAX_COOKIE_CHARS = 1024


class Role(StrEnum):
    ADMIN = "admin"
    COMPLIANCE = "compliance"
    VIEWER = "viewer"


class Permission(StrEnum):
    READ_LOG = "read-log"  # decisions, summary, CSV export
    CHECK = "check"  # decide a call through the API
    REPORT = "report"  # per-number access report and look-up (GDPR art. 15)
    OBJECT = "object"  # register an objection
    ERASE = "erase"  # GDPR art. 17
    UPSERT = "upsert"  # consent and customer records
    AUDIT = "audit"  # read the audit trail


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.COMPLIANCE: frozenset({Permission.READ_LOG, Permission.CHECK, Permission.REPORT, Permission.OBJECT}),
    Role.VIEWER: frozenset({Permission.READ_LOG}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the configured token's name and role."""

    name: str
    role: Role

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]


def hash_token(token: str) -> str:
    """The SHA-256 hex digest that the configuration stores for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(name: str, role: Role | str = Role.ADMIN) -> tuple[str, ApiToken]:
    """A fresh random token and the `ApiToken` entry that accepts it (e.g. the demo's printed token)."""
    if not NAME.fullmatch(name):
        raise ValueError("token names are 1–64 letters, digits, '_', '.' or '-'")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, ApiToken(name, Role(role).value, hash_token(token))


def with_token(settings: Settings, token: ApiToken) -> Settings:
    """`settings` with one more API token, e.g. the demo's: `settings = with_token(settings, new_token("demo")[1])`."""
    if any(t.name == token.name for t in settings.http.tokens):
        raise ValueError(f"a token named {token.name!r} is configured already")
    return replace(settings, http=replace(settings.http, tokens=(*settings.http.tokens, token)))


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (None when absent or another scheme)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or len(value) > MAX_COOKIE_CHARS:
        return None
    return value


class TokenBook:
    """The configured tokens: authenticates a presented token in constant time."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self._entries = [(bytes.fromhex(t.sha256), Principal(t.name, Role(t.role))) for t in tokens]
        self._by_name = {p.name: p for _, p in self._entries}

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str | None) -> Principal | None:
        if token is None:
            return None
        digest = hashlib.sha256(token.encode(errors="surrogateescape")).digest()
        found: Principal | None = None
        for expected, principal in self._entries:  # no early exit: every digest is compared
            if hmac.compare_digest(digest, expected) and found is None:
                found = principal
        return found

    def principal(self, name: str, role: str) -> Principal | None:
        """The configured principal of that name, if it still has that role (session check)."""
        principal = self._by_name.get(name)
        return principal if principal is not None and principal.role.value == role else None


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    csrf: str
    expires: int  # Unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signed, expiring cookie values: `base64url(JSON payload).base64url(HMAC-SHA256)`."""

    def __init__(self, secret: bytes, tokens: TokenBook) -> None:
        """`secret` empty: a random one for this process (sessions end with it)."""
        self._key = hashlib.sha256(b"gatekeeper-ui-session\x00" + (secret or secrets.token_bytes(32))).digest()
        self._tokens = tokens

    def _sign(self, payload: dict[str, object]) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        mac = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
        return f"{body}.{_b64(mac)}"

    def _open(self, value: str | None, purpose: str, now: float | None) -> dict[str, object] | None:
        if not value or len(value) > MAX_COOKIE_CHARS:
            return None
        body, _, mac = value.partition(".")
        try:
            expected = hmac.new(self._key, body.encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64(mac)):
                return None
            payload = json.loads(_unb64(body))
        except (ValueError, binascii.Error, UnicodeError):
            return None
        if not isinstance(payload, dict) or payload.get("p") != purpose:
            return None
        expires = payload.get("x")
        if not isinstance(expires, int) or expires <= (time.time() if now is None else now):
            return None
        return payload

    def issue_session(self, principal: Principal, *, now: float | None = None) -> tuple[str, Session]:
        session = Session(
            principal, secrets.token_urlsafe(24), int(time.time() if now is None else now) + SESSION_SECONDS
        )
        value = self._sign(
            {"p": "session", "n": principal.name, "r": principal.role.value, "c": session.csrf, "x": session.expires}
        )
        return value, session

    def read_session(self, value: str | None, *, now: float | None = None) -> Session | None:
        payload = self._open(value, "session", now)
        if payload is None:
            return None
        name, role, csrf, expires = payload.get("n"), payload.get("r"), payload.get("c"), payload.get("x")
        if not (isinstance(name, str) and isinstance(role, str) and isinstance(csrf, str) and isinstance(expires, int)):
            return None
        principal = self._tokens.principal(name, role)
        return None if principal is None else Session(principal, csrf, expires)

    def issue_login(self, *, now: float | None = None) -> tuple[str, str]:
        """A login form's CSRF token and the cookie value that vouches for it."""
        csrf = secrets.token_urlsafe(24)
        return self._sign(
            {"p": "login", "c": csrf, "x": int(time.time() if now is None else now) + LOGIN_SECONDS}
        ), csrf

    def check_login(self, value: str | None, csrf: str, *, now: float | None = None) -> bool:
        payload = self._open(value, "login", now)
        expected = payload.get("c") if payload is not None else None
        return isinstance(expected, str) and same(expected, csrf)


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two texts (CSRF tokens)."""
    return hmac.compare_digest(a.encode(errors="surrogateescape"), b.encode(errors="surrogateescape"))
