"""The shipped documents: the rule book in docs/, and a README that is true about what the repository holds."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULE_BOOK = ROOT / "docs" / "POLICY.md"
SHARED_RULE_BOOK = ROOT.parent / "shared" / "POLICY.md"  # the design documents beside the checkout
README = (ROOT / "README.md").read_text(encoding="utf-8")
REPOSITORY_DIRS = ("asterisk-config", "bench", "deploy", "docs", "gatekeeper", "scripts", "tests")


def section(title: str) -> str:
    """The README's `## title` section (up to the next `## `)."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_the_rule_book_ships_in_docs() -> None:
    text = RULE_BOOK.read_text(encoding="utf-8")
    assert text.startswith("# Policy: when may an outbound call go through?\n")
    assert "\n## 2." in text  # the rules, in order, that the README's table follows


@pytest.mark.skipif(not SHARED_RULE_BOOK.is_file(), reason="no shared/POLICY.md beside this checkout")
def test_the_shipped_rule_book_is_a_verbatim_copy_of_the_shared_one() -> None:
    assert RULE_BOOK.read_bytes() == SHARED_RULE_BOOK.read_bytes(), "copy ../shared/POLICY.md to docs/POLICY.md"


def test_the_readme_links_to_files_in_the_repository() -> None:
    links = [target for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README) if "://" not in target]
    assert "docs/POLICY.md" in links
    for target in links:
        path = (ROOT / target).resolve()
        assert path.is_relative_to(ROOT), f"{target} is outside the repository"
        assert path.exists(), f"{target} does not exist"


def _distribution(requirement: str) -> tuple[str, list[str]]:
    match = re.match(r"([A-Za-z0-9_.-]+)(?:\[([^]]*)\])?", requirement)
    assert match is not None, requirement
    return match[1].lower(), [extra.strip() for extra in (match[2] or "").split(",") if extra.strip()]


def test_the_readme_lists_every_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    install = section("Install").lower()
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["fast"]]:
        name, extras = _distribution(requirement)
        for word in (name, *extras):
            assert f"`{word}`" in install, f"{requirement}: `{word}` is not in the README's Install section"


def test_the_readme_names_every_debian_package_make_installs() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    lists = dict(re.findall(r"^(RUN_DEPS|TEST_DEPS) := (.*)$", makefile, re.MULTILINE))
    assert set(lists) == {"RUN_DEPS", "TEST_DEPS"}
    two_commands = section("Two commands")
    run_part, _, test_part = two_commands.partition("`make test` needs")
    for package in lists["RUN_DEPS"].split():
        assert f"`{package}`" in run_part, f"make run installs {package}; the README does not say so"
    for package in lists["TEST_DEPS"].split():
        assert f"`{package}`" in test_part, f"make test installs {package}; the README does not say so"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_the_readme_says_when_a_path_it_names_is_not_committed() -> None:
    """A path the README names inside the repository is committed, or its paragraph says it is not."""
    for paragraph in README.split("\n\n"):
        for token in re.findall(r"`([^`\s]+)`", paragraph):
            if not token.startswith(tuple(f"{d}/" for d in REPOSITORY_DIRS)):
                continue
            path = token.replace("*", "x")
            ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", path], check=False)
            if ignored.returncode == 0:
                assert "not committed" in paragraph, f"the README names {token}, which git ignores"
