"""The decision log: every decision kept as evidence, with no loss.

The gate's recorder (`outbox.Outbox`) appends each decision record to a Redis stream, or to a local spool
when Redis is away; the `shipper.Shipper` component moves the stream into SQL (`store.LogStore`: SQLite or
PostgreSQL), where the records of each instance form a hash chain (`record`); `query.LogReader` answers the
API's and the UI's questions. Import the modules themselves: this package imports nothing, so a process
that only records (gatekeeper-agi) does not load the SQL drivers.
"""
