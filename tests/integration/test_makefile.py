"""`make run` installs what the demo needs (runtime and `fast` extra); `make test` adds the dev extra on top.

Checked with `make --dry-run` on a copy of the Makefile and pyproject.toml beside an existing venv, so that
nothing is installed: which pip commands each target runs, and that up-to-date installs are not redone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ".venv/bin/pip install --quiet -e '.[fast]'"
DEV = ".venv/bin/pip install --quiet -e '.[dev]'"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").touch()
    return tmp_path


def installs(checkout: Path, target: str) -> list[str]:
    """The pip commands `make TARGET` would run."""
    result = subprocess.run(
        ["make", "--dry-run", "--no-print-directory", target], cwd=checkout, capture_output=True, text=True, check=True
    )
    return [line for line in result.stdout.splitlines() if "pip install" in line]


def age(path: Path, seconds_ago: float) -> None:
    path.touch()
    stamp = time.time() - seconds_ago
    os.utime(path, (stamp, stamp))


def test_make_run_installs_the_runtime_and_the_fast_extra_only(checkout: Path) -> None:
    assert installs(checkout, "run") == [RUNTIME]


def test_make_test_adds_the_dev_extra_on_top(checkout: Path) -> None:
    assert installs(checkout, "test") == [RUNTIME, DEV]
    assert installs(checkout, "lint") == [RUNTIME, DEV]


def test_installs_are_redone_only_when_pyproject_changes(checkout: Path) -> None:
    age(checkout / "pyproject.toml", 30)
    age(checkout / ".venv" / ".run-installed", 20)
    assert installs(checkout, "run") == []
    assert installs(checkout, "test") == [DEV]  # the runtime install is kept
    age(checkout / ".venv" / ".installed", 10)
    assert installs(checkout, "test") == []
    assert installs(checkout, "run") == []
    age(checkout / "pyproject.toml", 0)
    assert installs(checkout, "run") == [RUNTIME]
    assert installs(checkout, "test") == [RUNTIME, DEV]
