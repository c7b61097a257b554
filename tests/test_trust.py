"""Trust (issue #13): every bad command line is one line with exit 2 and changes no earlier record or
checkpoint; checkpoints cannot run code; records are never lost. Most command lines are checked in-process
(train.py's preflight, then train() as train.py's main calls it); a few end to end."""
from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rulescape.run.training as run_module
from callbacks.run_record import write_summary
from conftest import ROOT, compose_config
from rulescape.errors import EXIT_CONFIG, ConfigError, RunDirError
from rulescape.run.checkpoint import atomic_save
from rulescape.run.cli import preflight
from rulescape.run.training import STATUS_EXIT, run_dir_lock, train

QUICK = ["logger=none", "trainer.enable_progress_bar=false", "trainer.max_steps=6", "eval_every=3",
         "checkpoint_every=0", "task.train_size=64", "task.test_size=64", "task.batch_size=16",
         "model.hidden_size=16", "curvature.batch_size=16", "curvature.every_n_steps=3",
         "alignment.every_n_steps=3"]


class Evil:
    """Unpickling this creates the file `marker`: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A finished run (whose record and checkpoint must never change), and some bad files."""
    base = tmp_path_factory.mktemp("trust")
    done = base / "done"
    summary = train(compose_config(QUICK), done)
    assert summary["status"] == "ok"
    (base / "corrupt.ckpt").write_bytes(b"\x80\x02 not a checkpoint at all")
    torch.save({"state_dict": {}, "x": Evil(base / "pwned")}, base / "evil.ckpt")
    (base / "bad_rho").mkdir()
    (base / "bad_rho" / "summary.json").write_text("{not json")
    (base / "afile").write_text("a file, not a directory")
    return {"base": base, "done": done, "ckpt": done / "checkpoints" / "last.ckpt"}


def fingerprint(directory: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (directory / "summary.json", directory / "checkpoints" / "last.ckpt")}


def attempt(argv: list[str], run_dir: Path) -> tuple[int, str]:
    """What `python train.py *argv hydra.run.dir=run_dir` does, in this process: (exit code, stderr)."""
    argv = [*argv, f"hydra.run.dir={run_dir}"] if not any(a.startswith("hydra.run.dir=") for a in argv) else argv
    problem = preflight(argv)
    if problem:
        return EXIT_CONFIG, problem
    try:
        summary = train(compose_config([a for a in argv if not a.startswith("hydra.")]), run_dir)
    except ConfigError as err:
        return EXIT_CONFIG, f"error: {err}"
    return STATUS_EXIT[summary["status"]], ""


# (command line, words the one error line must contain). {done}: the finished run's directory, {ckpt}: its
# last.ckpt, {base}: a folder with corrupt.ckpt, evil.ckpt, bad_rho/ (a corrupt summary.json), afile.
BAD = [
    # the tracebacks
    (["rul=eprop"], ["'rul'"]),
    (["foo=1", "model.hidden_size=8"], ["'foo'"]),
    (["rule=bptt,eprop"], ["rule=bptt,eprop", "-m"]),
    (["+optimizer.learning_rate=5"], ["optimizer.learning_rate"]),
    (["optimizer.momentum=-1"], ["optimizer.momentum"]),
    (["+trainer.precision=bogus"], ["trainer", "precision"]),
    (["logger.mode=bogus"], ["logger.mode"]),
    (["hydra.run.dir={base}/afile/run"], ["hydra.run.dir", "afile"]),
    (["model.hidden_size=1000000000"], ["model.hidden_size"]),
    (["trainer=ddp", "trainer.accelerator=cpu", "trainer.strategy=ddp_spawn", "trainer.devices=3"],
     ["task.batch_size=16", "trainer.devices=3"]),
    # the silent acceptances
    (["+foo=1"], ["'foo'"]),
    (["float64=maybe"], ["float64"]),
    (["model.dale=maybe"], ["model.dale"]),
    (["rule=bptt_scaled", "rule.rho=-3"], ["rule.rho"]),
    (["task.batch_size=32", "task.train_size=16"], ["task.batch_size=32", "task.train_size=16"]),
    (["task=pattern", "stop_at_test_acc=0.5"], ["stop_at_test_acc", "pattern"]),
    # errors that named neither key nor file
    (["rule=bptt_scaled", "rule.rho_from={base}/bad_rho"], ["rule.rho_from", "summary.json"]),
    (["seed=99999999999"], ["seed=99999999999"]),
    (["task=nosuch"], ["task", "nosuch"]),
    # resume that would change the run's meaning, and a mistaken resume into a finished run
    (["ckpt_path={ckpt}", "optimizer.lr=0.5", "hydra.run.dir={done}"], ["optimizer.lr"]),
    (["ckpt_path={ckpt}", "seed=5", "hydra.run.dir={done}"], ["seed=0", "seed=5"]),
    (["ckpt_path={ckpt}", "rule=eprop", "hydra.run.dir={done}"], ["rule.name"]),
    (["ckpt_path={ckpt}", "trainer.max_steps=2"], ["trainer.max_steps=2", "step 6"]),
    (["ckpt_path={ckpt}", "model.noise_std=0.1"], ["model.noise_std"]),
    (["hydra.run.dir={done}"], ["run directory", "already holds"]),
    # checkpoints that are not safe or not ours
    (["ckpt_path={base}/evil.ckpt"], ["evil.ckpt", "refused"]),
    (["ckpt_path={base}/corrupt.ckpt"], ["corrupt.ckpt"]),
    (["ckpt_path={base}/nothing.ckpt"], ["nothing.ckpt", "no such file"]),
    # more of our own
    (["model.hiden_size=3"], ["model.hiden_size"]),
    (["+trainer.bogus=1"], ["trainer.bogus"]),
    (["rule=nosuch"], ["rule", "nosuch"]),
    (["logger=nosuch"], ["logger", "nosuch"]),
    (["optimizer.lr=fast"], ["optimizer.lr"]),
    (["optimizer=adam", "optimizer.betas=fast"], ["optimizer.betas"]),
    (["scheduler=step_decay", "scheduler.gamma=x"], ["scheduler.gamma"]),
    (["model.hidden_size=12.5"], ["model.hidden_size"]),
    (["model.activation=sigmoid"], ["model.activation"]),
    (["trainer.max_steps=0"], ["trainer.max_steps"]),
    (["checkpoint_every=often"], ["checkpoint_every"]),
    (["eval_every=-1"], ["eval_every"]),
    (["threads=-2"], ["threads"]),
    (["task.noise=-1"], ["task.noise"]),
    (["callbacks.enabled=[nosuch]"], ["callbacks.enabled", "nosuch"]),
    (["stop_at_train_acc=0.5", "stop_at_test_acc=0.5"], ["at most one stop target", "stop_at_train_acc", "stop_at_test_acc"]),
    (["task=pattern", "stop_at_train_acc=0.5"], ["stop_at_train_acc=0.5", "no accuracy", "stop_at_train_loss"]),
    (["rule=bptt_scaled", "rule.rho=0.5", "rule.rho_mode=sometimes"], ["rule.rho_mode", "mean", "history"]),
    (["rule=rflo", "rule.feedback_norm=bogus"], ["rule.feedback_norm", "readout", "fixed"]),
    (["rule=rflo", "rule.feedback_scale=none_of_that"], ["rule.feedback_scale"]),
    (["rule=tbptt", "rule.window=0"], ["rule.window"]),
    (["+rule.foo=1"], ["rule", "foo"]),
    (["+task.foo=1"], ["task", "foo"]),
    (["clip_norm=-1"], ["clip_norm"]),
    (["model.hidden_size=[1"], ["model.hidden_size"]),
]


@pytest.mark.parametrize("argv,words", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_command_line_is_one_line_exit_2_and_changes_nothing(world, tmp_path, capfd, argv, words):
    fill = {"done": world["done"], "ckpt": world["ckpt"], "base": world["base"]}
    argv = [a.format(**fill) for a in argv]
    words = [w.format(**fill) for w in words]
    run_dir = next((Path(a.split("=", 1)[1]) for a in argv if a.startswith("hydra.run.dir=")), tmp_path / "run")
    before = fingerprint(world["done"])
    capfd.readouterr()

    code, line = attempt(QUICK + argv, run_dir)

    output = capfd.readouterr()
    assert code == EXIT_CONFIG, line
    assert "\n" not in line and line.startswith("error: "), line
    for word in words:
        assert word in line, line
    assert "Traceback" not in output.out + output.err
    assert fingerprint(world["done"]) == before, "an earlier record or checkpoint changed"
    assert not (world["base"] / "pwned").exists(), "a checkpoint ran code"
    if run_dir.is_dir() and run_dir != world["done"]:
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "failed" and summary["error"] == line.removeprefix("error: ")
        assert not (run_dir / "checkpoints").exists(), "nothing should have run"


def cli(*args):
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.slow  # two processes importing torch: ~25 s each on a busy 2-core machine
def test_end_to_end_bad_lines_exit_2_with_one_line(tmp_path):
    """Two command lines through train.py itself: one refused before Hydra runs, one by the Trainer."""
    result = cli("rul=eprop", f"hydra.run.dir={tmp_path / 'a'}")
    assert result.returncode == EXIT_CONFIG and result.stderr.count("\n") == 1, result.stderr
    assert "'rul'" in result.stderr and not (tmp_path / "a").exists()
    result = cli(*QUICK, "+trainer.precision=bogus", f"hydra.run.dir={tmp_path / 'b'}")
    assert result.returncode == EXIT_CONFIG and result.stderr.count("\n") == 1, result.stderr
    assert "precision" in result.stderr and "Traceback" not in result.stdout + result.stderr
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["status"] == "failed"


def test_a_checkpoint_that_would_run_code_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save(Evil(marker), evil)
    with pytest.raises(ConfigError, match="refused"):
        train(compose_config(QUICK + [f"ckpt_path={evil}"]), tmp_path / "a")
    assert not marker.exists()
    # the payload hidden in an extra key of a real last.ckpt
    train(compose_config(QUICK), tmp_path / "real")
    real = torch.load(tmp_path / "real" / "checkpoints" / "last.ckpt", weights_only=True)
    real["extra"] = Evil(marker)
    torch.save(real, tmp_path / "laced.ckpt")
    with pytest.raises(ConfigError, match="refused"):
        train(compose_config(QUICK + [f"ckpt_path={tmp_path / 'laced.ckpt'}"]), tmp_path / "b")
    assert not marker.exists()


def test_final_state_is_checkpointed_whatever_checkpoint_every(tmp_path):
    summary = train(compose_config(QUICK + ["trainer.max_steps=7", "checkpoint_every=5"]), tmp_path)
    assert summary["status"] == "ok" and summary["steps"] == 7
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 7


def test_finished_record_survives_a_mistaken_resume_and_a_new_run_in_its_directory(world):
    before = fingerprint(world["done"])
    with pytest.raises(ConfigError, match="rule.name"):
        train(compose_config(QUICK + ["rule=eprop", f"ckpt_path={world['ckpt']}"]), world["done"])
    with pytest.raises(RunDirError, match="already holds a run with status 'ok'"):
        train(compose_config(QUICK), world["done"])
    assert fingerprint(world["done"]) == before


def test_a_second_live_run_in_the_same_directory_is_refused(tmp_path):
    with run_dir_lock(tmp_path):  # a live run holds the directory
        with pytest.raises(RunDirError, match="in use by another live run"):
            train(compose_config(QUICK), tmp_path)
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "metrics.csv").exists()
    assert train(compose_config(QUICK), tmp_path)["status"] == "ok"  # free again once it ended


@pytest.mark.slow
def test_two_concurrent_processes_in_one_directory(tmp_path):
    """Two train.py processes started together into one directory: exactly one trains, the other is
    refused with one line and exit 2; the record is the trainer's."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    args = [sys.executable, "train.py", *QUICK, "trainer.max_steps=200", f"hydra.run.dir={tmp_path}"]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, EXIT_CONFIG], [0, 0]), results  # [0, 0]: the second started after the first ended
    if codes == [0, EXIT_CONFIG]:
        refused = next(err for code, err in results if code == EXIT_CONFIG)
        assert "already holds" in refused or "in use by another live run" in refused
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "ok"


class SigtermAt(run_module.pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            import signal
            os.kill(os.getpid(), signal.SIGTERM)


def interrupt_then_resume(tmp_path, monkeypatch, extra: list[str]) -> tuple[dict, dict, Path]:
    run = tmp_path / "run"
    build = run_module.build_callbacks
    monkeypatch.setattr(run_module, "build_callbacks", lambda cfg, out: build(cfg, out) + [SigtermAt(4)])
    part = train(compose_config(QUICK + extra), run)
    monkeypatch.setattr(run_module, "build_callbacks", build)
    assert part["status"] == "interrupted" and part["steps"] == 4
    resumed = train(compose_config(QUICK + extra + [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]), run)
    assert resumed["status"] == "ok" and resumed["steps"] == 6
    return part, resumed, run


def test_resume_into_its_own_directory_keeps_wall_time_and_prints_the_resume_command(tmp_path, monkeypatch,
                                                                                     caplog):
    part, resumed, run = interrupt_then_resume(tmp_path, monkeypatch, ["eval_every=2"])
    assert resumed["wall_time_s"] >= part["wall_time_s"]
    assert resumed["timing"]["loop_s"] >= part["timing"]["loop_s"] > 0  # the timing spans the resume, too
    for name, seconds in part["timing"]["measure_s"].items():
        assert resumed["timing"]["measure_s"][name] >= seconds
    assert 0 < resumed["timing"]["measure_share"] < 1
    assert resumed["config"]["eval_every"] == 2
    message = next(r.getMessage() for r in caplog.records if "resume with" in r.getMessage())
    assert part["error"] in message, "the message names the interruption as the record does"
    assert f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}" in message and f"hydra.run.dir={run}" in message


def test_metrics_csv_is_continuous_across_interrupt_and_resume(tmp_path, monkeypatch):
    _, _, run = interrupt_then_resume(tmp_path, monkeypatch, ["logger=csv"])
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    steps = sorted({int(float(r["step"])) for r in rows if any("loss" in k and r[k] for k in r)})
    assert steps and steps[0] <= 1 and steps[-1] >= 5, steps
    assert any(s < 4 for s in steps) and any(s > 4 for s in steps), steps  # both parts are there


def test_a_curvature_batch_larger_than_the_training_set_is_recorded_as_used(tmp_path):
    summary = train(compose_config(QUICK + ["trainer.max_steps=1", "curvature.batch_size=100"]), tmp_path)
    assert summary["status"] == "ok" and summary["config"]["curvature"]["batch_size"] == 64


def test_failed_writes_leave_the_previous_good_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    write_summary(path, {"status": "ok"})
    ckpt = tmp_path / "last.ckpt"
    atomic_save({"global_step": 1}, ckpt)

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        write_summary(path, {"status": "failed"})
    with pytest.raises(OSError):
        atomic_save({"global_step": 2}, ckpt)
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"status": "ok"}
    assert torch.load(ckpt, weights_only=True) == {"global_step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "summary.json"], "no temporary files left"


def test_malformed_records_are_listed_as_unreadable(tmp_path):
    from analysis.load import read_run
    path = tmp_path / "summary.json"
    for bad in ({"status": "ok", "steps": "many"}, {"status": ["ok"]}, {"status": "ok", "history": [1, 2]},
                {"status": "ok", "train_acc": "0.9"}, {"status": "ok", "config": "rule=bptt"}, [1, 2]):
        path.write_text(json.dumps(bad))
        run = read_run(path)
        assert run.status == "unreadable" and run.error, bad
