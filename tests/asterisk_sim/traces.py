"""Read the FastAGI transcripts of ``shared/asterisk-traces/`` into conversations.

The files mark each wire line with ``>>>`` (Asterisk wrote it) or ``<<<`` (the FastAGI server wrote it),
without its LF; ``###`` lines are annotations (timings, what the server did, ``LOG`` lines from the
Asterisk log). A ``## `` heading starts a conversation. ``>>> ...`` stands for lines left out of the file.

The traces are the ground truth the FastAGI simulator and parser are tested against, so a missing
directory is an error, never a skip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from gatekeeper.simulator.fastagi import SimChannel

# A verbatim copy of shared/asterisk-traces/ (the recordings from a real Asterisk), kept with the tests so
# a clean clone can run them; tests/unit/test_trace_copy.py checks it still matches the shared original.
TRACES_DIR: Final = Path(__file__).resolve().parents[1] / "asterisk_traces"
SHARED_TRACES_DIR: Final = Path(__file__).resolve().parents[3] / "shared" / "asterisk-traces"

_LOG_MESSAGE = re.compile(r"LOG \[[^]]*\] \w+\[\d+\](?:\[[^]]*\])? (?P<source>[\w.]+): (?P<message>.*)")
_GKTRACE = re.compile(r"GKTRACE \S+ (?P<where>exten=|h-exten)")
_AGISTATUS = re.compile(r"AGISTATUS=(\w+)")
_GATEKEEPER_RESULT = re.compile(r"GATEKEEPER_RESULT=(.*?)(?: HANGUPCAUSE=|$)")
_HANGUPCAUSE = re.compile(r"HANGUPCAUSE=(\d+)")


class Kind(StrEnum):
    ASTERISK = ">>>"
    SERVER = "<<<"
    NOTE = "###"


@dataclass(frozen=True, slots=True)
class TraceEvent:
    kind: Kind
    text: str
    elided: bool = False

    @property
    def data(self) -> bytes:
        """The wire bytes of a ``>>>`` / ``<<<`` line, LF included."""
        return (self.text + "\n").encode()


@dataclass(frozen=True, slots=True)
class Conversation:
    file: str
    title: str
    events: tuple[TraceEvent, ...]

    @property
    def environment(self) -> tuple[TraceEvent, ...]:
        """The leading ``>>>`` lines up to and including the empty one (empty if the block is absent)."""
        wire = [event for event in self.events if event.kind is not Kind.NOTE]
        if not wire or wire[0].kind is not Kind.ASTERISK or not wire[0].text.startswith("agi_"):
            return ()
        end = next(index for index, event in enumerate(wire) if event.text == "")
        return tuple(wire[: end + 1])

    @property
    def environment_elided(self) -> bool:
        return any(event.elided for event in self.environment)

    def environment_values(self) -> dict[str, str]:
        if self.environment_elided:
            raise ValueError(f"{self.title}: the environment block is elided in the trace")
        return dict(event.text.split(": ", 1) for event in self.environment[:-1])

    @property
    def after_environment(self) -> tuple[TraceEvent, ...]:
        """Every event after the environment block (notes included)."""
        if not self.environment:
            return self.events
        last = self.environment[-1]
        index = next(index for index, event in enumerate(self.events) if event is last)
        return self.events[index + 1 :]

    def lines(self, kind: Kind) -> tuple[str, ...]:
        return tuple(event.text for event in self.events if event.kind is kind and not event.elided)

    def asterisk_bytes(self, *, include_environment: bool = True) -> bytes:
        events = self.events if include_environment else self.after_environment
        return b"".join(event.data for event in events if event.kind is Kind.ASTERISK)

    def notes(self) -> tuple[str, ...]:
        return self.lines(Kind.NOTE)

    def log_messages(self, source: str) -> tuple[str, ...]:
        """Asterisk log messages of one source file (``res_agi.c``, ``app_verbose.c``) for this call."""
        messages = []
        for note in self.notes():
            match = _LOG_MESSAGE.fullmatch(note)
            if match and match["source"] == source:
                messages.append(match["message"])
        return tuple(messages)

    def gktrace(self) -> tuple[str, ...]:
        return tuple(m for m in self.log_messages("app_verbose.c") if _GKTRACE.match(m))

    def agi_status(self) -> str:
        statuses = {match[1] for line in self.gktrace() if (match := _AGISTATUS.search(line))}
        if len(statuses) != 1:
            raise ValueError(f"{self.title}: no single AGISTATUS in the log")
        return statuses.pop()

    def dialplan_continued(self) -> bool:
        """The dialplan's next priority logged ``GKTRACE <context> exten=...`` (not only ``h-exten``)."""
        return any(match["where"] == "exten=" for line in self.gktrace() if (match := _GKTRACE.match(line)))

    def gatekeeper_result(self) -> str:
        values = {match[1] for line in self.gktrace() if (match := _GATEKEEPER_RESULT.search(line))}
        if len(values) != 1:
            raise ValueError(f"{self.title}: no single GATEKEEPER_RESULT in the log")
        return values.pop()

    def hangupcause(self) -> int:
        causes = [int(match[1]) for line in self.gktrace() if (match := _HANGUPCAUSE.search(line))]
        if len(causes) != 1:
            raise ValueError(f"{self.title}: no single HANGUPCAUSE in the log")
        return causes[0]

    def sim_channel(self, **overrides: Any) -> SimChannel:
        """The :class:`SimChannel` whose environment block is this conversation's, plus overrides."""
        env = self.environment_values()
        args = tuple(env[f"agi_arg_{n}"] for n in range(1, len(env) + 1) if f"agi_arg_{n}" in env)
        values: dict[str, Any] = {
            "url": env["agi_request"],
            "args": args,
            "channel": env["agi_channel"],
            "language": env["agi_language"],
            "tech": env["agi_type"],
            "uniqueid": env["agi_uniqueid"],
            "version": env["agi_version"],
            "callerid_num": _unknown_is_none(env["agi_callerid"]),
            "callerid_name": _unknown_is_none(env["agi_calleridname"]),
            "callingpres": int(env["agi_callingpres"]),
            "callingani2": int(env["agi_callingani2"]),
            "callington": int(env["agi_callington"]),
            "callingtns": int(env["agi_callingtns"]),
            "dnid": _unknown_is_none(env["agi_dnid"]),
            "rdnis": _unknown_is_none(env["agi_rdnis"]),
            "context": env["agi_context"],
            "extension": env["agi_extension"],
            "priority": int(env["agi_priority"]),
            "accountcode": env["agi_accountcode"],
            "threadid": int(env["agi_threadid"]),
        }
        values.update(overrides)
        return SimChannel(**values)


def _unknown_is_none(value: str) -> str | None:
    return None if value == "unknown" else value


def traces_dir() -> Path:
    if not TRACES_DIR.is_dir():
        raise FileNotFoundError(
            f"Asterisk transcripts not found at {TRACES_DIR}: this copy of shared/asterisk-traces/ is the ground "
            "truth these tests replay; they cannot run without it"
        )
    return TRACES_DIR


def parse_trace(text: str, file: str = "<text>") -> tuple[Conversation, ...]:
    conversations: list[Conversation] = []
    title: str | None = None
    events: list[TraceEvent] = []
    for line in text.split("\n"):
        if line.startswith("## "):
            if title is not None:
                conversations.append(Conversation(file, title, tuple(events)))
            title, events = line[3:].strip(), []
        elif title is None or line.startswith("# ") or line == "#" or line.startswith("===") or not line:
            continue
        elif line.startswith((">>>", "<<<")):
            kind = Kind(line[:3])
            content = line[4:] if line[3:4] == " " else line[3:]
            events.append(TraceEvent(kind, content, kind is Kind.ASTERISK and content.startswith("...")))
        elif line.startswith("###"):
            events.append(TraceEvent(Kind.NOTE, line[3:].strip()))
        else:
            events.append(TraceEvent(Kind.NOTE, line.strip()))
    if title is not None:
        conversations.append(Conversation(file, title, tuple(events)))
    return tuple(conversations)


def load_trace(name: str) -> tuple[Conversation, ...]:
    path = traces_dir() / name
    return parse_trace(path.read_text(encoding="utf-8"), name)


def conversation(name: str, title_prefix: str) -> Conversation:
    matches = [conv for conv in load_trace(name) if conv.title.startswith(title_prefix)]
    if len(matches) != 1:
        raise LookupError(f"{name}: {len(matches)} conversations titled {title_prefix!r}")
    return matches[0]
