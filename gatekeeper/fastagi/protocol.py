"""The FastAGI wire protocol, sans I/O: argument quoting, command lines, the environment block, replies.

Everything here follows what a real Asterisk 23.4.1 sent and accepted (``shared/asterisk-traces/``):

- On connect Asterisk sends an ``agi_*: value`` environment block, LF-terminated lines, ended by one
  empty line (:class:`EnvironmentParser`, :class:`AgiEnvironment`).
- Each command is one LF-terminated line that Asterisk splits into arguments itself: blanks separate,
  ``"`` groups, ``\\`` escapes the next character, inside or outside quotes. Every value therefore goes
  out through :func:`quote`; command words are fixed tokens (:func:`format_command`).
- Asterisk reads a command with ``fgets`` into a 2048-byte buffer. A longer line is cut after 2047 bytes
  and the rest is run as a *second command*, so :func:`format_command` refuses such lines.
- Replies: ``200 result=N [(data)] [suffix]``, ``510``, ``511``, the ``520`` usage block, and the
  unsolicited ``HANGUP`` line. A hangup is an expected outcome (:class:`Hangup`), not an error; only
  bytes that fit no reply raise a :class:`ProtocolError`.

Nothing here does I/O or blocks: the server feeds lines in and writes the bytes that come out. Error
messages never quote the offending line, because environment lines and replies carry phone numbers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeAlias
from urllib.parse import unquote

#: Longest command line Asterisk reads as one command, LF included (``fgets`` into ``char buf[2048]``).
MAX_COMMAND_LINE_BYTES: Final = 2047
#: MSet splits its argument into at most 24 ``name=value`` pairs; more would merge into the last one.
MAX_MSET_PAIRS: Final = 24

DEFAULT_MAX_LINE_BYTES: Final = 4096
#: 22 standard ``agi_`` lines plus up to 127 ``agi_arg_N`` lines, with room to spare.
DEFAULT_MAX_ENVIRONMENT_LINES: Final = 200
DEFAULT_MAX_REPLY_LINE_BYTES: Final = 8192
DEFAULT_MAX_USAGE_LINES: Final = 64
DEFAULT_MAX_SCRIPT_CHARS: Final = 2048
DEFAULT_MAX_SCRIPT_PARAMS: Final = 32

# Asterisk passes bytes through untouched; decoding with surrogateescape keeps every value exact and
# re-encodable, even a caller name that is not valid UTF-8.
_ENCODING: Final = "utf-8"
_DECODE_ERRORS: Final = "surrogateescape"


# --------------------------------------------------------------------------------------------------
# Errors: only for bytes that break the protocol. Outcomes (hangup, dead channel, usage) are values.


class ProtocolError(Exception):
    """The peer sent something that is not FastAGI as Asterisk speaks it; the session cannot go on."""


class LineTooLong(ProtocolError):
    """A line exceeded the configured byte limit."""


class TooManyLines(ProtocolError):
    """An environment block or a usage block had more lines than allowed."""


class MalformedEnvironment(ProtocolError):
    """An environment line or the block as a whole is not what Asterisk sends."""


class UnexpectedReply(ProtocolError):
    """A line that is none of the replies Asterisk gives to a command."""


class InvalidScript(ProtocolError):
    """``agi_network_script`` / ``agi_request`` cannot be read as ``script?key=value&...``."""


# --------------------------------------------------------------------------------------------------
# Commands


_COMMAND_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A dialplan function read or written like a variable, e.g. CALLERID(num); no blanks, quotes or escapes.
_FUNCTION_CALL = re.compile(r"[A-Za-z][A-Za-z0-9_]*\([A-Za-z0-9_.:/@+,=-]*\)")
# MSet splits on ',' and '=', and Asterisk's application-argument parser also gives meaning to quotes,
# backslashes, brackets and (with AGIEXECFULL) '$'. Reason codes and decision ids need none of them.
_MSET_VALUE = re.compile(r"[A-Za-z0-9_.:/@+-]*")


def quote(value: str) -> str:
    """Quote ``value`` as exactly one Asterisk AGI argument.

    The result is always wrapped in double quotes, with ``\\`` and ``"`` escaped, so Asterisk's argument
    splitter gives back ``value`` unchanged; ``""`` is the empty argument. LF, CR and NUL raise
    :class:`ValueError` (LF would end the command, NUL cut it short, and a CR has no business in a
    channel variable): such a value is a bug upstream and is not silently altered.
    """
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ValueError("an AGI argument cannot contain LF, CR or NUL")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_command(command: str, *args: str | int) -> bytes:
    """Build one command line: fixed command words, then each argument quoted (ints written bare).

    ``command`` holds one or more words separated by single spaces (``"SET VARIABLE"``, ``"EXEC MSet"``);
    they are checked to be plain tokens, never quoted. Raises :class:`ValueError` for a bad word, an
    unsendable argument, or a line longer than :data:`MAX_COMMAND_LINE_BYTES`.
    """
    words = command.split(" ")
    if not all(_COMMAND_WORD.fullmatch(word) for word in words):
        raise ValueError("command words must be plain tokens separated by single spaces")
    parts = list(words)
    for arg in args:
        if isinstance(arg, bool):
            raise TypeError("a bool is not an AGI argument")
        parts.append(str(arg) if isinstance(arg, int) else quote(arg))
    return _line(parts)


def get_variable(name: str) -> bytes:
    """``GET VARIABLE name`` (a variable or a dialplan function such as ``CALLERID(num)``)."""
    return _line(["GET", "VARIABLE", _checked_name(name, functions=True)])


def get_full_variable(expression: str) -> bytes:
    """``GET FULL VARIABLE "expression"``: Asterisk expands ``${...}`` in the expression."""
    return format_command("GET FULL VARIABLE", expression)


def set_variable(name: str, value: str) -> bytes:
    """``SET VARIABLE name "value"``; Asterisk stores the value literally (``${X}`` is not expanded)."""
    return _line(["SET", "VARIABLE", _checked_name(name, functions=True), quote(value)])


def verbose(message: str, level: int = 1) -> bytes:
    """``VERBOSE "message" level``: a line in the Asterisk verbose log."""
    if isinstance(level, bool) or level < 0:
        raise ValueError("verbose level must be a non-negative int")
    return format_command("VERBOSE", message, level)


def exec_mset(pairs: Sequence[tuple[str, str]]) -> bytes:
    """``EXEC MSet "A=1,B=2"``: set several channel variables in one round trip.

    Names must be plain variable names and values may only use ``[A-Za-z0-9_.:/@+-]``: MSet splits on
    ``,`` and ``=``, and the application-argument parser behind it treats quotes, backslashes and
    brackets specially. Anything else raises :class:`ValueError`; use :func:`set_variable` for it.
    """
    if not pairs:
        raise ValueError("MSet needs at least one name=value pair")
    if len(pairs) > MAX_MSET_PAIRS:
        raise ValueError(f"MSet takes at most {MAX_MSET_PAIRS} pairs")
    for name, value in pairs:
        if not _VARIABLE_NAME.fullmatch(name):
            raise ValueError("MSet variable names must match [A-Za-z_][A-Za-z0-9_]*")
        if not _MSET_VALUE.fullmatch(value):
            raise ValueError("MSet values may only contain [A-Za-z0-9_.:/@+-]")
    return format_command("EXEC MSet", ",".join(f"{name}={value}" for name, value in pairs))


def _checked_name(name: str, *, functions: bool) -> str:
    if _VARIABLE_NAME.fullmatch(name) or (functions and _FUNCTION_CALL.fullmatch(name)):
        return name
    raise ValueError("not a plain variable name or function call")


def _line(parts: Sequence[str]) -> bytes:
    line = (" ".join(parts) + "\n").encode(_ENCODING, _DECODE_ERRORS)
    if len(line) > MAX_COMMAND_LINE_BYTES:
        raise ValueError(
            f"command line of {len(line)} bytes exceeds {MAX_COMMAND_LINE_BYTES}: "
            "Asterisk would run the excess as a separate command"
        )
    return line


# --------------------------------------------------------------------------------------------------
# agi_network_script / agi_request


def _empty_mapping() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class AgiScript:
    """The script part of a FastAGI URL: ``check?campaign=acme`` is ``AgiScript("check", {...})``."""

    name: str
    params: Mapping[str, str] = field(default_factory=_empty_mapping, hash=False)


_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_agi_script(
    value: str,
    *,
    max_chars: int = DEFAULT_MAX_SCRIPT_CHARS,
    max_params: int = DEFAULT_MAX_SCRIPT_PARAMS,
) -> AgiScript:
    """Split ``agi_network_script`` (``check?a=1``) or ``agi_request`` (``agi://h:p/check?a=1``).

    Names and values are percent-decoded as UTF-8; ``+`` stays a literal plus (``number=+316...``).
    Raises :class:`InvalidScript` for an over-long value, too many parameters, a duplicate or empty
    parameter name, a malformed ``%`` escape, invalid UTF-8, or a decoded control character.
    """
    if len(value) > max_chars:
        raise InvalidScript(f"script longer than {max_chars} characters")
    scheme, sep, rest = value.partition("://")
    if sep and scheme.lower() in ("agi", "hagi"):
        # Asterisk's own reading: the script is everything after the first '/' following the host.
        _host, _slash, value = rest.partition("/")
    path, _, query = value.partition("?")
    params: dict[str, str] = {}
    pieces = [piece for piece in query.split("&") if piece]
    if len(pieces) > max_params:
        raise InvalidScript(f"more than {max_params} query parameters")
    for piece in pieces:
        raw_key, _, raw_value = piece.partition("=")
        key = _percent_decode(raw_key)
        if not key:
            raise InvalidScript("empty query parameter name")
        if key in params:
            raise InvalidScript("duplicate query parameter")
        params[key] = _percent_decode(raw_value)
    return AgiScript(_percent_decode(path), MappingProxyType(params))


def _percent_decode(text: str) -> str:
    if _PERCENT.search(text):
        raise InvalidScript("malformed percent escape")
    try:
        decoded = unquote(text, encoding=_ENCODING, errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidScript("percent escapes are not valid UTF-8") from exc
    if _CONTROL.search(decoded):
        raise InvalidScript("control character in script or parameter")
    return decoded


# --------------------------------------------------------------------------------------------------
# The environment block


@dataclass(frozen=True, slots=True)
class AgiEnvironment:
    """The ``agi_*`` block Asterisk sends on connect, one field per key the traces show.

    Values are exact (only the single separator space is removed). Keys Asterisk did not send are
    ``""`` (``network_script`` is ``None``: Asterisk omits it when the URL has no path; ``callingpres``
    is ``None``). Channel variables are *not* part of the block; read them with GET VARIABLE.
    """

    network: bool = False
    network_script: str | None = None
    request: str = ""
    channel: str = ""
    language: str = ""
    type: str = ""
    uniqueid: str = ""
    version: str = ""
    callerid: str = ""
    calleridname: str = ""
    callingpres: int | None = None
    callingani2: str = ""
    callington: str = ""
    callingtns: str = ""
    dnid: str = ""
    rdnis: str = ""
    context: str = ""
    extension: str = ""
    priority: str = ""
    enhanced: str = ""
    accountcode: str = ""
    threadid: str = ""
    args: tuple[str, ...] = ()
    extra: Mapping[str, str] = field(default_factory=_empty_mapping, hash=False)

    def script(self) -> AgiScript:
        """The script name and query parameters, from ``agi_network_script`` or else ``agi_request``."""
        return parse_agi_script(self.network_script if self.network_script is not None else self.request)


# The agi_* keys that have a field of their own in AgiEnvironment.
_KNOWN_KEYS: Final = frozenset(
    f"agi_{name}"
    for name in (
        "network",
        "network_script",
        "request",
        "channel",
        "language",
        "type",
        "uniqueid",
        "version",
        "callerid",
        "calleridname",
        "callingpres",
        "callingani2",
        "callington",
        "callingtns",
        "dnid",
        "rdnis",
        "context",
        "extension",
        "priority",
        "enhanced",
        "accountcode",
        "threadid",
    )
)
_ENV_KEY = re.compile(r"[A-Za-z0-9_]+")
_ARG_KEY = re.compile(r"agi_arg_([1-9][0-9]{0,3})")
_INTEGER = re.compile(r"-?[0-9]{1,10}")


class EnvironmentParser:
    """Incremental, bounded reader of the environment block: feed it bytes or lines until it returns a value.

    Lines are LF-terminated; one stray CR before the LF is tolerated. The block ends at the first empty
    line. Over-long lines raise :class:`LineTooLong`, too many lines :class:`TooManyLines`, anything
    Asterisk would not send (no ``": "`` separator, a duplicate key, ...) :class:`MalformedEnvironment`.

    :meth:`feed` takes bytes as they arrive (a server's reads: usually the whole block at once) and returns
    the environment with the bytes that followed it; :meth:`feed_line` takes one line at a time.
    """

    def __init__(
        self,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_lines: int = DEFAULT_MAX_ENVIRONMENT_LINES,
    ) -> None:
        self._max_line_bytes = max_line_bytes
        self._max_lines = max_lines
        self._values: dict[str, str] = {}
        self._lines = 0
        self._partial = b""
        self._environment: AgiEnvironment | None = None

    @property
    def done(self) -> bool:
        return self._environment is not None

    @property
    def environment(self) -> AgiEnvironment | None:
        """The parsed block once the empty line was fed, else ``None``."""
        return self._environment

    def feed(self, data: bytes) -> tuple[AgiEnvironment | None, bytes]:
        """Feed bytes; returns ``(environment, rest)`` once the empty line has arrived, else ``(None, b"")``.

        ``rest`` is what came after the block (an early ``HANGUP`` line, say): it belongs to the reply phase.
        Limits are checked as bytes arrive; the block is parsed in one pass when its empty line is there.
        """
        if self._environment is not None:
            raise RuntimeError("the environment block is already complete")
        buffer = self._partial + data if self._partial else data
        end, after = _block_end(buffer)
        if end < 0:
            self._partial = buffer
            if buffer.count(b"\n") > self._max_lines:
                raise TooManyLines(f"environment block longer than {self._max_lines} lines")
            if len(buffer) - buffer.rfind(b"\n") - 1 > self._max_line_bytes + 1:  # a CR may still come
                raise LineTooLong(f"environment line longer than {self._max_line_bytes} bytes")
            return None, b""
        self._partial = b""
        block = buffer[:end]
        values = self._parse_block(block) if block else {}
        self._environment = _build_environment(values)
        return self._environment, buffer[after:]

    def _parse_block(self, block: bytes) -> dict[str, str]:
        """Every line of a complete block (without its empty line) in one pass; errors as `feed_line` gives them."""
        lines = block.decode(_ENCODING, _DECODE_ERRORS).split("\n")
        if b"\r" in block:
            lines = [line[:-1] if line[-1:] == "\r" else line for line in lines]
        parts = [line.partition(": ") for line in lines]
        values = {key: value for key, _, value in parts}
        if (
            len(lines) > self._max_lines
            or len(values) != len(parts)
            or not all(separator for _, separator, _ in parts)
            or not all(_ENV_KEY.fullmatch(key) for key in values.keys() - _KNOWN_KEYS)
            or (len(block) > self._max_line_bytes and max(map(len, block.split(b"\n"))) > self._max_line_bytes)
            or "" in values
        ):
            for raw in block.split(b"\n"):  # the slow path names the first offending line
                self.feed_line(raw)
            raise MalformedEnvironment("environment block is malformed")  # pragma: no cover - feed_line raised
        self._lines = len(lines)
        return values

    def feed_line(self, line: bytes) -> AgiEnvironment | None:
        if self._environment is not None:
            raise RuntimeError("the environment block is already complete")
        body = line[:-1] if line[-1:] == b"\n" else line
        if body[-1:] == b"\r":
            body = body[:-1]
        if len(body) > self._max_line_bytes:
            raise LineTooLong(f"environment line longer than {self._max_line_bytes} bytes")
        if not body:
            self._environment = _build_environment(self._values)
            return self._environment
        if b"\n" in body:
            raise MalformedEnvironment(f"environment line {self._lines + 1} holds more than one line")
        self._add(body.decode(_ENCODING, _DECODE_ERRORS))
        return None

    def _add(self, line: str) -> None:
        self._lines += 1
        if self._lines > self._max_lines:
            raise TooManyLines(f"environment block longer than {self._max_lines} lines")
        key, separator, value = line.partition(": ")
        if not separator or (key not in _KNOWN_KEYS and not _ENV_KEY.fullmatch(key)):
            raise MalformedEnvironment(f"environment line {self._lines} is not 'key: value'")
        if key in self._values:
            raise MalformedEnvironment(f"environment line {self._lines} repeats a key")
        self._values[key] = value


def _block_end(buffer: bytes) -> tuple[int, int]:
    """Where the environment block's lines end and where the bytes after its empty line start ((-1, -1): not yet)."""
    if buffer[:1] == b"\n":
        return 0, 1
    if buffer[:2] == b"\r\n":
        return 0, 2
    lf = buffer.find(b"\n\n")
    crlf = buffer.find(b"\n\r\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, crlf + 3
    return (lf, lf + 2) if lf >= 0 else (-1, -1)


def parse_environment(block: bytes, **limits: int) -> AgiEnvironment:
    """Parse a whole environment block (convenience for tests and tools; servers use the parser)."""
    parser = EnvironmentParser(**limits)
    for line in block.split(b"\n"):
        environment = parser.feed_line(line)
        if environment is not None:
            return environment
    raise MalformedEnvironment("environment block is not terminated by an empty line")


def _build_environment(values: Mapping[str, str]) -> AgiEnvironment:
    numbered: dict[int, str] = {}
    extra: dict[str, str] = {}
    for key in values.keys() - _KNOWN_KEYS:
        value = values[key]
        if key.startswith("agi_arg_") and (arg := _ARG_KEY.fullmatch(key)) is not None:
            numbered[int(arg.group(1))] = value
        else:
            extra[key] = value
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        raise MalformedEnvironment("agi_arg_N lines are not numbered 1..n")
    callingpres: int | None = None
    if "agi_callingpres" in values:
        if not _INTEGER.fullmatch(values["agi_callingpres"]):
            raise MalformedEnvironment("agi_callingpres is not an integer")
        callingpres = int(values["agi_callingpres"])

    text = values.get
    return AgiEnvironment(
        network=text("agi_network") == "yes",
        network_script=text("agi_network_script"),
        request=text("agi_request", ""),
        channel=text("agi_channel", ""),
        language=text("agi_language", ""),
        type=text("agi_type", ""),
        uniqueid=text("agi_uniqueid", ""),
        version=text("agi_version", ""),
        callerid=text("agi_callerid", ""),
        calleridname=text("agi_calleridname", ""),
        callingpres=callingpres,
        callingani2=text("agi_callingani2", ""),
        callington=text("agi_callington", ""),
        callingtns=text("agi_callingtns", ""),
        dnid=text("agi_dnid", ""),
        rdnis=text("agi_rdnis", ""),
        context=text("agi_context", ""),
        extension=text("agi_extension", ""),
        priority=text("agi_priority", ""),
        enhanced=text("agi_enhanced", ""),
        accountcode=text("agi_accountcode", ""),
        threadid=text("agi_threadid", ""),
        args=tuple(numbered[index] for index in sorted(numbered)),
        extra=MappingProxyType(extra),
    )


def _strip_line_end(line: bytes) -> bytes:
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line


# --------------------------------------------------------------------------------------------------
# Replies: a closed set of outcomes


@dataclass(frozen=True, slots=True)
class Success:
    """``200 result=N``, with the raw text inside the parentheses (not unescaped) and any suffix.

    ``data`` is everything between the first ``(`` and the last ``)``, or ``None`` without parentheses;
    ``suffix`` is what follows, e.g. ``endpos=1234`` after STREAM FILE.
    """

    result: int
    data: str | None = None
    suffix: str = ""

    @property
    def endpos(self) -> int | None:
        match = _ENDPOS.search(self.suffix)
        return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class InvalidCommand:
    """``510 Invalid or unknown command``: Asterisk knows no such command (or got an empty line)."""

    text: str = "Invalid or unknown command"


@dataclass(frozen=True, slots=True)
class DeadChannel:
    """``511``: the channel is hung up and this command needs a live one (GET/SET VARIABLE still work)."""

    text: str = "Command Not Permitted on a dead channel or intercept routine"


@dataclass(frozen=True, slots=True)
class UsageError:
    """``520``: wrong arguments. ``text`` is the usage text of the block, or the single-line message."""

    text: str


@dataclass(frozen=True, slots=True)
class Hangup:
    """The bare, unsolicited ``HANGUP`` line: the channel was hung up (may come more than once)."""


Reply: TypeAlias = Success | InvalidCommand | DeadChannel | UsageError | Hangup

_SUCCESS = re.compile(r"200 result=(-?[0-9]{1,10})(?: (.*))?", re.DOTALL)
_ENDPOS = re.compile(r"(?:^| )endpos=(-?[0-9]{1,20})(?= |$)")
_USAGE_END: Final = "End of proper usage."


class ReplyParser:
    """Incremental reader of Asterisk's replies, fed one line at a time.

    :meth:`feed_line` returns a :data:`Reply`, or ``None`` while inside a multi-line ``520-`` usage block
    (whose lines may look like replies and are taken as text until the ``520 `` line). Trailing blanks
    and a stray CR are tolerated. Any other line raises :class:`UnexpectedReply`; limits raise
    :class:`LineTooLong` / :class:`TooManyLines`.
    """

    def __init__(
        self,
        *,
        max_line_bytes: int = DEFAULT_MAX_REPLY_LINE_BYTES,
        max_usage_lines: int = DEFAULT_MAX_USAGE_LINES,
    ) -> None:
        self._max_line_bytes = max_line_bytes
        self._max_usage_lines = max_usage_lines
        self._usage: list[str] | None = None

    @property
    def in_usage_block(self) -> bool:
        return self._usage is not None

    def feed_line(self, line: bytes) -> Reply | None:
        body = _strip_line_end(line)
        if len(body) > self._max_line_bytes:
            raise LineTooLong(f"reply line longer than {self._max_line_bytes} bytes")
        if b"\n" in body:
            raise UnexpectedReply("reply holds more than one line")
        text = body.decode(_ENCODING, _DECODE_ERRORS).rstrip(" ")
        if self._usage is not None:
            return self._usage_line(self._usage, text)
        if text == "HANGUP":
            return Hangup()
        if text.startswith("200 "):
            return _parse_success(text)
        code, _, message = text.partition(" ")
        if code == "510":
            return InvalidCommand(message)
        if code == "511":
            return DeadChannel(message)
        if code == "520" and message and message != _USAGE_END:
            return UsageError(message)
        if text.startswith("520-"):
            self._usage = []
            return None
        raise UnexpectedReply("line is not a FastAGI reply")

    def _usage_line(self, usage: list[str], text: str) -> Reply | None:
        if text == "520" or text.startswith("520 "):
            self._usage = None
            return UsageError("\n".join(usage))
        if len(usage) >= self._max_usage_lines:
            raise TooManyLines(f"usage block longer than {self._max_usage_lines} lines")
        usage.append(text)
        return None


def parse_replies(data: bytes, **limits: int) -> list[Reply]:
    """Every reply in ``data`` (LF-separated lines); convenience for tests and tools."""
    parser = ReplyParser(**limits)
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    replies = [reply for line in lines if (reply := parser.feed_line(line)) is not None]
    if parser.in_usage_block:
        raise UnexpectedReply("usage block is not terminated")
    return replies


def _parse_success(text: str) -> Success:
    match = _SUCCESS.fullmatch(text)
    if match is None:
        raise UnexpectedReply("malformed 200 reply")
    result = int(match.group(1))
    rest = match.group(2) or ""
    if not rest.startswith("("):
        return Success(result, None, rest)
    close = rest.rfind(")")
    if close < 0:
        raise UnexpectedReply("200 reply with an unclosed '('")
    return Success(result, rest[1:close], rest[close + 1 :].lstrip(" "))
