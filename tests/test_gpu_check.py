"""tools/gpu_check.sh as far as a CPU machine can take it: it parses, says plainly that there is no GPU and
exits 0; with GPU_CHECK_ON_CPU=1 (slow) every step runs on the CPU at toy sizes and the report is written."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

SCRIPT = ROOT / "tools" / "gpu_check.sh"


def run(env_extra: dict, *args, timeout=60):
    env = {**os.environ, "PYTHON": sys.executable, **env_extra}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the script would measure it")
def test_without_a_gpu_it_says_so_and_exits_cleanly(tmp_path):
    done = run({}, str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gpu_check: no CUDA GPU visible")
    assert not (tmp_path / "out").exists()  # nothing measured, nothing written


@pytest.mark.slow
def test_every_step_runs_on_the_cpu_at_toy_size(tmp_path):
    out = tmp_path / "out"
    done = run({"GPU_CHECK_ON_CPU": "1"}, str(out), timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (out / "gpu_check.md").read_text()
    assert "| bptt, ms per step" in report and "| eprop, ms per step" in report
    assert "status ok" in report and "1 of 1 ok" in report
    assert "n/a" not in report, report
