"""README's operational promises, one test each, through stable interfaces (the config, train(),
summary.json, the checkpoint, the rule registry, report.py). Each one is the catch for one or more
mutations in tools/mutations.py (`python tools/mutate.py`)."""
from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from conftest import ROOT, compose_config
from rulescape.errors import EXIT_CONFIG, ConfigError
from rulescape.run.training import STATUS_EXIT, build_module, group_params, train

# a few steps of a tiny network; every measurement at every other step
TINY = ["logger=none", "trainer.enable_progress_bar=false", "trainer.max_steps=4", "eval_every=2",
        "checkpoint_every=0", "task.train_size=16", "task.test_size=16", "task.batch_size=8",
        "model.hidden_size=10", "curvature.batch_size=8", "curvature.every_n_steps=2",
        "alignment.every_n_steps=1"]


def readme_section(title: str) -> str:
    """The section of README.md or of a docs/*.md page (README links them) under this heading."""
    text = next(t for t in (p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
                if title in t)
    start = text.index(title)
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


# --- statuses and exit codes -----------------------------------------------------------------------------

def test_exit_codes_are_the_readme_table():
    rows = re.findall(r"^\| (`\w+`|\(bad config\)) \| (\d+) \|", readme_section("## Statuses, exit codes"), re.M)
    table = {status.strip("`"): int(code) for status, code in rows}
    assert table == {"ok": 0, "(bad config)": 2, "diverged": 3, "interrupted": 130, "failed": 1}
    assert EXIT_CONFIG == table.pop("(bad config)")
    assert STATUS_EXIT == table  # train.py exits with STATUS_EXIT[status]


def clear_wandb_env(monkeypatch, home):
    """No WANDB_* variable, and a HOME (and netrc) without credentials."""
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("HOME", str(home))


# --- wandb: online when logged in, offline otherwise ------------------------------------------------------

def test_wandb_auto_mode_is_offline_without_credentials_and_online_with_a_key(tmp_path, monkeypatch):
    from rulescape.run.loggers import wandb_mode
    home = tmp_path / "home"
    home.mkdir()
    clear_wandb_env(monkeypatch, home)
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")  # fake: never used
    assert wandb_mode("auto") == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    netrc = home / ".netrc"  # `wandb login` stores the key here
    netrc.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    netrc.chmod(0o600)
    assert wandb_mode("auto") == "online"
    for explicit in ("online", "offline", "disabled"):  # logger.mode=... is obeyed as given
        assert wandb_mode(explicit) == explicit


def test_unexpected_error_is_failed_and_the_automatic_wandb_run_offline_and_closed(tmp_path, monkeypatch):
    """An error nobody anticipated: status failed (exit 1), the error in the record, and the wandb run
    (offline: no WANDB_* variable, no credentials) closed so the next job of a sweep starts clean."""
    import wandb
    from modules.lit_module import RuleModule
    clear_wandb_env(monkeypatch, tmp_path / "home")

    def planted(self, batch, batch_idx):
        raise RuntimeError("planted failure")
    monkeypatch.setattr(RuleModule, "training_step", planted)
    summary = train(compose_config(TINY + ["logger=wandb", "callbacks=none"]), tmp_path / "run")
    assert summary["status"] == "failed" and STATUS_EXIT[summary["status"]] == 1
    assert "RuntimeError: planted failure" in summary["error"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*")), "no credentials: wandb must run offline"
    assert wandb.run is None, "the failed run left its wandb run open"


# --- one tiny run with Dale's law, float64, step decay and logger=csv --------------------------------------

@pytest.fixture(scope="module")
def dale_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dale_run")
    cfg = compose_config(TINY + ["logger=csv", "model.dale=true", "float64=true", "scheduler=step_decay",
                                 "scheduler.step_size=1", "optimizer.lr=0.2", "rule=eprop"])
    summary = train(cfg, out)
    assert summary["status"] == "ok", summary["error"]
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    return cfg, out, summary, ckpt


def test_logger_csv_writes_the_metrics(dale_run):
    _, out, _, _ = dale_run
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("train/loss", "test/acc", "gap/acc", "curvature/lambda_max", "align/rho", "theory/stability"):
        assert key in header, header


def test_float64_end_to_end(dale_run):
    _, _, summary, ckpt = dale_run
    floats = {k: v.dtype for k, v in ckpt["state_dict"].items() if v.is_floating_point()}
    assert floats and set(floats.values()) == {torch.float64}, floats
    assert summary["config"]["float64"] is True


def test_dale_law_end_to_end_first_80_percent_excitatory(dale_run):
    from datamodules import build_datamodule
    from modules.rnn import cell_types
    cfg, _, _, ckpt = dale_run
    assert cell_types(10, 2).tolist() == [0] * 8 + [1] * 2
    assert cell_types(10, 3).tolist() == [0] * 4 + [1] * 4 + [2] * 2  # k-1 excitatory types, one inhibitory
    module = build_module(cfg, build_datamodule(cfg.task.name, **group_params(cfg.task, "name", "alpha")))
    module.load_state_dict(ckpt["state_dict"])
    w = module.net.recurrent_weight().detach()  # post x pre: a column is one presynaptic unit
    assert (w[:, :8] >= 0).all() and (w[:, 8:] <= 0).all()
    assert (w[:, :8] > 0).any() and (w[:, 8:] < 0).any()
    assert torch.count_nonzero(torch.diag(w)) == 0


def test_theorem1_uses_the_current_learning_rate_of_the_schedule(dale_run):
    """theory/stability = |mean rho since the previous curvature step| * eta * lambda_1, at each curvature
    step ([previous, step): the updates between them), with eta the scheduled lr there (x 0.8 every step_size steps) and lambda_1 of that same step."""
    cfg, _, summary, _ = dale_run
    history = summary["history"]
    rho, lam = history["rho"], dict(map(tuple, history["lambda_max"]))
    stability = history["theory_stability"]
    assert len(stability) >= 3 and max(s for s, _ in stability) >= 2  # the lr has decayed twice
    previous = None
    for step, value in stability:
        window = [v for s, v in rho if (s <= step if previous is None else previous <= s < step)]
        eta = 0.2 * 0.8 ** (step // cfg.scheduler.step_size)
        assert value == pytest.approx(abs(sum(window) / len(window)) * eta * lam[step], rel=1e-9), step
        previous = step


def test_record_gap_and_final_values(dale_run):
    _, _, summary, _ = dale_run
    assert summary["gap_acc"] == pytest.approx(summary["train_acc"] - summary["test_acc"], abs=1e-12)
    assert summary["gap_loss"] == pytest.approx(summary["test_loss"] - summary["train_loss"], abs=1e-12)
    assert summary["lambda_max"] == summary["history"]["lambda_max"][-1][1]
    assert summary["steps"] == 4 and summary["lr"] == 0.2


# --- checkpoints: every documented mismatch fails with one line -------------------------------------------

@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain_run")
    summary = train(compose_config(TINY + ["callbacks=none", "trainer.max_steps=2"]), out)
    return out, summary


def test_rho_mean_is_one_for_bptt_without_alignment(plain_run):
    _, summary = plain_run
    assert summary["status"] == "ok" and summary["history"].get("rho") in (None, [])
    assert summary["rho_mean"] == 1.0


# one difference each from the plain (dms) run, whose default network is Dale's (conf/task/dms.yaml)
MISMATCH = {"rule.name": ["rule=eprop"], "task.name": ["task=pattern", "model.dale=true"],
            "model.hidden_size": ["model.hidden_size=12"], "model.activation": ["model.activation=tanh"],
            "model.dale": ["model.dale=false"], "float64": ["float64=true"]}


@pytest.mark.parametrize("key", list(MISMATCH))
def test_checkpoint_of_another_kind_of_run_fails_with_one_line(plain_run, key, tmp_path):
    out, _ = plain_run
    ckpt = out / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError) as info:
        train(compose_config(TINY + ["callbacks=none", *MISMATCH[key], f"ckpt_path={ckpt}"]), tmp_path)
    message = str(info.value)
    assert "\n" not in message and key in message, message
    assert not (tmp_path / "checkpoints").exists()


# --- RFLO's feedback scale, the objective's L2 -----------------------------------------------------------

def rflo_update(scale: float) -> torch.Tensor:
    from datamodules import build_datamodule
    from modules.objective import Objective
    cfg = compose_config(TINY + ["rule=rflo", f"rule.feedback_scale={scale}", "float64=true"])
    pl.seed_everything(0, verbose=False)
    module = build_module(cfg, build_datamodule(cfg.task.name, **group_params(cfg.task, "name", "alpha")))
    net, g = module.net, torch.Generator().manual_seed(1)
    x = torch.randn(6, 12, net.input_size, generator=g, dtype=torch.float64)
    y = torch.randint(net.output_size, (6, 12), generator=g)
    mask = torch.zeros(6, 12, dtype=torch.float64)
    mask[:, -3:] = 1
    estimate = module.rule.surrogate(net, (x, y, mask), Objective("ce", 0.0))
    return torch.autograd.grad(estimate.surrogate, net.W_h)[0]


def test_rflo_update_scales_with_rule_feedback_scale():
    """The learning signal is B delta, so W_h's update is linear in B, hence in rule.feedback_scale."""
    small, large = rflo_update(0.3), rflo_update(0.9)
    assert small.abs().max() > 0
    torch.testing.assert_close(large, 3.0 * small, rtol=1e-9, atol=1e-15)


def test_objective_l2_is_half_l2_times_squared_norm():
    from modules.objective import Objective
    y = torch.randn(2, 3, 1, dtype=torch.float64)
    w = torch.randn(4, 5, dtype=torch.float64)
    value = Objective("mse", l2=0.1)(y, y, torch.ones(2, 3, dtype=torch.float64), [w])
    assert float(value) == pytest.approx(0.05 * float(w.pow(2).sum()), rel=1e-12)


# --- Lanczos against a dense reference on a hard spectrum -------------------------------------------------

def test_lanczos_top3_on_a_clustered_spectrum_equals_eigvalsh():
    """One well-separated eigenvalue and a dense cluster: without reorthogonalisation the converged top
    eigenvalue comes back as a ghost copy among the top 3."""
    from modules.lanczos import lanczos
    g = torch.Generator().manual_seed(0)
    n = 120
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    values = torch.cat([torch.tensor([50.0, 1.0, 0.999], dtype=torch.float64),
                        torch.linspace(0.0, 0.99, n - 3, dtype=torch.float64)])
    a = q @ torch.diag(values) @ q.T
    result = lanczos(lambda v: a @ v, torch.randn(n, generator=g, dtype=torch.float64), k=3, tol=1e-10,
                     max_iter=n)
    expected = torch.linalg.eigvalsh(a).flip(0)[:3]
    torch.testing.assert_close(result.eigenvalues, expected, rtol=1e-6, atol=1e-8)


# --- tasks: fresh test realisations -------------------------------------------------------------------

def test_pattern_test_realisations_are_not_training_realisations():
    from datamodules import build_datamodule
    dm = build_datamodule("pattern", train_size=8, test_size=8, noise=0.2, test_noise=0.2, seed=0)
    dm.setup("fit")
    train_x, test_x = dm.train_set.x, dm.test_set.x
    assert torch.cdist(train_x.flatten(1), test_x.flatten(1)).min() > 1e-3


# --- report: the Theorem 1 table's numbers, recomputed here ------------------------------------------------

def write_record(root, seed: int, lr: float):
    rng = np.random.default_rng(seed)
    steps = list(range(0, 501, 100))
    lam = [[s, float(10 + 5 * rng.random() + s / 50)] for s in steps]
    rho = [[s, float(0.2 + 0.1 * rng.random())] for s in steps]
    # Theorem 1 at each curvature step k: |mean rho over [k_prev, k)| * eta * lambda_1(k)
    theory = [[0, abs(rho[0][1]) * lr * lam[0][1]]] + [
        [k, abs(rho[i - 1][1]) * lr * lam[i][1]] for i, k in enumerate(steps) if i > 0]
    record = {"status": "ok", "rule": "eprop", "task": "dms", "seed": seed, "steps": 500, "lr": lr,
              "train_acc": 0.9, "test_acc": 0.7, "gap_acc": 0.2, "train_loss": 0.3, "test_loss": 0.6,
              "gap_loss": 0.3, "lambda_max": lam[-1][1], "rho_mean": float(np.mean([v for _, v in rho])),
              "history": {"lambda_max": lam, "rho": rho, "theory_stability": theory}, "error": None, "wall_time_s": 1.0, "versions": {},
              "config": {"rule": {"name": "eprop"}, "optimizer": {"lr": lr}, "seed": seed,
                         "task": {"name": "dms"}}}
    (root / f"seed{seed}").mkdir(parents=True)
    (root / f"seed{seed}" / "summary.json").write_text(json.dumps(record))
    return theory[-1][1], [v for _, v in theory]


def test_report_theorem1_table_numbers(tmp_path):
    import report
    written = [write_record(tmp_path / "sweep", seed, lr=0.05) for seed in range(3)]
    finals, every = [f for f, _ in written], [v for _, values in written for v in values]
    assert report.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    row = next(line for line in text[text.index("### Theorem 1"):].splitlines() if line.startswith("| eprop"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    mean, std = (float(v) for v in cells[2].split(" ± "))
    assert cells[1] == "3/3"
    assert mean == pytest.approx(np.mean(finals), rel=1e-3)
    assert std == pytest.approx(np.std(finals, ddof=1), rel=1e-3)
    assert cells[3] == f"{sum(v < 1 for v in finals)}/3"
    assert cells[5].startswith(f"{sum(v < 1 for v in every)}/{len(every)}"), cells


# --- sweeps: a failing job never stops the others ----------------------------------------------------------

def test_sweep_job_with_a_bad_config_is_recorded_and_the_others_run(tmp_path):
    """train.py -m: a job whose config is refused gets a "failed" summary.json and the sweep goes on (exit 0).
    With one job at a time the jobs run one after another (each in a process of its own, the default
    launcher), so the second job runs only if the first one's refusal did not end the sweep."""
    import subprocess
    import sys
    sweep = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "train.py", "-m", "hydra.launcher.n_jobs=1", *TINY, "callbacks=none",
                             "trainer.max_steps=2", "optimizer.lr=-1,0.1", f"hydra.sweep.dir={sweep}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    records = sorted((json.loads(p.read_text()) for p in sweep.glob("*/summary.json")), key=lambda r: r["status"])
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert "optimizer.lr=-1" in records[0]["error"]
