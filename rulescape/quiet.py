"""Quiet the third-party chatter that says nothing about the run (tips, deprecations we cannot act on)."""
from __future__ import annotations

import logging
import warnings

# (category, message regex) of warnings that are expected in every run
EXPECTED_WARNINGS = [
    (Warning, r".*isinstance\(treespec, LeafSpec\).*"),
    (Warning, r".*Experiment logs directory .* exists and is not empty.*"),
    # our StepBatchSampler restarts at trainer.global_step, so mid-run checkpoints resume exactly
    (Warning, r".*your dataloader is not resumable.*"),
    (Warning, r".*The dirpath has changed from.*"),
    (Warning, r".*does not have many workers which may be a bottleneck.*"),
    (Warning, r".*The number of training batches .* is smaller than the logging interval.*"),
    # our LightningModule moves its (x, y, mask) batches itself, on purpose
    (Warning, r".*You have overridden `transfer_batch_to_device` in `LightningModule`.*"),
    # PyHessian (the curvature cross-check backend) differentiates with backward(create_graph=True)
    (Warning, r".*Using backward\(\) with create_graph=True.*"),
]


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


def quiet_third_party() -> None:
    for category, message in EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        for handler_owner in (logging.getLogger(name),):
            handler_owner.addFilter(_DropTips())
            for handler in handler_owner.handlers:
                handler.addFilter(_DropTips())
