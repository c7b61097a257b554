"""Trust, round three (issue #33): one gate before Hydra builds anything; a sweep job's identity is its
record's own config; the launcher never writes into a directory a live run holds; baseline reuse verifies what
it reuses; the rule registry, checkpoint configs, plan.yaml, study.py's signals, Hydra's writes and records'
interpolations. Each test reproduces one scenario of the issue (with a live payload where one applies)."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from rulescape.config.gate import gate
from rulescape.errors import EXIT_CONFIG
from rulescape.run.cli import preflight

QUICK = ["logger=none", "trainer.max_steps=4", "eval_every=2", "checkpoint_every=0", "task.train_size=32",
         "task.test_size=32", "task.batch_size=16", "model.hidden_size=8", "curvature.batch_size=16",
         "curvature.every_n_steps=2", "alignment.every_n_steps=2"]


def run_train(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def evil_yaml(marker: Path, package_global: bool = True) -> str:
    """A config file whose Hydra callback would create `marker` when Hydra builds the sweep's callbacks."""
    return ("# @package _global_\n" if package_global else "") + (
        "hydra:\n  callbacks:\n    x:\n      _target_: builtins.open\n"
        f"      file: {marker}\n      mode: w\n")


# ------------------------------------------------------------------------------- 1. one gate before Hydra
def hostile_lines(tmp_path: Path, marker: Path) -> dict[str, list[str]]:
    config_dir = tmp_path / "confdir"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "evil.yaml").write_text("defaults:\n  - config\n  - _self_\n" + evil_yaml(marker, False))
    create = "'${oc.create:\"{_target_: builtins.open, file: " + str(marker) + ", mode: w}\"}'"
    return {
        # the chain: the job was refused, the sweep's parent had already built the callback
        "interpolated_callback": ["-m", "~optimizer", "+optimizer._target_=pathlib.Path",
                                  f"+optimizer._args_=[{marker}]", "+scheduler._target_=pathlib.Path.write_text",
                                  '+scheduler._args_=[${optimizer},"pwned"]',
                                  "hydra.callbacks.sweep_summary=${scheduler}"],
        "oc_create_callback": ["-m", f"hydra.callbacks.sweep_summary={create}"],
        "config_dir": ["-m", "--config-dir", str(config_dir), "--config-name", "evil"],
        "launcher_setup": ["-m", "hydra/launcher=submitit_local", f'+hydra.launcher.setup=["touch {marker}"]'],
        "env_set": [f"+hydra.job.env_set.LD_PRELOAD={marker}"],
        "log_file": [f"hydra.job_logging.handlers.file.filename={marker}"],
        "log_class": ["hydra.job_logging.handlers.console.class=pathlib.Path.touch"],
        "mode_multirun": ["hydra.mode=MULTIRUN", f"hydra.callbacks.sweep_summary={create}"],
        "job_value": ["-m", f"+foo=1,{create}", "optimizer.momentum=${foo}"],
        "rerun_pickle": ["--experimental-rerun", str(marker)],
        "output_subdir": [f"hydra.output_subdir={tmp_path}/elsewhere"],
    }


CASES = ["interpolated_callback", "oc_create_callback", "config_dir", "launcher_setup", "env_set", "log_file",
         "log_class", "mode_multirun", "job_value", "rerun_pickle", "output_subdir"]


@pytest.mark.parametrize("case", CASES)
def test_the_gate_refuses_what_hydra_would_build_and_creates_nothing(tmp_path, case):
    marker = tmp_path / "pwned"
    argv = hostile_lines(tmp_path, marker)[case]
    problem = preflight(argv)
    assert problem and problem.startswith("error:") and "refused" in problem and "\n" not in problem, problem
    assert not marker.exists()


def test_the_callback_payload_is_live_without_the_gate(tmp_path):
    """The premise: Hydra builds the callbacks of a config from --config-dir (what a sweep's parent does
    before any job runs), and that creates the file."""
    from hydra._internal.callbacks import Callbacks

    from rulescape.config.gate import compose
    marker = tmp_path / "pwned"
    cfg, _ = compose(hostile_lines(tmp_path, marker)["config_dir"])
    Callbacks(cfg)
    assert marker.exists()


def test_a_file_dropped_into_conf_is_gated_too(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    marker = tmp_path / "pwned"
    (conf / "experiment" / "evil.yaml").write_text(evil_yaml(marker))
    problem = gate(["-m", "--config-path", str(conf), "experiment=evil"])
    assert problem and "hydra.callbacks.x" in problem and "builtins.open" in problem, problem
    assert not marker.exists()


@pytest.mark.parametrize("argv", [["rule=eprop"], ["-m", "experiment=study_dms"], ["-m", "rule=bptt,eprop", "seed=0,1"],
                                  ["-m", "hydra/launcher=submitit_local"], ["-m", "hydra/launcher=joblib"],
                                  ["optimizer=adam", "scheduler=step_decay"], ["hydra.job.chdir=true"]])
def test_the_gate_lets_the_project_s_own_lines_through(argv):
    assert gate(argv) is None


def test_a_benign_config_dir_runs_through_the_gate(tmp_path):
    (tmp_path / "mine.yaml").write_text("defaults:\n  - config\n  - _self_\nseed: 7\n")
    assert gate(["--config-dir", str(tmp_path), "--config-name", "mine"]) is None


def test_the_shipped_targets_the_gate_trusts_are_in_the_allow_list():
    from rulescape.config.gate import SHIPPED_TARGETS
    from rulescape.config.targets import allowed_targets
    assert set(SHIPPED_TARGETS) <= set(allowed_targets("optimizer")) | set(allowed_targets("scheduler"))


@pytest.mark.parametrize("case", ["interpolated_callback", "config_dir", "launcher_setup"])
def test_hostile_lines_end_to_end_exit_2_and_create_nothing(tmp_path, case):
    marker = tmp_path / "pwned"
    sweep = tmp_path / "sweep"
    out = run_train(*hostile_lines(tmp_path, marker)[case], f"hydra.sweep.dir={sweep}", f"hydra.run.dir={sweep}")
    assert out.returncode == EXIT_CONFIG, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    assert not marker.exists() and not sweep.exists()


# ---------------------------------------------------------------------- 2. a sweep's identity is its config
@pytest.mark.slow  # two real sweeps (~20 s); tests/test_sweep_rerun.py checks the launcher's decision in-process
def test_a_sweep_re_run_with_a_changed_value_is_refused_and_changes_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    first = run_train("-m", *QUICK, f"hydra.sweep.dir={sweep}", "optimizer.lr=0.1")
    assert first.returncode == 0, first.stderr[-2000:]
    job = next(sweep.glob("0_*"))
    before = {p: p.read_bytes() for p in job.rglob("*") if p.is_file()}
    changed = run_train("-m", *QUICK, f"hydra.sweep.dir={sweep}", "optimizer.lr=0.05")
    assert changed.returncode == 0, changed.stderr[-2000:]
    assert "[refused] job 0" in changed.stdout and "optimizer.lr=0.1, this job optimizer.lr=0.05" in changed.stdout
    assert "1 refused" in changed.stdout and "1 ok" not in changed.stdout, changed.stdout
    after = {p: p.read_bytes() for p in job.rglob("*") if p.is_file()}
    assert after == before  # .hydra/overrides.yaml and the record untouched
    again = run_train("-m", *QUICK, f"hydra.sweep.dir={sweep}", "optimizer.lr=0.1")
    assert "1 of 1 jobs already finished" in again.stdout and "1 ok" in again.stdout, again.stdout
    assert {p: p.read_bytes() for p in job.rglob("*") if p.is_file()} == before


# ------------------------------------------------------- 4. the launcher writes only where it may
def hold_lock(run_dir: Path):
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a+")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_a_job_whose_directory_a_live_run_holds_is_refused_and_nothing_is_written_there(tmp_path):
    sweep = tmp_path / "sweep"
    job = sweep / "0_bptt_dms_seed0"
    handle = hold_lock(job)  # a live run in that directory
    try:
        out = run_train("-m", *QUICK, f"hydra.sweep.dir={sweep}")
    finally:
        handle.close()
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[refused] job 0" in out.stdout and "in use by another live run" in out.stdout, out.stdout
    assert sorted(p.name for p in job.iterdir()) == [".lock"]  # no record, no .hydra


def test_a_record_for_a_dead_job_is_never_written_into_a_directory_a_live_run_holds(tmp_path):
    from rulescape.sweep.launcher import write_job_record
    handle = hold_lock(tmp_path / "live")
    try:
        assert write_job_record(tmp_path / "live", {"status": "failed"}, 0) is False
    finally:
        handle.close()
    assert not (tmp_path / "live" / "summary.json").exists()
    assert write_job_record(tmp_path / "live", {"status": "failed"}, 0) is True  # once nobody holds it
    assert write_job_record(tmp_path / "new", {"status": "failed"}, 0) is True  # one the sweep creates


# ------------------------------------------------------------------ 3. baseline reuse verifies what it reuses
HEAD = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
WANT = {"task": {"name": "dms", "lr": 0.1}, "seed": 0, "model": {"hidden_size": 8}}


def put_record(root: Path, name: str, manifest: bool = True, **fields) -> Path:
    """A record under root/<name>/ (listed in root/records.sha256 unless manifest=False)."""
    import hashlib
    record = {"status": "ok", "config": json.loads(json.dumps(WANT)), "test_acc": 0.8, "wall_time_s": 10.0,
              "versions": {"rulescape": HEAD}, **fields}
    run = root / name
    run.mkdir(parents=True, exist_ok=True)
    data = json.dumps(record).encode()
    (run / "summary.json").write_bytes(data)
    if manifest:
        with open(root / "records.sha256", "a") as f:
            f.write(f"{hashlib.sha256(data).hexdigest()}  {name}/summary.json\n")
    return run


@pytest.fixture
def reuse(monkeypatch):
    from rulescape.study import baseline_reuse
    monkeypatch.setattr(baseline_reuse, "expected_config", lambda overrides: json.loads(json.dumps(WANT)))
    return baseline_reuse


@pytest.mark.parametrize("how,says", [
    ("empty_config", "holds no config"), ("missing_group", "model.hidden_size"), ("diverged", "status diverged"),
    ("unknown_commit", "unknown commit"), ("foreign_commit", "not in this checkout's history"),
    ("unlisted", "neither committed in git nor listed"), ("changed_after_listing", "differs from the SHA-256"),
    ("fifo", "not a regular file"), ("symlink", "not a regular file"), ("symlinked_dir", "symlinked directory")])
def test_a_record_that_cannot_be_vouched_for_is_not_reused(tmp_path, reuse, how, says):
    import signal
    root = tmp_path / "baselines"
    fields = {"empty_config": {"config": {}}, "missing_group": {"config": {"task": WANT["task"], "seed": 0}},
              "diverged": {"status": "diverged"}, "unknown_commit": {"versions": {}},
              "foreign_commit": {"versions": {"rulescape": "0" * 40}}}.get(how, {})
    run = put_record(root, "bptt_dms_seed0", manifest=how != "unlisted", **fields)
    summary = run / "summary.json"
    if how == "changed_after_listing":  # changed results (test_acc 0.999) in a listed record
        summary.write_text(summary.read_text().replace("0.8", "0.999"))
    elif how == "fifo":
        summary.unlink()
        os.mkfifo(summary)
    elif how == "symlink":
        summary.rename(tmp_path / "elsewhere.json")
        summary.symlink_to(tmp_path / "elsewhere.json")
    elif how == "symlinked_dir":  # used to be skipped without a word ("no record for seed 0")
        run.rename(tmp_path / "elsewhere")
        run.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    signal.alarm(20)  # a FIFO read would block forever
    try:
        got = reuse.decide("dms", "bptt", [0], reuse.index_records(root), lambda seed: [])
    finally:
        signal.alarm(0)
    assert not got.reuse and says in got.why, got.why


def test_a_vouched_record_is_reused_and_its_real_folder_is_named(tmp_path, reuse):
    root = tmp_path / "elsewhere"
    put_record(root / "dms" / "runs", "bptt_dms_seed0")
    got = reuse.decide("dms", "bptt", [0], reuse.index_records(root), lambda seed: [])
    assert got.reuse, got.why
    assert reuse.source(got) == str(root / "dms" / "runs")


def test_a_committed_record_must_be_byte_identical_to_the_commit():
    from rulescape.study.baseline_reuse import provenance_problem
    path = next((ROOT / "docs" / "study").rglob("summary.json"))
    data = path.read_bytes()
    record = json.loads(data)
    assert provenance_problem(path, data, record) is None
    changed = data.replace(b'"test_acc": ', b'"test_acc": 0.999, "was": ', 1)
    assert "differs from the committed record" in provenance_problem(path, changed, record)


def test_two_qualifying_records_that_disagree_are_a_tie_named_by_both_paths(tmp_path, reuse):
    root = tmp_path / "b"
    a = put_record(root / "a", "bptt_dms_seed0")
    b = put_record(root / "b", "bptt_dms_seed0", test_acc=0.5)
    got = reuse.decide("dms", "bptt", [0], reuse.index_records(root), lambda seed: [])
    assert not got.reuse and str(a) in got.why and str(b) in got.why, got.why
    same = tmp_path / "same"  # the same outcome twice (an edition's copy, another commit): no tie
    put_record(same / "a", "bptt_dms_seed0")
    put_record(same / "b", "bptt_dms_seed0", wall_time_s=3.0)
    assert reuse.decide("dms", "bptt", [0], reuse.index_records(same), lambda seed: []).reuse


def test_the_rerun_sample_is_not_chosen_by_the_records_own_fields(tmp_path, reuse):
    """A tampered record claiming to be the quickest was always the one rerun; now any may be."""
    import random
    root = tmp_path / "b"
    for seed in range(4):
        put_record(root, f"bptt_dms_seed{seed}", wall_time_s=0.001 if seed == 0 else 100.0)
    got = reuse.decide("dms", "bptt", list(range(4)), reuse.index_records(root), lambda seed: [])
    assert got.reuse, got.why
    drawn = {tuple(reuse.sample(got, 1, random.Random(i))) for i in range(40)}
    assert len(drawn) == 4


def test_a_study_lists_its_records_for_later_reuse(tmp_path, reuse):
    put_record(tmp_path / "runs", "bptt_dms_seed0", manifest=False)
    listing = reuse.write_manifest(tmp_path)
    assert "runs/bptt_dms_seed0/summary.json" in listing.read_text()
    assert reuse.decide("dms", "bptt", [0], reuse.index_records(tmp_path), lambda seed: []).reuse


# ------------------------------------------------------------------ 7. a checkpoint's config: every key
def test_a_checkpoint_whose_config_lacks_keys_is_refused(tmp_path):
    import torch
    from omegaconf import OmegaConf

    from conftest import compose_config
    from rulescape.errors import ConfigError
    from rulescape.run.checkpoint import check_checkpoint
    from rulescape.run.training import train
    run = tmp_path / "bptt"
    assert train(compose_config([*QUICK, "callbacks=none"]), run)["status"] == "ok"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["config"] = {"seed": 0}  # BPTT's weights, a config that says almost nothing
    crafted = tmp_path / "crafted.ckpt"
    torch.save(ckpt, crafted)
    eprop = OmegaConf.to_container(compose_config([*QUICK, "callbacks=none", "rule=eprop"]), resolve=True)
    with pytest.raises(ConfigError, match="was saved with .*<absent>"):
        check_checkpoint(str(crafted), eprop)


# ------------------------------------------------------------------------- 5. the rule registry guards itself
DUPLICATE = ("from modules.rules import register\nfrom modules.rules.eprop import EProp\n\n\n"
             "@register\nclass MyCopy(EProp):\n    name = 'bptt'\n")
BROKEN = "raise RuntimeError('this rule file is broken')\n"
BUFFER_STEP = ("import torch\nfrom modules.rules import register\nfrom modules.rules.eprop import EProp\n\n\n"
               "@register\nclass Stepper(EProp):\n    name = 'stepper'\n\n"
               "    def __init__(self, net):\n        super().__init__(net)\n"
               "        self.register_buffer('step', torch.zeros(()))\n")
ATTR_STEP = ("from modules.rules import register\nfrom modules.rules.eprop import EProp\n\n\n"
             "@register\nclass Stepper(EProp):\n    name = 'stepper'\n    step = 5\n")


@pytest.fixture
def registry(monkeypatch, tmp_path):
    """The registry's tables, emptied of nothing but restored after the test; load(source) imports a rule file
    from tmp_path as if it were in modules/rules/."""
    import importlib.util

    import modules.rules as reg
    for table in ("RULES", "IMPORT_FAILURES", "DUPLICATES", "CLASHES"):
        monkeypatch.setattr(reg, table, dict(getattr(reg, table)))

    def load(name: str, source: str) -> None:
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(f"trust3_rule_{name}", path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    reg.load = load
    return reg


def test_a_duplicate_rule_name_is_one_line_naming_both_files(registry, tmp_path):
    from rulescape.run.training import build_network  # noqa: F401 - the entry point's imports still work
    registry.load("mycopy", DUPLICATE)
    problem = registry.rule_problem("bptt")
    assert "modules/rules/bptt.py" in problem and str(tmp_path / "mycopy.py") in problem, problem
    with pytest.raises(registry.RuleRegistryError, match="claimed by 2 classes"):
        registry.build_rule("bptt", None)
    assert registry.rule_problem("eprop") is None  # the other rules keep working
    from conftest import compose_config
    from rulescape.errors import ConfigError
    from rulescape.run.training import train
    with pytest.raises(ConfigError, match="claimed by 2 classes"):  # a sweep's job names the files too
        train(compose_config([*QUICK, "rule=bptt"]), tmp_path / "job")


def test_a_rule_that_reuses_a_base_class_name_is_one_line_naming_its_file(registry, tmp_path):
    registry.load("stepper_attr", ATTR_STEP)
    assert "'step'" in registry.rule_problem("stepper") and "stepper_attr.py" in registry.rule_problem("stepper")
    registry.CLASHES.pop("stepper")
    registry.RULES.pop("stepper")
    registry.load("stepper_buffer", BUFFER_STEP)  # a buffer: found when the rule is built, still one line
    from rulescape.study.conformance import tiny_problem
    net = tiny_problem(0)[0]
    with pytest.raises(ValueError, match=r"stepper_buffer.py registers a buffer named 'step'"):
        registry.build_rule("stepper", net)


def test_a_rule_file_that_fails_to_import_is_named_and_the_others_keep_working(registry, tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "broken.py").write_text(BROKEN)
    import sys as _sys
    _sys.path.insert(0, str(tmp_path))
    try:
        registry.import_rules("pkg", [str(package)])
    finally:
        _sys.path.remove(str(tmp_path))
        _sys.modules.pop("pkg", None)
    assert "modules/rules/broken.py" in registry.IMPORT_FAILURES
    problem = registry.rule_problem("broken")
    assert "broken.py failed to import (RuntimeError: this rule file is broken)" in problem, problem
    assert registry.rule_problem("eprop") is None


@pytest.fixture(scope="module")
def mini_repo(tmp_path_factory):
    """The tracked code and configs of this checkout (no study records, no tests) in a temporary directory,
    where a test may drop files into modules/rules/."""
    dest = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in files.decode().split("\0"):
        if name and not name.startswith(("docs/", "tests/")) and (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.mark.slow  # three train.py processes; the tests above check the same in-process
def test_registry_problems_end_to_end_exit_2_naming_the_files(mini_repo, tmp_path):
    rules = mini_repo / "modules" / "rules"
    (rules / "mycopy.py").write_text(DUPLICATE)
    (rules / "broken.py").write_text(BROKEN)
    (mini_repo / "conf" / "rule" / "broken.yaml").write_text("name: broken\n")
    try:
        def train_here(*args):
            return subprocess.run([sys.executable, "train.py", *QUICK, *args], cwd=mini_repo, capture_output=True,
                                  text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
        dup = train_here("rule=bptt", f"hydra.run.dir={tmp_path / 'dup'}")
        assert dup.returncode == EXIT_CONFIG and len(dup.stderr.strip().splitlines()) == 1, dup.stderr
        assert "modules/rules/bptt.py and modules/rules/mycopy.py" in dup.stderr, dup.stderr
        assert not (tmp_path / "dup").exists()
        broken = train_here("rule=broken", f"hydra.run.dir={tmp_path / 'broken'}")
        assert broken.returncode == EXIT_CONFIG and len(broken.stderr.strip().splitlines()) == 1, broken.stderr
        assert "modules/rules/broken.py failed to import" in broken.stderr
        works = train_here("rule=eprop", f"hydra.run.dir={tmp_path / 'eprop'}")
        assert works.returncode == 0, works.stderr[-2000:]
    finally:
        for path in (rules / "mycopy.py", rules / "broken.py", mini_repo / "conf" / "rule" / "broken.yaml"):
            path.unlink()


# ------------------------------------------------------------------------------------ 8. plan.yaml's schema
PLAN = ROOT / "docs" / "study" / "plan.yaml"


@pytest.mark.parametrize("change,says", [
    (("alpha: 0.05", "alpha: 1.5"), "alpha=1.5"), (("alpha: 0.05", "alpha: .nan"), "alpha=nan"),
    (("alpha: 0.05", "alpha: abc"), "alpha='abc'"), (("lambda_ratio: 1.5", "lambda_ratio: 0.5"), "lambda_ratio"),
    (("controls: [", "controls: 'bptt_matched*'\nold_controls: ["), "controls='bptt_matched*'"),
    (("chance: 0.5", "chance: 2"), "chance=2"), (("gap_margin: 0.02", "gap_margin: -1"), "gap_margin=-1"),
    (("test: spearman", "test: pearson"), "unknown test 'pearson'"),
    (("claim: gap_more_variable", "claim: gap_wider"), "unknown claim 'gap_wider'"),
    (("family: gap, alpha: 0.05}", "family: gap, alpha: 2}"), "alpha=2"),
    (("any_rule:\n", "any_rule: {}\nold_any_rule:\n"), "any_rule={}"),
    (("arms: [", "arms: 'bptt'\nold_arms: ["), "arms='bptt'")])
def test_a_bad_plan_is_one_line_and_exit_2(tmp_path, capsys, change, says):
    import report
    text = PLAN.read_text()
    assert change[0] in text
    plan = tmp_path / "plan.yaml"
    plan.write_text(text.replace(change[0], change[1], 1))
    code = report.main([str(ROOT / "tests" / "data" / "study_subset" / "runs"), "--out", str(tmp_path / "out"),
                        "--plan", str(plan), "--no-figures"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_CONFIG and len(err.splitlines()) == 1 and says in err, err
    assert not (tmp_path / "out" / "report.md").exists()


def test_the_plan_s_claim_kinds_are_the_code_s(monkeypatch, tmp_path):
    """A claim kind another module adds to analysis.claim_kinds is known to the plan's check at once."""
    from analysis import claim_kinds
    from analysis.plan import PlanError, load_plan
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.read_text().replace("claim: gap_more_variable", "claim: gap_wider", 1))
    with pytest.raises(PlanError, match="gap_wider"):
        load_plan(plan)
    monkeypatch.setitem(claim_kinds.TEXT, "gap_wider", "{arm}: wider gap than {against}")
    assert load_plan(plan).any_rule[2]["claim"] == "gap_wider"


# ------------------------------------------------------------------------ 6. study.py: signals and resume
def test_a_re_run_of_the_same_study_resumes_and_another_study_is_refused(tmp_path):
    from rulescape.errors import ConfigError
    from rulescape.study.runner import MARKER, check_out, identity, parse
    out = tmp_path / "study"
    request = parse(["rule=eprop", "study.smoke=true", f"study.out={out}"])
    request.out = out
    check_out(request)
    assert not request.resume  # a new directory
    out.mkdir()
    (out / "logs").mkdir()
    with pytest.raises(ConfigError, match="is not empty"):
        check_out(request)  # someone else's directory
    (out / MARKER).write_text(json.dumps(identity(request)))
    check_out(request)
    assert request.resume
    other = parse(["rule=eprop", "study.smoke=true", "study.seeds=4", f"study.out={out}"])
    other.out = out
    with pytest.raises(ConfigError, match="holds another study"):
        check_out(other)


def test_a_bad_plan_stops_the_study_before_anything_runs(tmp_path, monkeypatch, capsys):
    import analysis.plan
    from rulescape.study.runner import main
    bad = tmp_path / "plan.yaml"
    bad.write_text(PLAN.read_text().replace("alpha: 0.05", "alpha: abc", 1))
    monkeypatch.setattr(analysis.plan, "DEFAULT_PLAN", bad)
    assert main(["rule=eprop", "study.smoke=true", f"study.out={tmp_path / 'out'}"]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "alpha='abc'" in err, err
    assert not (tmp_path / "out").exists()


def test_a_signal_reaches_the_study_s_children_once_and_nothing_new_starts():
    import signal

    from rulescape.study import children
    children.reset()
    previous = children.install()
    try:
        proc = children.start([sys.executable, "-c", "import time; time.sleep(60)"])
        os.kill(os.getpid(), signal.SIGINT)  # the children's group gets one SIGINT; no KeyboardInterrupt here
        assert children.wait(proc) == -signal.SIGINT
        assert children.stopping() and children.call([sys.executable, "-c", "pass"]) == 130
        with pytest.raises(KeyboardInterrupt):  # no child left: the signal stops the study's own work
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        children.restore(previous)
        children.reset()


@pytest.mark.slow
def test_study_sigint_stops_its_sweeps_and_the_same_command_resumes(tmp_path):
    import signal
    import time
    out = tmp_path / "study"
    cmd = [sys.executable, "study.py", "rule=eprop", "study.smoke=true", "study.tasks=[dms]", "study.baselines=[]",
           "study.controls=[]", f"study.out={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not list(out.glob("runs/lane*/*/.hydra")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert len(err.strip().splitlines()) == 1 and "the same command resumes it" in err, err
    left = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
    assert not left, left  # no sweep or job keeps writing records
    statuses = [json.loads(p.read_text())["status"] for p in out.rglob("runs/**/summary.json")]
    assert statuses and "ok" not in statuses or set(statuses) <= {"ok", "interrupted"}, statuses
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed" in again.stdout
    assert {json.loads(p.read_text())["status"] for p in out.rglob("runs/**/summary.json")} == {"ok"}


# ------------------------------------------------------------------------------ 10. Hydra's own writes
def test_a_disk_that_cannot_take_hydra_s_files_is_one_line_and_no_directory(tmp_path):
    import resource
    import signal

    def small_files():  # every write past 3000 bytes fails (EFBIG), as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "train.py", *QUICK, f"hydra.run.dir={run}"], cwd=ROOT, capture_output=True,
                         text=True, preexec_fn=small_files, timeout=180)
    assert out.returncode == EXIT_CONFIG, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1 and "cannot write files" in out.stderr, out.stderr
    assert not run.exists()  # Hydra never began its half-written .hydra/config.yaml


@pytest.mark.parametrize("value", ["abc", "true", "1.5"])
def test_a_bad_launcher_value_is_one_line(value):
    problem = preflight(["-m", f"hydra.launcher.n_jobs={value}"])
    assert problem and problem.startswith("error: hydra.launcher.n_jobs=") and "\n" not in problem, problem


def test_a_job_directory_name_over_255_bytes_is_one_line_before_any_job(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_train("-m", *QUICK, f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=" + "x" * 300)
    assert out.returncode == EXIT_CONFIG, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1 and "too long" in out.stderr, out.stderr
    assert not [p for p in sweep.iterdir() if p.is_dir()] if sweep.exists() else True


# --------------------------------------------------------------------------------------- 11. the small ones
@pytest.mark.parametrize("argv,says", [
    (["model.hidden_size=1", "model.dale=true"], "every cell type needs a unit"),
    (["task=neurogym", "+task.kwargs.timing.delay=100000000"], "a trial of 1e+06 time steps")])
def test_small_values_that_used_to_run_or_be_killed_are_refused(argv, says):
    problem = preflight(argv)
    assert problem and says in problem and "\n" not in problem, problem


def test_a_rule_parameter_of_inf_is_refused():
    """bptt_noise's e_ratio is a YAML key no dataclass declares (accepted untyped): inf used to run and
    diverge at step 0."""
    problem = preflight(["rule=bptt_noise", "rule.e_ratio=inf"])
    assert problem == "error: rule.e_ratio=inf is not allowed; every number must be finite", problem


def test_the_printed_resume_line_reads_back_for_a_non_ascii_run_dir(tmp_path):
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rulescape.sweep.launcher import Job, resume_command
    out_dir = tmp_path / "läufe mit 'Leer'zeichen"
    line = resume_command(Job(0, ["rule=eprop"], out_dir, {}))
    args = shlex.split(line)[2:]
    parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(args)}
    assert parsed["hydra.run.dir"] == str(out_dir) and parsed["rule"] == "eprop"


def test_sweep_table_means_of_huge_values_stay_finite():
    from rulescape.sweep.sweep_summary import mean_std
    assert "inf" not in mean_std([1e308, 1e308]) and "inf" not in mean_std([1e308, -1e308, 1e308])


def rerun_refuses(tmp_path, capsys, monkeypatch, record: dict, says: str) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    import rerun_record
    import rulescape.run.training
    monkeypatch.setattr(rulescape.run.training, "train", lambda *a, **k: pytest.fail("trained"))
    run = tmp_path / "crafted"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(record))
    assert rerun_record.main([str(run)]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err, err


@pytest.fixture(scope="module")
def quick_record(tmp_path_factory) -> dict:
    from conftest import compose_config
    from rulescape.run.training import train
    run = tmp_path_factory.mktemp("record") / "run"
    assert train(compose_config([*QUICK, "callbacks=none"]), run)["status"] == "ok"
    return json.loads((run / "summary.json").read_text())


@pytest.mark.parametrize("missing", ["history", "curvature"])
def test_rerun_of_a_record_lacking_what_it_compares_is_one_line_before_training(tmp_path, capsys, monkeypatch,
                                                                                quick_record, missing):
    record = json.loads(json.dumps(quick_record))
    if missing == "history":
        del record["history"]
    else:
        del record["config"]["curvature"]
    rerun_refuses(tmp_path, capsys, monkeypatch, record, missing)


# ------------------------------------------------------------ 12. records' interpolations never resolved
def test_an_interpolation_in_a_record_is_refused_not_resolved(tmp_path, capsys, monkeypatch, quick_record):
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t")
    record = json.loads(json.dumps(quick_record))
    record["config"]["task"]["note"] = "${oc.env:SECRET_TOKEN}"
    rerun_refuses(tmp_path, capsys, monkeypatch, record, "task.note='${oc.env:SECRET_TOKEN}' is refused")
    assert "s3cr3t" not in "".join(p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file())


def test_a_control_following_a_diverged_run_says_so(tmp_path):
    """study.py's step-matched control used to follow a diverged rule's rho history without a word."""
    from modules.rules import build_rule
    from rulescape.study.conformance import tiny_problem
    followed = tmp_path / "eprop"
    followed.mkdir()
    record = {"status": "diverged", "rho_mean": 0.7, "history": {"rho": [[0, 0.7], [5, 0.6]]}}
    (followed / "summary.json").write_text(json.dumps(record))
    net = tiny_problem(0)[0]
    for mode in ("mean", "history"):
        rule = build_rule("bptt_scaled", net, rho_from=str(followed), rho_mode=mode)
        assert any("ended 'diverged'" in w for w in rule.warnings), rule.warnings
    record["status"] = "ok"
    (followed / "summary.json").write_text(json.dumps(record))
    assert build_rule("bptt_scaled", net, rho_from=str(followed)).warnings == []


# ------------------------------------------------------------- records linked into a sweep folder count
def test_a_run_directory_linked_into_a_sweep_folder_is_read_once(tmp_path):
    """report.py's loader follows a symlinked run directory (Path.rglob skips it silently) and reads a run
    reachable twice, or through a link loop, once."""
    from analysis.load import find_summaries
    real = tmp_path / "elsewhere" / "bptt_dms_seed0"
    real.mkdir(parents=True)
    (real / "summary.json").write_text("{}")
    sweep = tmp_path / "sweep"
    (sweep / "eprop_dms_seed0").mkdir(parents=True)
    (sweep / "eprop_dms_seed0" / "summary.json").write_text("{}")
    (sweep / "bptt_dms_seed0").symlink_to(real, target_is_directory=True)
    (sweep / "loop").symlink_to(sweep, target_is_directory=True)
    found = find_summaries([sweep, tmp_path / "elsewhere"])
    assert sorted(p.parent.name for p in found) == ["bptt_dms_seed0", "eprop_dms_seed0"]
