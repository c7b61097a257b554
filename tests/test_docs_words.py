"""README.md and docs/ speak of the project, not of how it was made, and name only keys that exist: no
words from our own process (a spec's sections, issues, dated work sessions, a machine's paths) and no
configuration key that composes nowhere (docs/tasks.md once named `task.test_delays`)."""
from __future__ import annotations

import re

import pytest
import yaml

from conftest import ROOT

# the user-facing pages: README and docs/ (docs/study holds the study's records and is regenerated with them)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "examples").glob("*"))]
PROCESS_WORDS = [r"SPEC §", r"SPEC\.md", r"[Tt]he issue's", r"\bissue #?\d+", r"December 2026",
                 r"before the .{0,20} work\b", r"other sessions", r"this session", r"/work/", r"/root/",
                 r"/home/\w+", r"/tmp/\w+"]
GROUPS = ("task", "model", "rule", "optimizer", "trainer", "logger", "curvature", "alignment", "scheduler",
          "callbacks")
KEY = re.compile(r"`((?:%s|study)\.[a-z_][\w.]*)" % "|".join(GROUPS))
EXAMPLE_KEYS = {"rule.switch", "rule.scale"}  # docs/add-a-rule.md's example rule's own parameters


def known_keys() -> set[str]:
    """Every key docs/configuration.md lists (all groups and options, generated from conf/), and study.py's."""
    conf = (ROOT / "docs" / "configuration.md").read_text()
    keys = set(re.findall(r"^\| `([a-z_][\w.]*)`", conf, re.M))
    study = yaml.safe_load((ROOT / "conf" / "study.yaml").read_text())
    return keys | {f"study.{k}" for k in study}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_words_about_our_own_process(page):
    text = page.read_text()
    found = [m.group(0) for w in PROCESS_WORDS for m in re.finditer(w, text)]
    assert not found, f"{page.name}: {found}"


@pytest.mark.parametrize("page", [p for p in PAGES if p.suffix == ".md" and p.name != "configuration.md"],
                         ids=lambda p: p.name)
def test_every_named_key_exists(page):
    known = known_keys()
    stale = sorted({k for k in (m.group(1).rstrip(".") for m in KEY.finditer(page.read_text()))
                    if k not in ("study.py", "study.log") and k not in EXAMPLE_KEYS and k not in known
                    and not any(x.startswith(k + ".") for x in known)})
    assert not stale, f"{page.name}: {stale}"


def test_the_check_finds_what_it_looks_for():
    assert re.search(PROCESS_WORDS[0], "as SPEC §1 says") and re.search(PROCESS_WORDS[4], "the December 2026 work")
    assert "task.test_delays" not in known_keys() and "task.shift_delays" in known_keys()


def test_readme_is_a_short_door():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
