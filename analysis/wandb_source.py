"""Optional source of runs: a wandb project (`report.py --wandb entity/project`). wandb is imported only here,
only when asked for. A run that uploaded its summary.json is read as is; otherwise a record is rebuilt from
the run's logged metrics and config (status from the wandb state: finished -> ok unless a logged loss is not
finite -> diverged; crashed/failed -> failed; killed -> interrupted; anything else is kept and so excluded)."""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

from analysis.load import Run, read_run

WANDB_STATUS = {"finished": "ok", "crashed": "failed", "failed": "failed", "killed": "interrupted"}
STEP_KEYS = ("trainer/global_step", "_step")


def record_from_wandb(config: dict, rows: list[dict], state: str) -> dict:
    """A summary.json-like dict from a wandb run's config and history rows ({metric: value, "_step": ...})."""
    from callbacks.run_record import FINAL_KEYS, history_name  # the run record's own naming of logged keys
    config = config.get("config") if isinstance(config.get("config"), dict) else config
    history: dict[str, list] = {}
    diverged = False
    for row in rows:
        step = next((row[k] for k in STEP_KEYS if row.get(k) is not None), None)
        for key, value in row.items():
            if "/" not in key or key in STEP_KEYS or not isinstance(value, (int, float)) or step is None:
                continue
            if key.endswith("loss") and not math.isfinite(value):
                diverged = True
            history.setdefault(key, []).append([step, value if math.isfinite(value) else None])
    status = WANDB_STATUS.get(state, state)
    if status == "ok" and diverged:
        status = "diverged"
    rho = [v for _, v in history.get("align/rho", []) if v is not None]
    record = {"status": status, "rule": (config.get("rule") or {}).get("name"),
              "task": (config.get("task") or {}).get("name"), "seed": config.get("seed"),
              "lr": (config.get("optimizer") or {}).get("lr"),
              "steps": max((s for pts in history.values() for s, _ in pts), default=0)}
    for out_key, logged in FINAL_KEYS.items():
        pts = [v for _, v in history.get(logged, []) if v is not None]
        record[out_key] = pts[-1] if pts else None
    record["rho_mean"] = sum(rho) / len(rho) if rho else (1.0 if record["rule"] == "bptt" else None)
    record["history"] = {history_name(k): v for k, v in history.items()}
    record["config"] = config
    record["error"] = None if status == "ok" else f"wandb state: {state}"
    return record


def runs_from_wandb(project: str) -> list[Run]:
    """Every run of `entity/project` through wandb.Api (needs network and a login)."""
    import wandb
    api = wandb.Api()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for wr in api.runs(project):
            where = f"wandb:{project}/{wr.id}"
            try:
                wr.file("summary.json").download(root=str(Path(tmp) / wr.id), replace=True)
                run = read_run(Path(tmp) / wr.id / "summary.json")
                if run.status != "unreadable":
                    run.path = where
                    out.append(run)
                    continue
            except Exception:  # no uploaded summary.json: rebuild from the logged metrics
                pass
            record = record_from_wandb(dict(wr.config), list(wr.scan_history()), wr.state)
            out.append(Run(path=where, summary=record, status=record["status"],
                           error=record["error"]))
    return out
