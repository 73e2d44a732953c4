"""The README's configuration snippets, for tests that hold the README to what gatekeeper accepts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDER = "…"  # the README writes secrets as "…"


def toml_blocks() -> list[str]:
    """Every ```toml block of the README, in order."""
    return re.findall(r"^```toml\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)


def table_boundaries(text: str) -> list[int]:
    """The offsets where a pasted table fits: the start, before every table header line, and the end."""
    return [0, *(m.start() for m in re.finditer(r"^\[", text, flags=re.MULTILINE)), len(text)]


def fill_placeholders(value: Any, key: str = "") -> Any:
    """The parsed README with each "…" secret replaced by a value of the right form."""
    if isinstance(value, dict):
        return {k: fill_placeholders(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_placeholders(v, key) for v in value]
    if value == PLACEHOLDER:
        return "ab" * 32 if key == "sha256" else "readme-placeholder-secret"
    return value
