"""The committed study reports are what report.py computes from the committed records: a subset of the
second edition's dms records (tests/data/study_subset: bptt, eprop, bptt_matched, bptt_noise, eprop_lr_rho
and uoro, seeds 0-2, diverged runs included) in the fast suite, every committed report (figures drawn) under
-m slow."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

SUBSET = ROOT / "tests" / "data" / "study_subset"
STUDY = ROOT / "docs" / "study"


def regenerate(runs: Path, out: Path, *flags: str) -> str:
    """report.md as `python report.py <runs> --out <out>` writes it, run from the repository root."""
    result = subprocess.run([sys.executable, "report.py", str(runs.relative_to(ROOT)), "--out", str(out), *flags],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    return (out / "report.md").read_text()


def test_committed_subset_report_is_regenerated_exactly(tmp_path):
    assert (SUBSET / "runs").is_dir(), "tests/data/study_subset/runs is missing"
    assert regenerate(SUBSET / "runs", tmp_path, "--no-figures") == (SUBSET / "report.md").read_text()


REPORTS = [p.parent for p in sorted(STUDY.rglob("runs")) if (p.parent / "report.md").is_file()]


@pytest.mark.slow
@pytest.mark.parametrize("folder", REPORTS, ids=[str(p.relative_to(STUDY)) for p in REPORTS])
def test_committed_study_report_is_regenerated_exactly(tmp_path, folder):
    """Every committed report beside its records: the third edition's, the second's (docs/study/v2), the
    first's (docs/study/v1) and the pilots'."""
    assert regenerate(folder / "runs", tmp_path) == (folder / "report.md").read_text()


def test_every_committed_record_names_a_commit_on_main():
    """Each summary.json of the study carries the commit it ran on, and that commit is in this history."""
    import json
    records = sorted(STUDY.rglob("runs/*/summary.json"))
    assert records, "docs/study has no run records"
    commits = {json.loads(p.read_text())["versions"]["rulescape"] for p in records}
    assert None not in commits
    for commit in commits:
        ok = subprocess.run(["git", "merge-base", "--is-ancestor", commit, "HEAD"], cwd=ROOT,
                            capture_output=True).returncode == 0
        if not ok and not (ROOT / ".git").exists():
            pytest.skip("not a git checkout")
        assert ok, f"{commit} is not an ancestor of HEAD"


def test_readme_sentences_match_their_report_rows():
    """Each plain-words sentence in docs/study/README.md in the generated form (analysis.prose) is one of the
    sentences its task's committed report.md generated from its rows (which regenerate exactly, -m slow), and
    each generated sentence agrees with the verdict of its own row there."""
    from analysis import prose
    readme = (STUDY / "README.md").read_text(encoding="utf-8")
    found = list(prose.SENTENCE.finditer(readme))
    assert found, "docs/study/README.md has no generated sentence to check"
    for m in found:
        report = (STUDY / m.group("task") / "report.md").read_text(encoding="utf-8")
        line = readme[m.start():readme.index("\n", m.start())]
        assert f"- {line}" in report.splitlines(), line
        row = next(r for r in report.splitlines() if r.startswith(f"| {m.group('claim')} | "))
        assert row.rstrip(" |").split(" | ")[-1].split(" (")[0] == m.group("verdict").strip(), (line, row)


def test_study_readme_generated_blocks_are_current(tmp_path, monkeypatch):
    """docs/study/README.md's tables and claim sentences are what tools/study_readme.py writes from the
    committed reports and sweep logs; a changed number in one of them is caught."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("study_readme", ROOT / "tools" / "study_readme.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert STUDY / "README.md" in tool.PAGES and STUDY / "v2" / "README.md" in tool.PAGES
    for page in tool.PAGES:
        text = page.read_text(encoding="utf-8")
        blocks = list(tool.BLOCK.finditer(text))
        assert {m.group("what").split()[0] for m in blocks} >= {"claims", "arms", "runs"}, page
        assert tool.render(text) == text, f"{page} is stale: run python tools/study_readme.py"
    text = (STUDY / "README.md").read_text(encoding="utf-8")
    blocks = list(tool.BLOCK.finditer(text))
    body = blocks[0].group("body")
    digit = next(i for i, ch in enumerate(body) if ch.isdigit())
    tampered = text.replace(body, body[:digit] + str((int(body[digit]) + 1) % 10) + body[digit + 1:], 1)
    assert tool.render(tampered) != tampered


def last_primary_change() -> str:
    """The newest commit that changed the plan's primary claims (later commits changed gates and exploratory
    claims only: the reports say "post hoc" and that the primary claims are unchanged)."""
    from analysis.plan import primary_claims
    log = subprocess.run(["git", "log", "--format=%H", "--", "docs/study/plan.yaml"], cwd=ROOT,
                         capture_output=True, text=True).stdout.split()
    show = lambda c: subprocess.run(["git", "show", f"{c}:docs/study/plan.yaml"], cwd=ROOT,  # noqa: E731
                                    capture_output=True, text=True).stdout
    for newer, older in zip(log, log[1:] + [None]):
        if older is None or primary_claims(show(newer)) != primary_claims(show(older)):
            return newer
    return log[-1]


def test_every_third_edition_record_ran_on_code_that_contains_the_plan():
    """Pre-registration: each record of the third edition (docs/study/<folder>/runs; not v1, v2 or the pilots)
    names a commit that contains the last commit that changed docs/study/plan.yaml at all, and its arm is one
    the plan names (plan.arms), so no arm is cited that the plan does not name."""
    from analysis.plan import load_plan
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    plan = subprocess.run(["git", "log", "-1", "--format=%H", "--", "docs/study/plan.yaml"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
    assert plan and last_primary_change()
    summaries = [s for runs in third_edition_records().values() for s in runs.values()]
    assert summaries, "the third edition has no records"
    for commit in {s["versions"]["rulescape"] for s in summaries}:
        ok = subprocess.run(["git", "merge-base", "--is-ancestor", plan, commit], cwd=ROOT).returncode == 0
        assert ok, f"records from {commit} ran before the plan's commit {plan[:7]}"
    named = load_plan()
    unnamed = {arm for s in summaries for arm in [s["config"].get("study_arm") or s["rule"]]
               if not named.names_arm(arm)}
    assert not unnamed, f"records of arms plan.yaml does not name: {sorted(unnamed)}"


def test_plain_words_hold_no_number_outside_generated_blocks():
    """docs/study/README.md's "In plain words": every effect, CI and p is inside a generated block (the
    rows' own words); the text around them states no measured number of its own."""
    import importlib.util
    import re
    spec = importlib.util.spec_from_file_location("study_readme", ROOT / "tools" / "study_readme.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    text = (STUDY / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## In plain words"):text.index("\n## ", text.index("## In plain words") + 1)]
    typed = tool.BLOCK.sub("", section)
    assert "<!-- generated: say" in section or "<!-- generated: claims" in section
    assert not re.findall(r"\d\.\d|\d+ of \d+|\d+/\d+", typed), re.findall(r".{30}(?:\d\.\d|\d+/\d+).{10}", typed)


def third_edition_records() -> dict[str, dict[str, dict]]:
    """{folder: {run directory name: summary}} of the third edition (docs/study/<folder>/runs)."""
    import json
    out: dict[str, dict[str, dict]] = {}
    for p in sorted(STUDY.glob("*/runs/*/summary.json")):
        out.setdefault(p.parents[2].name, {})[p.parent.name] = json.loads(p.read_text())
    return out


def test_every_rule_run_measured_lambda_at_its_bptt_pair_s_stop():
    """λ1 at exactly equal steps: every third-edition run that measures λ1 at its seed's BPTT stop
    (curvature.at_steps_from) and trained at least that far holds λ1 at that very step."""
    checked = 0
    for folder, runs in third_edition_records().items():
        for name, s in runs.items():
            if not (s["config"].get("curvature") or {}).get("at_steps_from"):
                continue
            pair = runs.get(f"bptt_{s['task']}_seed{s['seed']}")
            lam = (s.get("history") or {}).get("lambda_max") or []
            if pair is None or pair["status"] != "ok" or s["steps"] < pair["steps"] or not lam:
                continue
            assert pair["steps"] in {int(step) for step, _ in lam}, f"{folder}/{name} lacks λ1 at step {pair['steps']}"
            checked += 1
    assert checked, "no third-edition run measured λ1 at its BPTT pair's stop"


def test_every_equal_length_control_ran_exactly_its_rule_s_step_count():
    checked = 0
    for folder, runs in third_edition_records().items():
        for name, s in runs.items():
            arm = s["config"].get("study_arm") or ""
            if arm not in ("bptt_matched_len", "bptt_matched_mean_len") or s["status"] != "ok":
                continue
            rule = runs.get(f"eprop_{s['task']}_seed{s['seed']}")
            assert rule is not None, f"{folder}/{name} has no e-prop run beside it"
            assert s["steps"] == rule["steps"], f"{folder}/{name}: {s['steps']} steps, e-prop {rule['steps']}"
            checked += 1
    assert checked, "no equal-length control in the third edition's records"
