"""gatekeeper's public contract: the names and values the PBX, dashboards and compliance tools rely on.

Everything here is interface (DESIGN.md, "Contracts"); the adapters, the metrics, the decision log and the
docs take these names from this one module, and a test checks that the README lists every value. Change a
value only with a release note: dialplans, alert rules and log queries match on it.

- Channel variables: `GATEKEEPER_RESULT` (`ALLOW` | `BLOCK`), `GATEKEEPER_REASON` (a reason code) and
  `GATEKEEPER_DECISION_ID` (the decision's id in the log) are set on every decided call;
  `GATEKEEPER_CAMPAIGN` is read when the request does not name the campaign.
- Reason codes and verdicts: `Reason` and `Verdict` (POLICY.md §2), the same in the channel variables, the
  CLI, the API, the log and the metrics.
- Sources (`source` of a decision, `source` label of the latency histogram), FastAGI session outcomes
  (`outcome` label) and index failure kinds (`kind` label, `index_error` of a decision record).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from gatekeeper.core.model import Reason, Verdict

GATEKEEPER_RESULT: Final = "GATEKEEPER_RESULT"
GATEKEEPER_REASON: Final = "GATEKEEPER_REASON"
GATEKEEPER_DECISION_ID: Final = "GATEKEEPER_DECISION_ID"
GATEKEEPER_CAMPAIGN: Final = "GATEKEEPER_CAMPAIGN"


class ChannelResult(StrEnum):
    """The values of GATEKEEPER_RESULT: the dialplan dials only on ALLOW."""

    ALLOW = "ALLOW"
    BLOCK = "BLOCK"

    @classmethod
    def of(cls, verdict: Verdict) -> ChannelResult:
        return cls.ALLOW if verdict is Verdict.ALLOW else cls.BLOCK


class Source(StrEnum):
    """Which adapter asked for a decision."""

    FASTAGI = "fastagi"
    ARI = "ari"
    AGI = "agi"
    API = "api"
    CLI = "cli"


class SessionOutcome(StrEnum):
    """How a FastAGI session ended (the `outcome` label of gatekeeper_fastagi_sessions_total)."""

    DECIDED = "decided"
    DENIED = "denied"  # source address not on the allow-list
    OVERLOAD = "overload"  # too many sessions at once, or no decision slot in time
    PROTOCOL_ERROR = "protocol-error"
    TIMEOUT = "timeout"  # environment or reply not received in time
    CLOSED = "closed"  # Asterisk closed the connection before the verdict was set
    ERROR = "error"  # a bug, or a decision whose record could not be kept: the dialplan blocks the call


class IndexFailure(StrEnum):
    """Why the consent index could not answer (the decision then fails closed: `index-unavailable`)."""

    TIMEOUT = "timeout"  # no answer within the lookup budget
    CONNECTION = "connection"  # Redis unreachable, connection lost or refused, still loading
    RESPONSE = "response"  # Redis answered with an error (script missing, wrong type, no permission, …)
    STALE = "stale"  # the tenant's generation kept changing during the lookup (an import switching)
    OTHER = "other"  # anything else (a bug: logged with its traceback)


__all__ = [
    "GATEKEEPER_CAMPAIGN",
    "GATEKEEPER_DECISION_ID",
    "GATEKEEPER_REASON",
    "GATEKEEPER_RESULT",
    "ChannelResult",
    "IndexFailure",
    "Reason",
    "SessionOutcome",
    "Source",
    "Verdict",
]
