"""A quiet console: the default training command prints no third-party warning or banner and ends with its
result line and the record's path; train.log keeps what the console leaves out; RULESCAPE_VERBOSE=1 shows it;
a sweep ends with its summary table."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import warnings

from conftest import ROOT
from rulescape.run.quiet import ConsoleFilter, expected_warning
from rulescape.sweep.sweep_summary import summary_table


def clean_env(home) -> dict:
    """A new user's environment: no WANDB_* variables, no credentials (HOME is an empty directory)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RULESCAPE_")) and k != "NETRC"}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"))
    return env


def console_lines(text: str) -> list[str]:
    """What a terminal shows, line by line (a progress bar redraws with carriage returns)."""
    return [line for line in re.split(r"[\r\n]+", text) if line.strip()]


def test_default_training_command_prints_no_warning_and_ends_with_result_and_record(tmp_path):
    home, run_dir = tmp_path / "home", tmp_path / "run"
    home.mkdir()
    # README's run command, with a short budget and a known run directory
    proc = subprocess.run([sys.executable, "train.py", "rule=rflo", "task=dms", "trainer.max_steps=20",
                           f"hydra.run.dir={run_dir}"], cwd=ROOT, env=clean_env(home),
                          capture_output=True, text=True, timeout=300)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console
    # piped, not a terminal: progress as whole lines, no carriage-return frames
    assert "\r" not in console
    assert "step 20/20" in proc.stdout and proc.stdout.count("step ") <= 12
    # wandb: one line at the start (mode, why, folder), the sync command of the offline run at the end
    first = proc.stdout.splitlines()[0]
    assert first.startswith("wandb: offline, no API key found") and str(run_dir / "wandb") in first, first
    sync = [line for line in proc.stdout.splitlines() if line.startswith("wandb: offline run saved")]
    assert len(sync) == 1 and proc.stdout.count("wandb:") == 2, proc.stdout
    folder = sync[0].split("wandb sync ", 1)[1]
    assert folder.startswith(str(run_dir / "wandb" / "offline-run-")) and os.path.isdir(folder)
    lines = console_lines(console)
    noisy = [line for line in lines if "warning" in line.lower() or "available:" in line]
    assert not noisy, noisy
    out = console_lines(proc.stdout)
    assert out[-2].startswith("[ok] rule=rflo task=dms seed=0 steps=20 "), out[-2:]
    assert out[-1].strip() == f"record: {run_dir}/summary.json"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "ok"
    # the default logger went offline on its own (no key anywhere) and kept its run id for a resume
    assert list((run_dir / "wandb").glob("offline-run-*"))
    assert (run_dir / "wandb_run_id").read_text().strip()
    # what the console left out is in train.log
    log = (run_dir / "train.log").read_text()
    assert "GPU available" in log


def test_console_filter_drops_banners_and_expected_warnings_only():
    keep = ConsoleFilter().filter

    def record(name, level, message):
        return logging.LogRecord(name, level, __file__, 1, message, None, None)

    assert not keep(record("pytorch_lightning.utilities.rank_zero", logging.INFO, "GPU available: False"))
    assert not keep(record("py.warnings", logging.WARNING, "x.py:1: UserWarning: Using ModelCheckpoint with "
                           "manual optimization and every_n_train_steps, but no pre-optimization state"))
    assert keep(record("py.warnings", logging.WARNING, "x.py:1: UserWarning: something new went wrong"))
    assert keep(record("rulescape", logging.WARNING, "interrupted"))
    assert expected_warning("You are using `torch.load` with `weights_only=False`")


def test_verbose_environment_variable_turns_the_filter_off(monkeypatch):
    from rulescape.run import quiet
    monkeypatch.setenv("RULESCAPE_VERBOSE", "1")
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings():
            quiet.quiet_third_party()
        assert not handler.filters
    finally:
        root.removeHandler(handler)


def test_sweep_summary_counts_statuses_and_averages_per_rule(tmp_path):
    runs = [("0_bptt", "bptt", "ok", 0.2, 5.0, 1.0), ("1_bptt", "bptt", "ok", 0.4, 7.0, 1.0),
            ("2_eprop", "eprop", "diverged", None, None, None), ("3_eprop", "eprop", "ok", 0.3, 100.0, 0.25)]
    for name, rule, status, gap, lam, rho in runs:
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(
            {"status": status, "rule": rule, "task": "dms", "gap_acc": gap, "lambda_max": lam, "rho_mean": rho,
             "error": "loss is NaN at step 3" if status == "diverged" else None}))
    table = summary_table(tmp_path)
    assert "4 jobs: 3 ok, 1 diverged" in table
    bptt = next(line for line in table.splitlines() if line.strip().startswith("bptt"))
    assert "2 / 2" in bptt and "0.3 ± 0.14" in bptt and "6 ± 1.4" in bptt and "1 ± 0" in bptt
    eprop = next(line for line in table.splitlines() if line.strip().startswith("eprop"))
    assert "1 / 2" in eprop and "100 ± 0" in eprop
    assert "diverged: 2_eprop (loss is NaN at step 3)" in table
    assert f"python report.py {tmp_path}" in table


def test_a_resumed_progress_bar_shows_its_total(tmp_path, monkeypatch, capsys):
    """On a terminal the bar counts optimizer steps against max_steps: a run resumed at step 3 of 6 reads
    `6/6` at its end, never `?` for the total."""
    from conftest import compose_config
    from rulescape.run import quiet
    from rulescape.run.training import train
    monkeypatch.setattr(quiet, "on_terminal", lambda stream=None: True)
    quick = ["logger=none", "callbacks=none", "task.train_size=32", "task.test_size=32", "task.batch_size=16",
             "model.hidden_size=8", "eval_every=3"]
    train(compose_config(quick + ["trainer.max_steps=3"]), tmp_path)
    capsys.readouterr()
    summary = train(compose_config(quick + ["trainer.max_steps=6", f"ckpt_path={tmp_path}/checkpoints/last.ckpt"]),
                    tmp_path)
    assert summary["status"] == "ok" and summary["steps"] == 6
    bar = capsys.readouterr().out
    assert "6/6" in bar and "/?" not in bar, bar[-500:]


def test_line_progress_prints_whole_lines_every_tenth_of_the_run(tmp_path, monkeypatch, capsys):
    from conftest import compose_config
    from rulescape.run import quiet
    from rulescape.run.training import train
    monkeypatch.setattr(quiet, "on_terminal", lambda stream=None: False)
    train(compose_config(["logger=none", "callbacks=none", "task.train_size=32", "task.test_size=32",
                          "task.batch_size=16", "model.hidden_size=8", "trainer.max_steps=20"]), tmp_path)
    out = capsys.readouterr().out
    steps = [line.split()[1] for line in out.splitlines() if line.startswith("step ")]
    assert steps == [f"{k}/20" for k in range(2, 21, 2)] and "\r" not in out


def test_wandb_start_line_says_mode_why_and_where(tmp_path, monkeypatch):
    from rulescape.run.loggers import wandb_start_line
    monkeypatch.delenv("WANDB_MODE", raising=False)
    line = wandb_start_line("offline", "auto", "rulescape", tmp_path)
    assert line.startswith("wandb: offline, no API key found") and str(tmp_path / "wandb") in line
    assert "wandb sync" in line and "\n" not in line
    assert wandb_start_line("online", "auto", "proj", tmp_path).startswith("wandb: online, logged in; project proj")
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert "WANDB_MODE=offline" in wandb_start_line("offline", "auto", "rulescape", tmp_path)
