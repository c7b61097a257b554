"""The same sweep run again into its directory (rulescape/sweep/launcher.py): which jobs it skips, which it resumes,
which it runs and which it refuses, decided from each job directory's record and that record's own config
(never Hydra's .hydra/overrides.yaml, which a refused job's Hydra would rewrite). The real sweep is in
tests/test_sweep_jobs.py (slow) and tests/test_trust3.py."""
from __future__ import annotations

import json
from pathlib import Path

from hydra import compose, initialize_config_dir

from conftest import ROOT
from rulescape.sweep.launcher import Job, JobLauncher, plain_config, record_config

OVERRIDES = ["arm=eprop", "seed=3", "logger=none", "hydra.sweep.dir=multirun/rerun"]  # a re-run names its sweep dir


def composed(overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def job_dir(root: Path, name: str, status: str | None, recorded=OVERRIDES, ckpt: bool = False) -> Job:
    """A job with OVERRIDES whose directory holds a record made under `recorded` (and a checkpoint)."""
    out = root / name
    out.mkdir(parents=True)
    if status is not None:
        made = Job(0, list(recorded), out, {}, composed(recorded))
        (out / "summary.json").write_text(json.dumps({"status": status, "config": record_config(made)}))
    if ckpt:
        (out / "checkpoints").mkdir()
        (out / "checkpoints" / "last.ckpt").write_bytes(b"x")
    cfg = composed(OVERRIDES)
    return Job(num=len(list(root.iterdir())), overrides=list(OVERRIDES), out_dir=out, config=plain_config(cfg),
               cfg=cfg)


def test_finished_jobs_are_skipped_interrupted_ones_resume_and_other_runs_are_refused(tmp_path, capsys):
    ok = job_dir(tmp_path, "ok", "ok")
    diverged = job_dir(tmp_path, "diverged", "diverged")
    resumed = job_dir(tmp_path, "interrupted", "interrupted", ckpt=True)
    fresh = job_dir(tmp_path, "interrupted_at_start", "interrupted")  # no checkpoint: runs from the start
    failed = job_dir(tmp_path, "failed", "failed")  # refused before it trained: runs again
    killed = job_dir(tmp_path, "killed", "failed", ckpt=True)  # kill -9 mid-run: resumes its checkpoint
    other = job_dir(tmp_path, "other_command", "ok", recorded=["arm=eprop", "seed=4", "logger=none", "hydra.sweep.dir=multirun/rerun"])
    other_ckpt = job_dir(tmp_path, "other_ckpt", "interrupted", recorded=["arm=eprop", "seed=4", "hydra.sweep.dir=multirun/rerun"], ckpt=True)
    never = job_dir(tmp_path, "never", None)
    launcher = JobLauncher()
    launcher.log_path = tmp_path / "launcher.log"
    skipped, refused = launcher.take_up([ok, diverged, resumed, fresh, failed, killed, other, other_ckpt, never])
    assert skipped == [ok, diverged] and [j.outcome for j in skipped] == ["ok", "diverged"]
    assert refused == [other, other_ckpt] and {j.outcome for j in refused} == {"refused"}
    for job in (resumed, killed):
        assert job.overrides == OVERRIDES + [f"ckpt_path={job.out_dir / 'checkpoints' / 'last.ckpt'}"]
    for job in (fresh, failed, never):
        assert job.overrides == OVERRIDES and job.outcome is None
    out = capsys.readouterr().out
    assert "2 of 9 jobs already finished in this directory (skipped, records kept); 2 resume" in out
    assert "[refused] job" in out and "seed=4, this job seed=3" in out


def test_a_resumed_job_that_finished_is_skipped_next_time(tmp_path):
    """Its record's config then carries ckpt_path=, which is not part of the job's identity."""
    job = job_dir(tmp_path, "resumed", "ok", recorded=OVERRIDES + ["ckpt_path=/x/last.ckpt"])
    launcher = JobLauncher()
    launcher.log_path = tmp_path / "launcher.log"
    assert launcher.take_up([job]) == ([job], [])


def test_preload_imports_the_training_code_without_starting_cuda_or_threads():
    """What the sweep's process imports before it forks its jobs: the training code, and nothing a fork must
    not inherit (a CUDA context)."""
    import subprocess
    import sys
    code = ("import sys; from rulescape.sweep.launcher import preload_training_code; preload_training_code(); "
            "import torch; print('rulescape.run.training' in sys.modules, torch.cuda.is_initialized())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.split() == ["True", "False"], out.stderr[-2000:]
