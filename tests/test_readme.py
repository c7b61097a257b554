"""README's first steps run as written: every command line of the "Set up and run" block and of the
"First five minutes" block, from a fresh copy of the repository (no outputs/, no multirun/), with tiny
budgets. The venv's interpreter (this test's) stands in for `python` after `source .venv/bin/activate`;
installing is not repeated here. Every other `python …` command in a code block of README.md or docs/*.md
(without a <placeholder>) names a script that exists and, for train.py, passes its checks."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, compose_config
from rulescape.config.schema import check_schema
from rulescape.config.validate import validate
from rulescape.run.cli import check_group_overrides, check_keys, first_of_each_sweep

# appended to every train.py command: the same code paths at a few steps
TINY = ["trainer.max_steps=6", "eval_every=3", "checkpoint_every=0", "curvature.every_n_steps=3",
        "alignment.every_n_steps=3"]
SETUP = "python3.11 -m venv .venv"  # the install line (not repeated here); the run line is a command


def first_block(readme: str, heading: str) -> list[str]:
    """The command lines of the first indented code block under `## heading` (comments stripped)."""
    section = readme.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines, started = [], False
    for line in section.splitlines():
        if line.startswith("    ") and line.strip():
            started = True
            lines.append(re.sub(r"\s+#\s.*$", "", line.strip()))
        elif started and line.strip():
            break
    return lines


def fresh_copy(dest: Path) -> Path:
    """The tracked files as they are now: what a clone of this tree would hold."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def to_argv(command: str) -> list[str]:
    words = shlex.split(command)
    for prefix in ("python", ".venv/bin/python"):
        if words[0] == prefix:
            words = [sys.executable, *words[1:]]
            break
    else:
        raise AssertionError(f"README first-steps command not runnable as written after set-up: {command}")
    if words[1] == "train.py":
        words += TINY
    return words


def readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    setup = first_block(readme, "Set up and run")
    assert len(setup) == 2 and setup[0].startswith(SETUP) and "train.py" in setup[1], setup  # install, run
    commands = setup + first_block(readme, "First five minutes")
    assert any(" -m " in c and "train.py" in c for c in commands) and any("report.py" in c for c in commands)
    return commands


def block_commands(text: str) -> list[str]:
    """Every `python …` line of the indented code blocks in a markdown text (continuations joined, comments
    stripped), except those with a <placeholder> to fill in."""
    commands, pending = [], ""
    for line in text.splitlines():
        if not line.startswith("    "):
            pending = ""
            continue
        line = pending + re.sub(r"\s+#\s.*$", "", line.strip())
        pending = line[:-1] + " " if line.endswith("\\") else ""
        if not pending and line.startswith("python ") and "<" not in line:
            commands.append(line)
    return commands


def doc_commands() -> list[str]:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [c for path in docs for c in block_commands(path.read_text())]


def check_command(command: str) -> None:
    """The command's script exists; a train.py command passes train.py's checks and composes into a valid
    config (a sweep: each override's first value)."""
    argv = to_argv(command)
    script, args = argv[1], argv[2:]
    if script == "-m":  # python -m pytest
        return
    assert (ROOT / script).is_file(), command
    if script != "train.py":
        return
    assert not (check_group_overrides(args) or check_keys(args)), command
    overrides = [a for a in args if a != "-m" and not a.startswith("hydra")]
    if any(a in ("trainer=gpu", "trainer=ddp") for a in args) and not torch.cuda.is_available():
        overrides.append("trainer.accelerator=cpu")  # the same config on this machine's CPU
    validate(check_schema(compose_config(first_of_each_sweep(overrides) if "-m" in args else overrides)))


def test_readme_first_steps_are_runnable_commands_with_valid_configs():
    """The cheap half (fast suite): each command is `python <script> …` and each train.py command line
    passes train.py's checks and composes into a valid config (a sweep: each job's first value)."""
    for command in readme_commands():
        if not command.startswith(SETUP):
            check_command(command)


def test_every_command_in_readme_and_docs_is_runnable_as_written():
    commands = doc_commands()
    assert len(commands) >= 10, commands  # the blocks were found
    for command in commands:
        check_command(command)


@pytest.mark.slow
def test_readme_first_steps_run_as_written(tmp_path):
    """Every first-steps command, run from a fresh copy (about 1 min of CPU: 7 interpreters start)."""
    commands = readme_commands()
    repo = fresh_copy(tmp_path / "clone")
    assert (repo / "requirements.txt").is_file()
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RULESCAPE_"))}
    env.update(HOME=str(home), WANDB_MODE="disabled")  # the default logger, without the wandb service start-up
    for command in commands:
        if command.startswith(SETUP):
            continue
        proc = subprocess.run(to_argv(command), cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{command}\n{out}"
        lines = [line for line in re.split(r"[\r\n]+", out) if line.strip()]
        if "train.py" in command and " -m " not in command:
            assert lines[-2].startswith("[ok] ") and lines[-1].strip().startswith("record: "), (command, lines[-3:])
        elif " -m " in command:
            jobs = [line for line in lines if line.startswith("[ok] ")]
            assert len(jobs) == 4 and all(" record=" in line for line in jobs), out
            assert "4 jobs: 4 ok" in out and "python report.py" in out, out
        if "report.py" in command:
            out_dir = shlex.split(command)[shlex.split(command).index("--out") + 1]
            assert (repo / out_dir / "report.md").is_file()


# ----- README's headline is never stronger than the study's rows -------------------------------------------
NUM = r"(-?\d+\.?\d*(?:e-?\d+)?)"
CLAUSE = re.compile(rf"(?:Δgap|ratio|Δ)\s*{NUM}(?: MSE)?(?:\s*\[{NUM}, {NUM}\])?(?:,\s*p Holm = {NUM})?")


def significant(text: str) -> int:
    mantissa = text.lower().split("e")[0].replace("-", "").replace(".", "").lstrip("0")
    return max(len(mantissa), 1)


def rounds_to(value: float, text: str) -> bool:
    return float(f"{value:.{significant(text)}g}") == float(text)


def test_readme_headline_numbers_are_the_study_reports_numbers():
    """Each statistic in README's headline (effect, CI bounds, Holm p) is one row of a docs/study report,
    rounded: all of its numbers on one line of a report. A stale or invented figure fails here."""
    readme = (ROOT / "README.md").read_text()
    headline = readme[readme.index("**Headline**"):readme.index("## Set up")]
    clauses = [[t for t in m.groups() if t] for m in CLAUSE.finditer(headline)]
    assert len(clauses) >= 4 and sum(map(len, clauses)) >= 12, clauses
    lines = [[float(t) for t in re.findall(NUM, line)]
             for report in sorted((ROOT / "docs" / "study").glob("*/report.md"))
             for line in report.read_text().splitlines()]
    missing = [c for c in clauses if not any(all(any(rounds_to(v, t) for v in line) for t in c) for line in lines)]
    assert not missing, f"README headline statistics with no matching row in docs/study/*/report.md: {missing}"
