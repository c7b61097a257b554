"""The same sweep run again into its directory (rulescape/launcher.py): which jobs it skips, which it resumes,
which it runs, decided from each job directory's record and Hydra's overrides.yaml. The real sweep is in
tests/test_sweep_jobs.py (slow)."""
from __future__ import annotations

import json
from pathlib import Path

from rulescape.launcher import Job, JobLauncher

OVERRIDES = ["arm=eprop", "seed=3"]


def job_dir(root: Path, name: str, status: str | None, overrides=OVERRIDES, ckpt: bool = False) -> Job:
    out = root / name
    (out / ".hydra").mkdir(parents=True)
    (out / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if status is not None:
        (out / "summary.json").write_text(json.dumps({"status": status}))
    if ckpt:
        (out / "checkpoints").mkdir()
        (out / "checkpoints" / "last.ckpt").write_bytes(b"x")
    return Job(num=len(list(root.iterdir())), overrides=list(OVERRIDES), out_dir=out, config={})


def test_finished_jobs_are_skipped_and_interrupted_ones_resume(tmp_path, capsys):
    ok = job_dir(tmp_path, "ok", "ok")
    diverged = job_dir(tmp_path, "diverged", "diverged")
    resumed = job_dir(tmp_path, "interrupted", "interrupted", ckpt=True)
    fresh = job_dir(tmp_path, "interrupted_at_start", "interrupted")  # no checkpoint: runs from the start
    failed = job_dir(tmp_path, "failed", "failed")  # refused before it trained: runs again
    killed = job_dir(tmp_path, "killed", "failed", ckpt=True)  # kill -9 mid-run: resumes its checkpoint
    other = job_dir(tmp_path, "other_command", "ok", overrides=["arm=eprop", "seed=4"])
    never = job_dir(tmp_path, "never", None)
    launcher = JobLauncher()
    launcher.log_path = tmp_path / "launcher.log"
    skipped = launcher.take_up([ok, diverged, resumed, fresh, failed, killed, other, never])
    assert skipped == [ok, diverged] and [j.outcome for j in skipped] == ["ok", "diverged"]
    for job in (resumed, killed):
        assert job.overrides == OVERRIDES + [f"ckpt_path={job.out_dir / 'checkpoints' / 'last.ckpt'}"]
    for job in (fresh, failed, other, never):
        assert job.overrides == OVERRIDES and job.outcome is None
    assert "2 of 8 jobs already finished in this directory (skipped, records kept); 2 resume" in capsys.readouterr().out


def test_a_resumed_job_that_finished_is_skipped_next_time(tmp_path):
    """Its overrides.yaml then carries ckpt_path=, which is not part of the job's identity."""
    job = job_dir(tmp_path, "resumed", "ok", overrides=OVERRIDES + ["ckpt_path=/x/last.ckpt"])
    launcher = JobLauncher()
    launcher.log_path = tmp_path / "launcher.log"
    assert launcher.take_up([job]) == [job]


def test_preload_imports_the_training_code_without_starting_cuda_or_threads():
    """What the sweep's process imports before it forks its jobs: the training code, and nothing a fork must
    not inherit (a CUDA context)."""
    import subprocess
    import sys
    code = ("import sys; from rulescape.launcher import preload_training_code; preload_training_code(); "
            "import torch; print('rulescape.run' in sys.modules, torch.cuda.is_initialized())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.split() == ["True", "False"], out.stderr[-2000:]
