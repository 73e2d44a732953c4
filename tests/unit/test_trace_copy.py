"""The tests replay a copy of the Asterisk recordings; it must stay identical to the shared original."""

from __future__ import annotations

import pytest

from tests.asterisk_sim.traces import SHARED_TRACES_DIR, TRACES_DIR


def test_the_copy_has_every_recording() -> None:
    names = {p.name for p in TRACES_DIR.iterdir()}
    assert {"README.md", "fastagi-session.txt", "fastagi-hangup.txt", "fastagi-close.txt", "fastagi-pipelining.txt",
            "ari-events.jsonl", "ari-rest.txt", "ari-timeline.txt", "ami-originate.txt"} <= names  # fmt: skip


@pytest.mark.skipif(not SHARED_TRACES_DIR.is_dir(), reason="no shared/ next to this checkout (a bare clone)")
def test_the_copy_matches_the_shared_original() -> None:
    for original in sorted(SHARED_TRACES_DIR.iterdir()):
        assert (TRACES_DIR / original.name).read_bytes() == original.read_bytes(), original.name
