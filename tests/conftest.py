"""Shared test helpers: compose the real Hydra config, offline and quiet."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def wandb_offline(request, monkeypatch):
    """Tests never touch the network: WANDB_MODE=offline (and quiet) for every test, subprocesses included,
    set per test instead of for the whole session, so that a test can take it away again and exercise the
    automatic online/offline choice (tests/test_promises.py removes every WANDB_* variable)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def expected_third_party_warnings():
    """The third-party warnings every run ignores (rulescape/run/quiet.py's EXPECTED_WARNINGS, each with its
    reason) are ignored in tests that drive Lightning or PyHessian directly too; any other warning shows."""
    import warnings
    from rulescape.run.quiet import EXPECTED_WARNINGS
    for pattern in EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def compose_config(overrides: list[str]):
    """The config train.py would see for these overrides (no Hydra run dir needed)."""
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.fixture
def compose():
    return compose_config


def assert_resume_exact_and_unsteered(overrides: list[str], folder: Path) -> dict:
    """Train `overrides` to its end (full), without measurement callbacks (quiet), and to step 4 then resumed
    from that checkpoint (resumed): every tensor of the final state_dict is equal in all three (a resume is
    exact, measurements do not steer training). Returns the summaries {full, quiet, part, resumed}."""
    from rulescape.run.training import train
    ckpt = folder / "part" / "checkpoints" / "last.ckpt"
    summaries = {"full": train(compose_config(overrides), folder / "full"),
                 "quiet": train(compose_config(overrides + ["callbacks=none"]), folder / "quiet"),
                 "part": train(compose_config(overrides + ["trainer.max_steps=4"]), folder / "part")}
    summaries["resumed"] = train(compose_config(overrides + [f"ckpt_path={ckpt}"]), folder / "resumed")
    states = {d: torch.load(folder / d / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
              for d in ("full", "quiet", "resumed")}
    for name, value in states["full"].items():
        if torch.is_tensor(value):
            assert torch.equal(value, states["quiet"][name]), name
            assert torch.equal(value, states["resumed"][name]), name
    return summaries
