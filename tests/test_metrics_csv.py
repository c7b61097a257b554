"""metrics.csv (logger=csv) and the wandb logger: each measurement once, at the step it was measured,
the final step included; other values (the batch loss) only where they were logged."""
from __future__ import annotations

import csv

import pytest

from conftest import compose_config
from rulescape.run.loggers import CSVLogger, WandbLogger
from rulescape.run.training import train

TINY = ["experiment=smoke", "trainer.enable_progress_bar=false", "trainer.max_steps=12", "eval_every=5",
        "curvature.every_n_steps=4", "alignment.every_n_steps=3"]


def read_columns(path) -> dict[str, list[list[float]]]:
    """{column: [[step, value], ...]} over the rows where the column has a value."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list] = {}
    for row in rows:
        for key, cell in row.items():
            if key != "step" and cell != "":
                columns.setdefault(key, []).append([int(row["step"]), float(cell)])
    return columns


def test_metrics_csv_holds_each_measurement_at_its_measured_step_only(tmp_path):
    summary = train(compose_config([*TINY, "logger=csv"]), tmp_path)
    assert summary["status"] == "ok"
    columns = read_columns(tmp_path / "metrics.csv")
    history = summary["history"]
    checked = 0
    for key, points in history.items():
        csv_key = next((k for k in columns if k.replace("/", "_") == key or k.split("/", 1)[-1] == key), None)
        if csv_key is None:
            continue
        checked += 1
        assert [p[0] for p in columns[csv_key]] == [p[0] for p in points], csv_key
        assert [p[1] for p in columns[csv_key]] == pytest.approx([p[1] for p in points]), csv_key
    assert checked >= 4
    # the cadences as configured: eval at 0, 5, 10 and the end; lambda_1 at 0, 4, 8 and the end; rho every 3
    assert [s for s, _ in columns["train/acc"]] == [0, 5, 10, 12]
    assert [s for s, _ in columns["curvature/lambda_max"]] == [0, 4, 8, 12]
    assert [s for s, _ in columns["align/rho"]] == [0, 3, 6, 9]
    # the batch loss only at the steps it was logged, never forward-filled
    loss_steps = [s for s, _ in columns["train/batch_loss"]]
    assert loss_steps and len(loss_steps) < 12 and loss_steps == sorted(set(loss_steps))
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(set(steps)), "one row per step, in order"
    assert steps[-1] == 12, "the final step is present"
    assert "epoch" not in rows[0]


def test_wandb_logger_sends_the_same_steps(tmp_path, monkeypatch):
    sent: list[tuple[int, dict]] = []
    monkeypatch.setattr(WandbLogger, "_write", lambda self, metrics, step: sent.append((step, dict(metrics))))
    summary = train(compose_config([*TINY, "logger=wandb", "logger.mode=disabled"]), tmp_path)
    assert summary["status"] == "ok"
    rho_steps = [step for step, metrics in sent if "align/rho" in metrics]
    assert rho_steps == [p[0] for p in summary["history"]["rho"]] == [0, 3, 6, 9]
    assert [step for step, metrics in sent if "train/acc" in metrics] == [0, 5, 10, 12]
    assert [step for step, _ in sent] == sorted({step for step, _ in sent})


def test_csv_logger_appends_on_resume_and_widens_its_header(tmp_path):
    first = CSVLogger(tmp_path)
    first._write({"train/acc": 0.5}, 0)
    first._write({"train/acc": 0.75, "align/rho": 0.3}, 10)  # a new column: the header widens
    resumed = CSVLogger(tmp_path, resume=True)
    resumed._write({"align/rho": 0.4}, 20)
    columns = read_columns(tmp_path / "metrics.csv")
    assert columns["train/acc"] == [[0, 0.5], [10, 0.75]]
    assert columns["align/rho"] == [[10, 0.3], [20, 0.4]]
    CSVLogger(tmp_path)  # a fresh run in the same directory starts a new file
    assert not (tmp_path / "metrics.csv").exists()


def test_resumed_run_appends_each_measurement_once(tmp_path, monkeypatch):
    import rulescape.run.training as run
    from rulescape.run.loggers import build_loggers
    first = train(compose_config([*TINY, "logger=csv", "trainer.max_steps=7"]), tmp_path)
    assert first["status"] == "ok"
    monkeypatch.setattr(run, "build_loggers", lambda *a, **k: build_loggers(*a, **{**k, "resume": True}))
    resumed = train(compose_config([*TINY, "logger=csv", f"ckpt_path={tmp_path}/checkpoints/last.ckpt"]),
                    tmp_path)
    assert resumed["status"] == "ok" and resumed["steps"] == 12
    columns = read_columns(tmp_path / "metrics.csv")
    assert [s for s, _ in columns["train/acc"]] == [p[0] for p in resumed["history"]["train_acc"]]
    assert [s for s, _ in columns["align/rho"]] == [p[0] for p in resumed["history"]["rho"]] == [0, 3, 6, 9]
    assert [s for s, _ in columns["curvature/lambda_max"]] == [0, 4, 7, 8, 12]  # 7: the first run's end


def test_wandb_run_id_is_kept_in_the_run_dir_for_a_resume(tmp_path):
    from rulescape.run.loggers import sweep_group, wandb_run_id
    first = wandb_run_id(tmp_path, resume=False)
    assert len(first) == 8 and first.isalnum()
    assert wandb_run_id(tmp_path, resume=True) == first  # a resume continues the same wandb run
    assert wandb_run_id(tmp_path, resume=False) != first  # a new run in the same directory is a new run
    assert sweep_group() is None  # no Hydra sweep here: no group unless logger.group sets one
