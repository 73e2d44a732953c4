"""The decision log: every decision kept as evidence, with no loss.

The gate's recorder (`Outbox`) appends each decision to a Redis stream, or to a local spool when Redis is
away; the `Shipper` component moves the stream into SQL (`LogStore`: SQLite or PostgreSQL), where the
records of each instance form a hash chain; `LogReader` answers the API's and the UI's questions.
"""

from gatekeeper.log.outbox import Outbox, OutboxKeys, Spool, default_spool_dir, instance_name
from gatekeeper.log.query import AuditEntry, CursorError, DecisionFilter, LogReader, Page, Summary
from gatekeeper.log.record import LogRecord, StoredRecord
from gatekeeper.log.shipper import Shipper
from gatekeeper.log.store import ChainProblem, ChainReport, LogStore, ProblemKind, PurgeReport

__all__ = [
    "AuditEntry",
    "ChainProblem",
    "ChainReport",
    "CursorError",
    "DecisionFilter",
    "LogReader",
    "LogRecord",
    "LogStore",
    "Outbox",
    "OutboxKeys",
    "Page",
    "ProblemKind",
    "PurgeReport",
    "Shipper",
    "Spool",
    "StoredRecord",
    "Summary",
    "default_spool_dir",
    "instance_name",
]
