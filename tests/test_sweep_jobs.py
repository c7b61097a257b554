"""A sweep survives its jobs (rulescape/sweep/launcher.py, issue #26): a job process killed with SIGKILL gets a
"failed" record naming the signal while the others finish with theirs and later jobs still run; SIGTERM
to the sweep stops its jobs as interrupted and resumable, prints how to resume, and leaves no process
behind. Real processes at experiment=smoke size; slow (each sweep is a few Python start-ups)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow
LONG = 100000  # steps: a job that runs until it is killed or stopped


def start_sweep(sweep: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.Popen([sys.executable, "train.py", "-m", "experiment=smoke", "logger=csv", "callbacks=none",
                             "checkpoint_every=5", *args, f"hydra.sweep.dir={sweep}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def job_pids(sweep: Path, timeout: float = 120) -> dict[int, int]:
    """{job number: pid} of the jobs started so far, from launcher.log."""
    text = (sweep / "launcher.log").read_text() if (sweep / "launcher.log").exists() else ""
    return {int(n): int(p) for n, p in re.findall(r"#(\d+) started: pid (\d+)", text)}


def wait_until(condition, timeout: float = 180, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def training(job_dir: Path) -> bool:
    """The job is in its training loop: it saved its first checkpoint."""
    return (job_dir / "checkpoints" / "last.ckpt").exists()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def records(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}


def test_a_killed_job_gets_a_record_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    # job 0 runs until killed, job 1 is short, job 2 starts only when a slot frees (n_jobs=2)
    proc = start_sweep(sweep, f"trainer.max_steps={LONG},20,21", "hydra.launcher.n_jobs=2")
    victim = sweep / f"0_bptt_dms_seed0"
    wait_until(lambda: 0 in job_pids(sweep) and training(victim), what="job 0 to train")
    os.kill(job_pids(sweep)[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    got = records(sweep)
    assert len(got) == 3, sorted(got)
    dead = got[victim.name]
    assert dead["status"] == "failed" and "SIGKILL" in dead["error"], dead
    assert f"ckpt_path={victim / 'checkpoints' / 'last.ckpt'}" in dead["error"]  # how to resume it
    assert dead["config"]["trainer"]["max_steps"] == LONG  # the job's own config
    others = [r for name, r in got.items() if name != victim.name]
    assert [r["status"] for r in others] == ["ok", "ok"] and sorted(r["steps"] for r in others) == [20, 21]
    assert "3 jobs: 2 ok, 1 failed" in (sweep / "sweep_summary.txt").read_text()
    assert "Joblib" not in out + err and "#0 :" not in out + err  # the launcher's lines are in launcher.log


def test_a_signal_to_the_sweep_stops_its_jobs_as_interrupted_and_resumable(tmp_path):
    sweep = tmp_path / "sweep"
    proc = start_sweep(sweep, f"seed=0,1,2", f"trainer.max_steps={LONG}", "hydra.launcher.n_jobs=2")
    dirs = [sweep / f"{i}_bptt_dms_seed{i}" for i in range(3)]
    wait_until(lambda: len(job_pids(sweep)) == 2 and all(training(d) for d in dirs[:2]), what="two jobs to train")
    pids = job_pids(sweep)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert not any(alive(pid) for pid in pids.values()), "a job outlived its sweep"
    got = records(sweep)
    assert sorted(got) == [d.name for d in dirs[:2]]  # job 2 never started
    for d in dirs[:2]:
        assert got[d.name]["status"] == "interrupted" and got[d.name]["steps"] > 0
    resume = (sweep / "resume.sh").read_text().splitlines()[2:]
    assert len(resume) == 3 and all(line.startswith("python train.py ") for line in resume)
    for d, line in zip(dirs, resume):
        assert f"hydra.run.dir={d}" in line and ("ckpt_path=" in line) == (d != dirs[2])
        assert line in out  # printed too
    # the printed command resumes the job where it stopped
    args = line_args(resume[0]) + ["trainer.max_steps=" + str(got[dirs[0].name]["steps"] + 5)]
    args = [a for a in args if not a.startswith("trainer.max_steps=") or a == args[-1]]
    again = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
                           timeout=300, env={**os.environ, "WANDB_MODE": "offline"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((dirs[0] / "summary.json").read_text())["steps"] == got[dirs[0].name]["steps"] + 5


def line_args(line: str) -> list[str]:
    import shlex
    return shlex.split(line)[2:]


STUDY = ["experiment=study_dms", "arm=eprop,bptt_matched", "seed=0", "trainer.max_steps=20", "model.hidden_size=16",
         "task.train_size=64", "task.test_size=64", "task.batch_size=16", "eval_every=10", "curvature.every_n_steps=10",
         "curvature.batch_size=32", "alignment.every_n_steps=5", "stop_check_every=10", "logger=csv"]
VARYING = ("wall_time_s", "timing", "versions")  # when and how fast, not what


def comparable(record: dict, sweep: Path) -> dict:
    record = {k: v for k, v in record.items() if k not in VARYING}
    return json.loads(json.dumps(record).replace(str(sweep), "<sweep>"))  # rule.rho_from names the sweep dir


def test_the_cluster_launcher_gives_the_same_records(tmp_path):
    """hydra/launcher=submitit_local (submitit's local executor: the code path SLURM uses, jobs at the same
    time) runs a study sweep (an e-prop arm and its step-matched control, which waits for the e-prop record)
    to the same records as the default launcher."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    got = {}
    for launcher in ("submitit_local", "rulescape"):
        sweep = tmp_path / launcher
        result = subprocess.run([sys.executable, "train.py", "-m", *STUDY, f"hydra/launcher={launcher}",
                                 f"hydra.sweep.dir={sweep}"], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        got[launcher] = {name: comparable(r, sweep) for name, r in records(sweep).items()}
    assert sorted(got["rulescape"]) == ["bptt_matched_dms_seed0", "eprop_dms_seed0"]
    assert all(r["status"] == "ok" for r in got["rulescape"].values())
    assert got["rulescape"]["bptt_matched_dms_seed0"]["config"]["rule"]["rho_from"] == "<sweep>/eprop_dms_seed0"
    assert got["submitit_local"] == got["rulescape"]


def test_the_same_sweep_run_again_skips_its_finished_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    first = start_sweep(sweep, "seed=0,1", "trainer.max_steps=20")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    before = {p: p.stat().st_mtime_ns for p in sweep.glob("*/summary.json")}
    assert len(before) == 2
    again = start_sweep(sweep, "seed=0,1,2", "trainer.max_steps=20")  # one more seed
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-3000:]
    assert "2 of 3 jobs already finished in this directory" in out
    assert {p: p.stat().st_mtime_ns for p in before} == before  # the finished records were left alone
    got = records(sweep)
    assert sorted(r["seed"] for r in got.values()) == [0, 1, 2] and all(r["status"] == "ok" for r in got.values())
