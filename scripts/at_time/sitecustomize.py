"""Loaded by every Python process that `scripts/at-time` starts (it puts this directory on PYTHONPATH).

It moves the process's wall clock by GATEKEEPER_AT_TIME_OFFSET seconds with time-machine: `time.time()`,
`datetime.now()` and friends say the moved time and keep running; the monotonic clock (timeouts, asyncio)
is left alone. Every process applies the same offset to the real clock, so they agree with each other;
services that are not Python (redis-server, PostgreSQL, Chromium) keep the real time.
"""

import datetime
import os

import time_machine

_offset = datetime.timedelta(seconds=float(os.environ["GATEKEEPER_AT_TIME_OFFSET"]))
time_machine.travel(datetime.datetime.now(datetime.UTC) + _offset, tick=True).start()
