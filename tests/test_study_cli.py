"""`python study.py rule=<name>`: conformance catches broken rules (each check can fail, and says which),
bad input is one line and exit 2, baseline reuse compares configs, the claims summary reads report.md, and
(slow) a rule the registry has never seen goes through conformance, a smoke study and the report in a copy
of the repository."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT

PY = sys.executable

# A rule file as a user writes it: {name} and {body} filled in (body: the surrogate method's lines).
RULE_FILE = '''"""{doc}"""
import torch

from modules.rules import register
from modules.rules.base import Estimate, Rule
from modules.rules.rflo import FeedbackReadout


@register
class Newcomer(Rule):
    name = "{name}"
{attrs}
    def surrogate(self, net, batch, objective, noise=None):
{body}
'''
GOOD = ("e-prop with half its learning signal: B = W_out^T / 2", "", """\
        r = net.rates(batch[0], truncation="recurrent", noise=noise)
        y_hat = FeedbackReadout.apply(r, net.W_out, net.b_out, 0.5 * net.W_out.detach().T)
        loss = self.objective_of(net, y_hat, batch, objective)
        return Estimate(loss, loss, y_hat)""")
BROKEN = {  # name -> (doc, class attributes, surrogate body, the check that must fail)
    "nan_rule": ("an estimate that is NaN", "", """\
        y_hat, _ = net(batch[0], noise=noise)
        loss = self.objective_of(net, y_hat, batch, objective)
        return Estimate(loss + float("nan") * net.W_h.sum(), loss, y_hat)""", 2),
    "no_wh_rule": ("an estimate that does not depend on W_h (the recurrence is cut off entirely)", "", """\
        r = net.rates(batch[0], noise=noise)
        y_hat = net.readout(r.detach())
        loss = self.objective_of(net, y_hat, batch, objective)
        return Estimate(loss, loss, y_hat)""", 3),
    "jitter_rule": ("an estimate that changes between two identical calls (unkeyed global RNG)", "", """\
        y_hat, _ = net(batch[0], noise=noise)
        loss = self.objective_of(net, y_hat, batch, objective)
        wobble = 0.1 * torch.randn(net.W_h.shape, dtype=net.W_h.dtype)
        return Estimate(loss + (wobble * net.W_h).sum(), loss, y_hat)""", 4),
    "forgetful_rule": ("state that a checkpoint does not carry (a plain attribute counting calls)",
                       "    calls = 0\n", """\
        self.calls += 1
        y_hat, _ = net(batch[0], noise=noise)
        loss = self.objective_of(net, y_hat, batch, objective)
        return Estimate(loss * (1 + 0.1 * self.calls), loss, y_hat)""", 5),
    "readout_rule": ("a readout that does not get its exact gradient", "", """\
        r = net.rates(batch[0], truncation="recurrent", noise=noise)
        y_hat = net.readout(r)
        loss = self.objective_of(net, y_hat, batch, objective)
        return Estimate(2 * loss, loss, y_hat)""", 7),
    "claims_exact_rule": ("e-prop that declares itself exact", "    exact = True\n", """\
        y_hat, _ = net(batch[0], truncation="recurrent", noise=noise)
        loss = self.objective_of(net, y_hat, batch, objective)
        return Estimate(loss, loss, y_hat)""", 9),
    "biased_noise_rule": ("BPTT at 0.8 of its length plus keyed noise, declared unbiased (it is not)",
                          "    unbiased = True\n", """\
        y_hat, _ = net(batch[0], noise=noise)
        loss = self.objective_of(net, y_hat, batch, objective)
        g = torch.Generator().manual_seed(1000 + self.step)
        wobble = 0.05 * torch.randn(net.W_h.shape, generator=g, dtype=net.W_h.dtype)
        tail = 0.2 * loss.detach() - 0.2 * loss  # takes 20% off every estimate's length, readout included
        return Estimate(loss + tail + (wobble * net.W_h).sum(), loss, y_hat)""", 10),
}
FAST_BROKEN = ("nan_rule", "no_wh_rule", "jitter_rule")  # the CLI must refuse these (exit 1, the check named)


def rule_source(name: str, doc: str, attrs: str, body: str) -> str:
    return RULE_FILE.format(name=name, doc=doc, attrs=attrs, body=body)


def load_rule(tmp_path: Path, name: str, doc: str, attrs: str, body: str):
    """Register a rule from a file outside modules/rules/, as the conformance worker processes would."""
    path = tmp_path / f"{name}.py"
    path.write_text(rule_source(name, doc, attrs, body))
    spec = importlib.util.spec_from_file_location(f"test_rule_{name}", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


@pytest.fixture
def registered(tmp_path):
    """Load rules into the registry for one test and take them out again afterwards."""
    from modules.rules import RULES
    added: list[str] = []

    def add(name, doc, attrs, body):
        load_rule(tmp_path, name, doc, attrs, body)
        added.append(name)
        return name

    yield add
    for name in added:
        RULES.pop(name, None)


# ------------------------------------------------------------------------------------ conformance
@pytest.mark.parametrize("name", list(BROKEN))
def test_each_broken_rule_fails_the_check_that_names_its_fault(name, registered):
    from rulescape.study.conformance import run_checks
    doc, attrs, body, check = BROKEN[name]
    results = run_checks(registered(name, doc, attrs, body), {}, ddp=False)
    failed = [r.number for r in results if r.failed]
    assert check in failed, [(r.number, r.outcome, r.detail) for r in results]


def test_a_sound_new_rule_passes_and_its_alignment_is_reported(registered):
    from rulescape.study.conformance import run_checks
    results = run_checks(registered("half_signal", *GOOD), {}, ddp=False)
    assert not [r for r in results if r.failed], [(r.number, r.outcome, r.detail) for r in results]
    alignment = next(r for r in results if r.number == 8)
    assert alignment.outcome == "reported" and alignment.detail.count("rho") == 3
    assert {r.number: r.outcome for r in results}[9] == "n/a"


@pytest.mark.parametrize("rule,params", [("bptt", {}), ("eprop", {}), ("rflo", {}), ("mdgl", {}),
                                         ("tbptt", {"window": 2}), ("bptt_scaled", {"rho": 0.5}), ("rtrl", {})])
def test_every_deterministic_registered_rule_passes(rule, params):
    from rulescape.study.conformance import run_checks
    results = run_checks(rule, params, ddp=False)
    assert not [r for r in results if r.failed], [(r.number, r.detail) for r in results if r.failed]
    exact = {r.number: r.outcome for r in results}[9]
    assert exact == ("pass" if rule in ("bptt", "rtrl") else "n/a")


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["uoro", "node_perturbation"])
def test_the_unbiased_rules_pass_their_unbiasedness_check(rule):
    from rulescape.study.conformance import run_checks
    results = run_checks(rule, {}, ddp=False)
    assert not [r for r in results if r.failed], [(r.number, r.detail) for r in results if r.failed]
    assert {r.number: r.outcome for r in results}[10] == "pass"


@pytest.mark.slow
def test_the_ddp_check_catches_an_estimate_that_depends_on_the_batch_size(registered):
    """Halves of the batch averaged must equal the whole: an extra term that depends on the batch size breaks
    it (a rule normalising by something other than the trials' shares of the loss); e-prop passes."""
    from rulescape.study.conformance import check_ddp
    from modules.rules import RULES
    name = registered("batch_rule", "W_h term scaled by the batch size", "", """\
        y_hat, _ = net(batch[0], truncation="recurrent", noise=noise)
        loss = self.objective_of(net, y_hat, batch, objective)
        return Estimate(loss + 0.01 * (batch[0].shape[0] - 4) * net.W_h.sum(), loss, y_hat)""")
    ok, detail = check_ddp(name, {}, RULES[name])
    assert ok is False and "differs from the whole-batch estimate" in detail
    ok, detail = check_ddp("eprop", {}, RULES["eprop"])
    assert ok is True, detail


def test_the_worked_example_passes():
    """docs/examples/eprop_sign.py, loaded from where it lies (not in the registry)."""
    from modules.rules import RULES
    from rulescape.study.conformance import run_checks
    spec = importlib.util.spec_from_file_location("example_eprop_sign", ROOT / "docs/examples/eprop_sign.py")
    try:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        results = run_checks("eprop_sign", {}, ddp=False)
    finally:
        RULES.pop("eprop_sign", None)
    assert not [r for r in results if r.failed], [(r.number, r.detail) for r in results if r.failed]


# -------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args,says", [(["rule=no_such_rule"], "unknown rule 'no_such_rule'"),
                                       (["rule=eprop", "study.seeds=0"], "study.seeds=0"),
                                       (["rule=eprop", "study.tasks=[dms,nosuchtask]"], "unknown task 'nosuchtask'"),
                                       (["rule=eprop", "study.nokey=1"], "unknown key 'study.nokey'"),
                                       pytest.param(["rule=rflo", "rule.feedback_scale=-1"], "rule.feedback_scale",
                                                    marks=pytest.mark.slow)])  # composes a whole study
def test_bad_input_is_one_line_and_exit_2(args, says, tmp_path):
    done = subprocess.run([PY, str(ROOT / "study.py"), *args, f"study.out={tmp_path / 'out'}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], done.stderr
    assert "Traceback" not in done.stdout + done.stderr and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------- reuse, claims
def test_the_config_check_ignores_the_logger_but_not_a_missing_key():
    from rulescape.run.checkpoint import config_mismatch
    from rulescape.study.baseline_reuse import IGNORED
    recorded = {"logger": {"name": "none"}, "task": {"lr": 0.1, "noise": 1.0}, "trainer": {"enable_progress_bar": False}}
    now = {"logger": {"name": "wandb"}, "task": {"lr": 0.1, "noise": 1.0},
           "trainer": {"enable_progress_bar": True}}
    assert config_mismatch(recorded, now, IGNORED) is None
    now["task"]["noise"] = 0.5
    assert config_mismatch(recorded, now, IGNORED) == "task.noise"
    now["task"]["noise"] = 1.0
    now["task"]["new_key"] = 3  # a key the record lacks is a difference (issue #33: `{}` was "config equal")
    assert config_mismatch(recorded, now, IGNORED) == "task.new_key"


def test_the_committed_study_records_match_this_codes_config_for_their_arm():
    """The config check alone (no rerun) on a committed record: equal for the arm it ran, not for another."""
    from rulescape.study.baseline_reuse import decide, index_records
    index = index_records(ROOT / "docs" / "study")
    if "bptt_pattern_seed0" not in index:
        pytest.skip("no committed pattern study records in this checkout")

    def overrides(arm):
        return lambda seed: ["experiment=study_pattern", "logger=none", f"rule={arm}", f"study_arm={arm}",
                             f"seed={seed}"]
    ok = decide("pattern", "bptt", [0], index, overrides("bptt"))
    changed = decide("pattern", "bptt", [0], index, lambda seed: overrides("bptt")(seed) + ["optimizer.lr=0.123"])
    assert not changed.reuse and "config differs" in changed.why, changed.why
    if ok.reuse:  # this code composes the record's config: one changed key is named
        assert "optimizer.lr" in changed.why, changed.why
    else:  # the presets changed since the record (a new protocol): the check names a key that differs
        assert "config differs" in ok.why and " -> " in ok.why, ok.why
    missing = decide("pattern", "bptt", [99], index, overrides("bptt"))
    assert not missing.reuse and "seed 99" in missing.why, missing.why


def test_of_several_records_of_one_name_the_matching_one_is_reused(tmp_path, monkeypatch):
    """docs/study holds an older edition's records under the same names (docs/study/v1): the record whose
    config this study composes is found wherever it sorts."""
    from rulescape.study import baseline_reuse as reuse
    want = {"task": {"name": "dms", "lr": 0.1}, "seed": 0}
    for folder, lr in (("a_old", 0.2), ("b_new", 0.1), ("c_other", 0.3)):
        run = tmp_path / folder / "runs" / "bptt_dms_seed0"
        run.mkdir(parents=True)
        run.joinpath("summary.json").write_text(json.dumps(
            {"status": "ok", "config": {"task": {"name": "dms", "lr": lr}, "seed": 0},
             "versions": {"rulescape": folder * 7}}))
    monkeypatch.setattr(reuse, "expected_config", lambda overrides: want)
    monkeypatch.setattr(reuse, "provenance_problem", lambda path, data, record: None)  # tests/test_trust3.py
    index = reuse.index_records(tmp_path)
    assert len(index["bptt_dms_seed0"]) == 3
    got = reuse.decide("dms", "bptt", [0], index, lambda seed: [])
    assert got.reuse and got.records[0].parent.parent.name == "b_new", got
    want["task"]["lr"] = 0.5  # none matches: the first one's reason
    got = reuse.decide("dms", "bptt", [0], index, lambda seed: [])
    assert not got.reuse and "task.lr: 0.2 -> 0.5" in got.why, got.why


def test_claims_beside_reads_the_rule_and_the_compared_rules_from_the_report():
    from rulescape.study.runner import claims_beside
    report = textwrap.dedent("""\
        ## Task `dms`

        ### Claims

        | claim | task | statistic | p | n | verdict |
        |---|---|---|---|---|---|
        | mine: larger gap than bptt | dms | Welch t = 3.1 | 0.004 | 10 vs 10 | held |
        | eprop: larger gap than bptt | dms | Welch t = 2.0 | 0.03 | 10 vs 10 | held |
        | rflo: larger gap than bptt | dms | Welch t = 0.5 | 0.3 | 10 vs 10 | not held |
        | Theorem 1: final \\|ρ\\|ηλ1 < 2 (mine) | dms | 10/10 runs' final value < 2 | n/a | 10 | held |
        | Theorem 1: final \\|ρ\\|ηλ1 < 2 (mdgl) | dms | 9/10 runs' final value < 2 | n/a | 10 | not held |
        """)
    header, rows = claims_beside(report, "mine")
    assert header == ["claim", "task", "mine", "eprop", "rflo", "mdgl"]
    assert rows == [["larger gap than bptt [Welch t]", "dms", "held (p 0.004)", "held (p 0.03)", "not held (p 0.3)", "—"],
                    ["Theorem 1: final |ρ|ηλ1 < 2 (the rule)", "dms", "held", "—", "—", "not held"]]


def test_claims_beside_leaves_out_arms_the_study_never_ran():
    """The plan's claims against bptt_early (an arm study.py never runs) would fill the table with "not
    tested (no ok runs of arm bptt_early)"; given the arms it ran, those rows go. A rule's own missing runs
    stay visible."""
    from rulescape.study.runner import claims_beside
    cell = "not tested (no ok runs of arm {})"
    report = textwrap.dedent(f"""\
        ## Task `dms`

        ### Claims

        | claim | task | statistic | p | n | verdict |
        |---|---|---|---|---|---|
        | mine: larger gap than bptt | dms | Welch t = 3.1 | 0.004 | 10 vs 10 | held |
        | mine: larger gap than bptt_early | dms | n/a | n/a | 0 | {cell.format("bptt_early")} |
        | eprop: larger gap than bptt_early | dms | n/a | n/a | 0 | {cell.format("bptt_early")} |
        | mine: higher final λ1 than bptt | dms | n/a | n/a | 0 | {cell.format("mine")} |
        """)
    ran = {"mine", "bptt", "eprop", "rflo", "mdgl", "bptt_matched_mine"}
    _, rows = claims_beside(report, "mine", ran)
    assert [r[0] for r in rows] == ["larger gap than bptt [Welch t]", "higher final λ1 than bptt"]
    _, every = claims_beside(report, "mine")  # without the arms: every row, as before
    assert len(every) == 3


# ------------------------------------------------------------------------------ end to end (copy)
@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    """The tracked files of this checkout in a temporary directory (the study writes rule files into it)."""
    dest = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in files.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def add_rule_files(repo: Path, name: str, doc: str, attrs: str, body: str) -> None:
    """What docs/add-a-rule.md tells a user to do: the rule file into modules/rules/, its YAML into conf/rule/."""
    (repo / "modules" / "rules" / f"{name}.py").write_text(rule_source(name, doc, attrs, body))
    (repo / "conf" / "rule" / f"{name}.yaml").write_text(f"name: {name}\n")


def study(repo: Path, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "study.py", *args], cwd=repo, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAST_BROKEN)
def test_a_broken_rule_stops_the_study_at_conformance(repo_copy, name, tmp_path):
    doc, attrs, body, check = BROKEN[name]
    add_rule_files(repo_copy, name, doc, attrs, body)
    done = study(repo_copy, f"rule={name}", "study.smoke=true", f"study.out={tmp_path / 'out'}", timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = done.stderr.strip().splitlines()
    assert errors[-1].startswith("error: conformance failed: ") and f"check {check} (" in errors[-1], done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "out").exists()  # no study ran
    assert f"| {check} | " in done.stdout  # the table, with the check's number


@pytest.mark.slow
def test_a_new_rule_goes_through_conformance_study_and_report(repo_copy, tmp_path):
    """A rule the registry has never seen: smoke study end to end, then its rows in the report."""
    from analysis import claim_table
    name = "half_signal"
    add_rule_files(repo_copy, name, *GOOD)
    out = tmp_path / "out"
    done = study(repo_copy, f"rule={name}", "study.smoke=true", f"study.out={out}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-2:]
    assert last == [f"output: {out}", f"report: {out / 'report' / 'report.md'}"], last
    assert "| 6 | DDP average (2 gloo processes) | pass |" in done.stdout
    # every task x seed of the rule and of its control ran, and every baseline (smoke sizes: nothing to reuse)
    records = {p.parent.name: json.loads(p.read_text()) for p in (out / "runs").rglob("summary.json")}
    for task in ("dms", "seqmnist", "pattern"):
        for seed in range(3):
            for arm in (name, f"bptt_matched_{name}", "bptt", "eprop", "rflo", "mdgl"):
                assert records[f"{arm}_{task}_seed{seed}"]["status"] == "ok", (arm, task, seed)
            followed = records[f"bptt_matched_{name}_{task}_seed{seed}"]["config"]["rule"]["rho_from"]
            assert followed.endswith(f"{name}_{task}_seed{seed}")
    report = (out / "report" / "report.md").read_text()
    assert all(f"| {name} | 3 |" in section for section in report.split("## Task")[1:]), "the rule's arm per task"
    assert list((out / "report").glob("*.png")), "figures drawn"
    rows = [line for line in report.splitlines() if line.startswith(f"| {name}: ")]
    assert rows and any("bptt" in r for r in rows), "the rule's claims against bptt"
    written = (out / f"claims_{name}.md").read_text()
    assert written.count(f"| {name} |") == 1
    from rulescape.study.runner import SMOKE_BANNER
    assert SMOKE_BANNER in written and SMOKE_BANNER in done.stdout  # toy-size verdicts say so
    assert "bptt_early" not in written  # an arm the study never ran has no rows
