"""`python study.py rule=<name>`: conformance, then the rule's study, then its report (docs/add-a-rule.md).

1. Conformance (rulescape/study/conformance.py) on tiny networks; a failed check stops here with exit 1.
2. The study on each task's preset (conf/experiment/study_<task>.yaml, its matched point and budgets): the
   rule's arm x study.seeds, the controls named in study.controls (e.g. BPTT following the rule's rho
   history seed by seed, to the matched score and for the rule's own step count), and the baseline arms
   (bptt, eprop, rflo, mdgl): reused from study.baselines_from when they still reproduce on this code
   (rulescape/study/baseline_reuse.py), trained otherwise. Jobs are plain `train.py -m` sweeps (one job at a time
   each), in study.lanes processes at once; lane i takes every lanes-th seed and runs BPTT first, then the
   rule, then its controls, then the other baselines, so that every run measures λ1 also at the step where
   its seed's BPTT run stopped and a seed's control follows that seed's rule run.
3. report.py on the new runs and the reused records; the rule's claims beside eprop's, rflo's and mdgl's are
   printed, then the output directory and the report's path (last).
Bad input (unknown rule, task, study key, study.seeds < 1, a bad override) is one line and exit 2 before
anything runs.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rulescape.errors import EXIT_CONFIG, EXIT_INTERRUPTED, ConfigError
from rulescape.study import children

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
COMPARED = ("eprop", "rflo", "mdgl")  # the rules the new rule's claims are shown beside
# study.smoke: every job a 20-step toy (16 units, 64 trials), measured every few steps
SMOKE = ["trainer.max_steps=20", "model.hidden_size=16", "task.train_size=64", "task.test_size=64",
         "task.batch_size=16", "eval_every=10", "checkpoint_every=0", "curvature.every_n_steps=10",
         "curvature.batch_size=32", "alignment.every_n_steps=5", "stop_check_every=10"]
SMOKE_BANNER = ("> **Toy-sized (study.smoke=true): verdicts not meaningful.** Toy networks and data (16 units, "
                "64 trials, a few steps, 3 seeds): every step ran, but nothing these rows say is a finding.")
SMOKE_SEEDS = 3  # the fewest runs per arm a claim is tested on (analysis.claim_table.MIN_N)
CONTROLS = {  # name -> (arm name, overrides, as long as the rule's run); {rule} filled in per study
    "step_matched": ("bptt_matched_{rule}", ["rule=bptt_scaled", "rule.rho_mode=history"], False),
    "step_matched_mean": ("bptt_matched_mean_{rule}", ["rule=bptt_scaled", "rule.rho_mode=mean"], False),
    # the same controls for exactly the rule's step count, not stopped at the matched score: they also take
    # the rule's late steps (the matched-score ones reach the target long before a slow rule does)
    "step_matched_len": ("bptt_matched_len_{rule}", ["rule=bptt_scaled", "rule.rho_mode=history"], True),
    "step_matched_mean_len": ("bptt_matched_mean_len_{rule}", ["rule=bptt_scaled", "rule.rho_mode=mean"], True),
}
REFERENCE = "bptt"  # every other arm also measures λ1 where its seed's run of this arm stopped


@dataclass
class StudyRequest:
    rule: str
    rule_overrides: list[str]   # rule.<key>=<value>: the new rule's parameters (its arm only)
    job_overrides: list[str]    # any other train.py override: every job of the study
    study: dict                 # conf/study.yaml with study.<key>=<value> applied
    given: set[str] = field(default_factory=set)  # the study keys set on the command line
    seeds: list[int] = field(default_factory=list)
    out: Path = Path(".")
    resume: bool = False        # study.out holds this same study, interrupted: finished runs kept, others resumed

    @property
    def smoke(self) -> bool:
        return bool(self.study["smoke"])


# ------------------------------------------------------------------------------------------- input
def parse(argv: list[str]) -> StudyRequest:
    """The command line as a request; a ConfigError (one line) for anything malformed or unknown."""
    from omegaconf import OmegaConf
    study = OmegaConf.to_container(OmegaConf.load(CONF / "study.yaml"))
    rule, rule_overrides, job_overrides, given = None, [], [], set()
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq:
            raise ConfigError(f"cannot read {arg!r}: give key=value (rule=<name>, study.<key>=<value>, "
                              "rule.<key>=<value> or a train.py override)")
        if key == "rule":
            rule = value
        elif key.startswith("rule."):
            rule_overrides.append(arg)
        elif key.startswith("study."):
            name = key[len("study."):]
            if name not in study:
                raise ConfigError(f"unknown key 'study.{name}'; study has: {', '.join(sorted(study))}")
            try:
                study[name] = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={value}"]))["v"]
                given.add(name)
            except Exception as err:  # noqa: BLE001 - the YAML parser's complaint, on one line
                raise ConfigError(f"cannot read {arg!r} ({str(err).splitlines()[0]})") from None
        elif key in ("experiment", "arm", "seed") or key.startswith("hydra"):
            raise ConfigError(f"{key}= is set by study.py (study.tasks, study.seeds, study.out choose them)")
        else:
            job_overrides.append(arg)
    if not rule:
        raise ConfigError("give the rule to study: python study.py rule=<name> (docs/add-a-rule.md)")
    return StudyRequest(rule, rule_overrides, job_overrides, study, given)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def study_tasks() -> list[str]:
    return sorted(p.stem[len("study_"):] for p in (CONF / "experiment").glob("study_*.yaml"))


def check(request: StudyRequest) -> None:
    """Every value of the request, before anything runs: ConfigError (one line) on the first bad one."""
    from modules.rules import RULES, rule_problem
    s = request.study
    rule = request.rule
    problem = rule_problem(rule)
    if problem and rule in RULES or problem and not problem.startswith("unknown rule"):
        raise ConfigError(problem)  # a duplicate name, a clash with the base class: the file(s) named
    if rule not in RULES:
        where = ("conf/rule/{0}.yaml exists but no rule named '{0}' is registered (modules/rules/{0}.py)"
                 .format(rule) if (CONF / "rule" / f"{rule}.yaml").exists() else
                 f"add modules/rules/{rule}.py and conf/rule/{rule}.yaml (docs/add-a-rule.md)")
        raise ConfigError(f"{problem}; or {where}")
    if not (CONF / "rule" / f"{rule}.yaml").exists():
        raise ConfigError(f"rule '{rule}' is registered but conf/rule/{rule}.yaml is missing: create it with "
                          f"`name: {rule}` and the rule's parameters (docs/add-a-rule.md)")
    tasks = s["tasks"] if isinstance(s["tasks"], list) else [s["tasks"]]
    known = study_tasks()
    for task in tasks:
        if task not in known:
            raise ConfigError(f"study.tasks: unknown task '{task}'; choose from: {', '.join(known)}")
    if not tasks:
        raise ConfigError(f"study.tasks is empty; choose from: {', '.join(known)}")
    s["tasks"] = list(dict.fromkeys(tasks))
    if s["smoke"] not in (True, False):
        raise ConfigError(f"study.smoke={s['smoke']!r} is not allowed; it must be true or false")
    seeds = s["seeds"]
    if request.smoke and "seeds" not in request.given:
        seeds = s["seeds"] = SMOKE_SEEDS
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"study.seeds={seeds!r} is not allowed; it must be an integer >= 1")
    request.seeds = list(range(seeds))
    for arm in s["baselines"] or []:
        if arm not in options("rule"):
            raise ConfigError(f"study.baselines: unknown rule '{arm}'; choose from: {', '.join(options('rule'))}")
        if rule_problem(arm):
            raise ConfigError(f"study.baselines: {rule_problem(arm)}")
    for control in s["controls"] or []:
        if control not in CONTROLS:
            raise ConfigError(f"study.controls: unknown control '{control}'; choose from: {', '.join(CONTROLS)}")
    for key in ("verify_per_arm", "lanes"):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "lanes" else 0):
            raise ConfigError(f"study.{key}={v!r} is not allowed; it must be an integer >= "
                              f"{1 if key == 'lanes' else 0}")
    if s["figures"] not in (True, False):
        raise ConfigError(f"study.figures={s['figures']!r} is not allowed; it must be true or false")
    # the rule's own arm is not also a baseline (studying e.g. eprop itself trains it once)
    s["baselines"] = [a for a in (s["baselines"] or []) if a != rule]
    # absolute: the sweeps and report.py run from the repository root, wherever study.py was started
    request.out = Path(s["out"] or f"studies/{rule}_{time.strftime('%Y-%m-%d_%H-%M-%S')}").absolute()
    check_out(request)
    from analysis.plan import DEFAULT_PLAN, PlanError, load_plan
    try:  # report.py reads it at the end: a bad plan is found now, not after the training
        load_plan(DEFAULT_PLAN)
    except PlanError as err:
        raise ConfigError(str(err)) from None
    check_jobs(request)


MARKER = "study.json"  # <study.out>/study.json: the request that made it (a re-run of the same resumes it)


def identity(request: StudyRequest) -> dict:
    """What makes two study commands the same study (study.out aside)."""
    return {"rule": request.rule, "rule_overrides": request.rule_overrides, "job_overrides": request.job_overrides,
            "study": {k: v for k, v in request.study.items() if k != "out"}}


def check_out(request: StudyRequest) -> None:
    """study.out: new, or holding this same study (then it resumes); and a place a directory can be made."""
    import json
    import tempfile
    out = request.out
    if out.exists() and not out.is_dir():
        raise ConfigError(f"study.out={out} is not a directory; give a new directory")
    if out.is_dir() and any(out.iterdir()):
        try:
            made_by = json.loads((out / MARKER).read_text()) if (out / MARKER).is_file() else None
        except (OSError, ValueError):
            made_by = None
        if made_by != json.loads(json.dumps(identity(request))):
            raise ConfigError(f"study.out={out} is not empty" + (" and holds another study" if made_by else "")
                              + "; give a new directory (the same command resumes its own study.out)")
        request.resume = True
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:  # a real attempt: permissions and read-only mounts answer truthfully
        os.rmdir(tempfile.mkdtemp(prefix=".rulescape-probe-", dir=existing))
    except OSError as err:
        raise ConfigError(f"study.out={out}: cannot create it in {existing} ({err.strerror})") from None


def base_overrides(request: StudyRequest, task: str) -> list[str]:
    """What every job of the study on `task` gets: the preset, toy sizes in smoke mode, no logger unless the
    user chose one, and the user's own overrides (last: they win)."""
    logger = [] if any(a.startswith("logger=") for a in request.job_overrides) else ["logger=none"]
    return [f"experiment=study_{task}", *logger, *(SMOKE if request.smoke else []), *request.job_overrides]


def rule_overrides(request: StudyRequest) -> list[str]:
    return [f"rule={request.rule}", f"study_arm={request.rule}", *request.rule_overrides]


def paired_overrides(request: StudyRequest, lane_dir: Path | None) -> list[str]:
    """λ1 also at the step where the seed's BPTT run stopped (trained earlier in the same lane, or reused):
    the equal-steps claim then compares exactly equal steps. None without a BPTT baseline."""
    if REFERENCE not in (request.study["baselines"] or []) or lane_dir is None:
        return []
    run = f"{REFERENCE}_${{task.name}}_seed${{seed}}"
    places = [f"{lane_dir.resolve()}/{run}", f"{(request.out / 'reused').resolve()}/${{task.name}}/{run}"]
    return [f"curvature.at_steps_from={','.join(places)}", "curvature.at_steps_wait_s=0"]


def control_overrides(request: StudyRequest, control: str, lane_dir: Path) -> list[str]:
    arm, overrides, as_long = CONTROLS[control]
    follow = f"{lane_dir.resolve()}/{request.rule}_${{task.name}}_seed${{seed}}"
    length = [f"stop_at_step_from={follow}", "stop_at_step_wait_s=0", "stop_at_train_acc=null",
              "stop_at_train_loss=null"] if as_long else []
    return [*overrides, f"rule.rho_from={follow}", "rule.rho_wait_s=0", *length,
            f"study_arm={arm.format(rule=request.rule)}", *paired_overrides(request, lane_dir)]


def check_jobs(request: StudyRequest) -> None:
    """One job of each kind through train.py's own preflight (groups, keys, values) and the new rule built on
    a tiny network (its constructor refuses bad rule.* values): a bad override stops the study here."""
    from rulescape.run.cli import preflight
    task = request.study["tasks"][0]
    jobs = [rule_overrides(request)] + [[f"rule={a}", f"study_arm={a}"] for a in request.study["baselines"] or []]
    for overrides in jobs:
        problem = preflight([*base_overrides(request, task), *overrides, "seed=0"])
        if problem:
            raise ConfigError(problem[len("error: "):] if problem.startswith("error: ") else problem)
    from modules.rules import build_rule
    from rulescape.study.conformance import tiny_net
    try:
        build_rule(request.rule, tiny_net(), **rule_params(request))
    except (ConfigError, ValueError, TypeError) as err:
        raise ConfigError(f"rule {request.rule}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") \
            from None


def rule_params(request: StudyRequest) -> dict:
    """The new rule's constructor parameters: conf/rule/<rule>.yaml with the rule.* overrides."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"rule={request.rule}", *request.rule_overrides])
    params = OmegaConf.to_container(cfg.rule, resolve=True)
    params.pop("name", None)
    return params


# ------------------------------------------------------------------------------------- conformance
def conformance(request: StudyRequest) -> tuple[bool, str]:
    from rulescape.study.conformance import run_checks, table
    results = run_checks(request.rule, rule_params(request))
    text = table(results)
    print(f"conformance of rule '{request.rule}':\n{text}", flush=True)
    failed = [r for r in results if r.failed]
    if failed:
        print("error: conformance failed: " + "; ".join(f"check {r.number} ({r.name}): {r.detail}"
                                                       for r in failed), file=sys.stderr)
    return not failed, text


# ------------------------------------------------------------------------------------------ reuse
def plan_baselines(request: StudyRequest, log) -> dict[str, list[str]]:
    """{task: baseline arms to train}; reused records are copied to <out>/reused/<task>/ and said so."""
    from rulescape.study import baseline_reuse as reuse
    s = request.study
    arms = list(s["baselines"] or [])
    root = Path(s["baselines_from"]) if s["baselines_from"] else None
    to_run = {task: list(arms) for task in s["tasks"]}
    if not arms or root is None:
        return to_run
    index = reuse.index_records(root if root.is_absolute() else ROOT / root)
    decisions = []
    for task in s["tasks"]:
        for arm in arms:
            d = reuse.decide(task, arm, request.seeds, index,
                             lambda seed, task=task, arm=arm: [*base_overrides(request, task), f"rule={arm}",
                                                               f"study_arm={arm}", f"seed={seed}"])
            decisions.append(d)
            if not d.reuse:
                log(f"baseline {arm} on {task}: runs ({d.why})")
    candidates = [d for d in decisions if d.reuse]
    if candidates and s["verify_per_arm"] > 0:
        samples = {d: reuse.sample(d, s["verify_per_arm"]) for d in candidates}
        dirs = [p for ps in samples.values() for p in ps]
        log(f"checking that {len(candidates)} recorded baseline arm(s) still reproduce: rerunning {len(dirs)} "
            f"record(s) with tools/rerun_record.py ({s['lanes']} at a time)")
        outcome = reuse.rerun(dirs, s["lanes"], request.out / "logs" / "rerun_record.log")
        changed_tasks = {d.task for d, ps in samples.items() if any(outcome[p] != "same" for p in ps)}
        for d, ps in samples.items():
            words = ", ".join(f"{p.name}: {outcome[p]}" for p in ps)
            if d.task in changed_tasks:
                d.reuse, d.why = False, f"a rerun on this code differs on {d.task} ({words})"
                log(f"baseline {d.arm} on {d.task}: runs ({d.why})")
            else:
                d.why += f"; rerun {words}"
    elif candidates:
        for d in candidates:
            d.why += "; not rerun (study.verify_per_arm=0)"
    reused_dir = request.out / "reused"
    for d in decisions:
        if not d.reuse:
            continue
        to_run[d.task].remove(d.arm)
        for seed, src in d.records.items():
            dst = reused_dir / d.task / src.name
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / "summary.json", dst / "summary.json")
        log(f"baseline {d.arm} on {d.task}: reused {len(d.records)} records from {reuse.source(d)} "
            f"(commit {', '.join(sorted(d.commits))}; {d.why})")
    return to_run


# ------------------------------------------------------------------------------------------- runs
def sweep(request: StudyRequest, tasks: list[str], seeds: list[int], overrides: list[str], sweep_dir: Path,
          log_file: Path) -> int:
    """One `train.py -m` over tasks x seeds (x the rules in overrides), jobs one after another."""
    if not tasks or not seeds:
        return 0
    first = base_overrides(request, tasks[0])
    # experiment as a sweep (choice(), even of one preset): the sweeper then starts from the config without a
    # preset, so the presets' own arm and seed sweeps are not used; each job still composes its preset.
    # n_jobs=1: the launcher runs the jobs in order (each in a process of its own), so a lane's control
    # follows its rule run.
    cmd = [sys.executable, str(ROOT / "train.py"), "-m",
           "experiment=choice(" + ",".join(f"study_{t}" for t in tasks) + ")",
           "hydra.launcher.n_jobs=1", f"hydra.sweep.dir={sweep_dir.resolve()}",
           "seed=" + ",".join(map(str, seeds)), *first[1:], *overrides]
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"), "WANDB_SILENT": "true"}
    with open(log_file, "a", encoding="utf-8") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        return children.call(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)


def run_lanes(request: StudyRequest, baselines: dict[str, list[str]], log) -> list[str]:
    """Every training job of the study, in study.lanes processes at a time. Returns problems (a sweep that
    exited non-zero)."""
    s = request.study
    lanes = min(s["lanes"], len(request.seeds))
    problems: list[str] = []
    groups: dict[tuple[str, ...], list[str]] = {}  # tasks that train the same baseline arms share a sweep
    for task, arms in baselines.items():
        if arms:
            groups.setdefault(tuple(arms), []).append(task)

    def lane(i: int) -> None:
        seeds = request.seeds[i::lanes]
        log_file = request.out / "logs" / f"lane{i + 1}.log"
        rule_dir = request.out / "runs" / f"lane{i + 1}"
        # BPTT first: the rule's runs and the controls measure λ1 where BPTT's run of their seed stopped
        first = [(arms, tasks) for arms, tasks in groups.items() if REFERENCE in arms]
        steps = [(f"baseline {REFERENCE}", rule_dir, tasks, [f"rule={REFERENCE}", f"study_arm={REFERENCE}"])
                 for _, tasks in first]
        steps += [("rule", rule_dir, s["tasks"], rule_overrides(request) + paired_overrides(request, rule_dir))]
        steps += [(c, rule_dir, s["tasks"], control_overrides(request, c, rule_dir)) for c in s["controls"] or []]
        for arms, tasks in groups.items():
            others = [a for a in arms if a != REFERENCE]
            if others:
                steps.append(("baselines " + ",".join(others), rule_dir, tasks,
                              ["rule=" + ",".join(others), "study_arm=${rule.name}",
                               *paired_overrides(request, rule_dir)]))
        for what, sweep_dir, tasks, overrides in steps:
            if children.stopping():  # a signal: nothing new starts
                return
            start = time.time()
            code = sweep(request, tasks, seeds, overrides, sweep_dir, log_file)
            log(f"lane {i + 1}: {what} on {','.join(tasks)}, seeds {','.join(map(str, seeds))}: "
                f"{'done' if code == 0 else f'exit {code}'} ({time.time() - start:.0f} s)")
            if code != 0 and not children.stopping():
                problems.append(f"lane {i + 1} {what}: train.py exited {code} (see {log_file})")

    threads = [threading.Thread(target=lane, args=(i,)) for i in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return problems


# ----------------------------------------------------------------------------------------- report
def report(request: StudyRequest) -> tuple[int, Path]:
    out = request.out / "report"
    sources = [str(request.out / "runs")] + ([str(request.out / "reused")] if (request.out / "reused").is_dir() else [])
    cmd = [sys.executable, str(ROOT / "report.py"), *sources, "--out", str(out)]
    if not request.study["figures"]:
        cmd.append("--no-figures")
    with open(request.out / "logs" / "report.log", "w", encoding="utf-8") as log_file:
        code = children.call(cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    return code, out / "report.md"


def markdown_tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(the section heading (##) above, header cells, rows) of every markdown table in text."""
    tables, heading, lines = [], "", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):  # a section (## Task `dms`): kept until the next one
            heading = line.lstrip("# ").strip()
        if line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s:|-]+\|$", lines[i + 1].strip()):
            header = split_row(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(split_row(lines[i]))
                i += 1
            tables.append((heading, header, rows))
            continue
        i += 1
    return tables


def split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [c.strip().replace("\\|", "|") for c in cells]


def claim_rows(report_text: str, rule: str) -> list[dict]:
    """Every claims-table row of the report (claim, task, verdict and the rest, by header name), with the
    task taken from its section when the table has no task column."""
    rows = []
    task = ""
    for heading, header, body in markdown_tables(report_text):
        m = re.match(r"Task `([^`]+)`", heading)
        task = m.group(1) if m else task
        names = [h.lower() for h in header]
        if "claim" not in names or "verdict" not in names:
            continue
        for cells in body:
            row = dict(zip(names, cells))
            row.setdefault("task", task)
            rows.append(row)
    return rows


NOT_RUN = re.compile(r"not tested \(no ok runs of arm ([^)\s]+)\)")


def claims_beside(report_text: str, rule: str, arms: set[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """The rule's claims (rows "<rule>: ..." against bptt, and rows about "(<rule>)" alone, e.g. Theorem 1),
    each beside the same claim for eprop, rflo and mdgl: (header, rows) with "verdict (p)" cells. `arms`: the
    arms this study ran or reused; a row about an arm outside them (the plan's bptt_early, which study.py
    never runs) is left out rather than shown as "not tested"."""
    keyed: dict[tuple[str, str, str], dict[str, str]] = {}
    for row in claim_rows(report_text, rule):
        claim = row["claim"]
        for who in (rule, *COMPARED):
            if claim.startswith(f"{who}: "):
                template = claim[len(who) + 2:]
            elif f"({who})" in claim:
                template = claim.replace(f"({who})", "(the rule)")
            else:
                continue
            stat = row.get("statistic", "")
            test = row.get("test") or (stat.split(" = ")[0] if " = " in stat else "")  # the test's name
            key = (template, test, row["task"])
            p = row.get("p")
            keyed.setdefault(key, {})[who] = row["verdict"] + (f" (p {p})" if p not in (None, "", "n/a") else "")
            break
    def never_run(cells: dict[str, str]) -> bool:
        missing = {m.group(1) for c in cells.values() for m in [NOT_RUN.match(c)] if m}
        return arms is not None and bool(missing) and not missing & arms
    out = [[claim + (f" [{test}]" if test else ""), task]
           + [v.get(w, "—") for w in (rule, *COMPARED)]
           for (claim, test, task), v in keyed.items() if rule in v and not never_run(v)]
    return ["claim", "task", rule, *COMPARED], out


# ------------------------------------------------------------------------------------------- main
def main(argv: list[str]) -> int:
    start = time.time()
    try:
        request = parse(argv)
        check(request)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    children.reset()
    previous = children.install()  # SIGINT / SIGTERM: the sweeps stop their jobs (checkpoints), one line, 130
    try:
        return study(request, start)
    except (KeyboardInterrupt, children.Stopped):
        children.stop_all()
        again = " ".join(shlex.quote(a) for a in ["python", "study.py", *[a for a in argv if not a.startswith("study.out=")],
                                                   f"study.out={request.out}"])
        print(f"\nstudy interrupted (its runs stopped with checkpoints); the same command resumes it: {again}",
              file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:
        children.restore(previous)


def study(request: StudyRequest, start: float) -> int:
    """Conformance, the runs, the report (main's body, after the checks)."""
    timings = {}
    ok, table_text = conformance(request)
    timings["conformance"] = time.time() - start
    if not ok:
        return 1
    (request.out / "logs").mkdir(parents=True, exist_ok=True)
    import json
    (request.out / MARKER).write_text(json.dumps(identity(request), indent=1) + "\n")
    (request.out / "conformance.md").write_text(f"# Conformance of rule `{request.rule}`\n\n{table_text}\n")
    lock = threading.Lock()

    def log(line: str) -> None:
        with lock:
            print(line, flush=True)
            with open(request.out / "study.log", "a", encoding="utf-8") as f:
                f.write(line + "\n")

    s = request.study
    log(f"study of '{request.rule}' on {', '.join(s['tasks'])}, seeds 0-{len(request.seeds) - 1}"
        + (" (smoke: toy sizes)" if request.smoke else "") + f" -> {request.out}"
        + (" (resumed: finished runs kept, interrupted ones resume)" if request.resume else ""))
    t = time.time()
    baselines = plan_baselines(request, log)
    timings["reuse check"] = time.time() - t
    t = time.time()
    problems = run_lanes(request, baselines, log)
    timings["runs"] = time.time() - t
    if children.stopping():
        raise children.Stopped()
    from rulescape.study.baseline_reuse import write_manifest
    write_manifest(request.out)  # what a later study may reuse from here, as written (study/baseline_reuse.py)
    if problems:  # a sweep that could not start (its jobs' own failures are records, not problems)
        print("error: " + "; ".join(problems), file=sys.stderr)
        return 1
    t = time.time()
    code, report_path = report(request)
    timings["report"] = time.time() - t
    if code != 0:
        print(f"error: report.py exited {code} (see {request.out / 'logs' / 'report.log'})", file=sys.stderr)
        return 1
    ran = {request.rule, *s["baselines"], *(CONTROLS[c][0].format(rule=request.rule) for c in s["controls"])}
    header, rows = claims_beside(report_path.read_text(encoding="utf-8"), request.rule, ran)
    from analysis.markdown import table
    claims = table(header, rows) if rows else (f"(no claim rows name '{request.rule}': report.py's claims do "
                                               "not cover this rule yet)")
    if request.smoke:  # toy-size verdicts must not read like findings, printed or written
        claims = f"{SMOKE_BANNER}\n\n{claims}"
    (request.out / f"claims_{request.rule}.md").write_text(f"# Claims of `{request.rule}` against bptt, beside "
                                                           f"{', '.join(COMPARED)}\n\n{claims}\n")
    total = time.time() - start
    log(f"\nclaims of '{request.rule}' against bptt, beside {', '.join(COMPARED)}:\n{claims}\n")
    log("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + f"; total {total:.0f} s")
    log(f"output: {request.out}")
    log(f"report: {report_path}")
    return 0
