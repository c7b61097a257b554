"""A quiet console: third-party banners and warnings that say nothing about the run go to train.log only.

Under train.py, Hydra configures the root logger with a console handler and a file handler
(`<run dir>/train.log`). `quiet_third_party()` (called at the start of every run) then
- routes Python warnings through logging (`py.warnings`), so each one lands in train.log;
- lets Lightning's own loggers propagate to the root instead of printing through their private handler;
- puts a filter on the console handlers only, which drops Lightning's info banners ("GPU available: …",
  "`Trainer.fit` stopped", tips) and the expected warnings below (and nothing else: an unexpected warning
  still reaches the console).
Without Hydra's handlers (a library call, the test suite) the expected warnings are simply ignored.
`RULESCAPE_VERBOSE=1` turns all of this off: everything is printed as the libraries print it.
"""
from __future__ import annotations

import logging
import os
import re
import warnings

VERBOSE_ENV = "RULESCAPE_VERBOSE"

# message regexes of warnings that are expected in every run and need no action
EXPECTED_WARNINGS = [
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*Experiment logs directory .* exists and is not empty.*",
    # our StepBatchSampler restarts at trainer.global_step, so mid-run checkpoints resume exactly
    r".*your dataloader is not resumable.*",
    r".*The dirpath has changed from.*",
    r".*does not have many workers which may be a bottleneck.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    # our LightningModule moves its (x, y, mask) batches itself, on purpose
    r".*You have overridden `transfer_batch_to_device` in `LightningModule`.*",
    # PyHessian (the curvature cross-check backend) differentiates with backward(create_graph=True)
    r".*Using backward\(\) with create_graph=True.*",
    # our step is one manual update and last.ckpt is meant to hold the weights after it
    r".*ModelCheckpoint with manual optimization.*",
    # torch.load's weights_only default (our checkpoints hold the optimizer and RNG states on purpose)
    r".*weights_only.*",
    # wandb's deprecation notes about settings Lightning passes
    r".*anonymous setting has no effect.*",
]
_EXPECTED = re.compile("|".join(f"(?:{p})" for p in EXPECTED_WARNINGS), re.DOTALL)

# loggers whose info-level messages are banners ("GPU available", "`Trainer.fit` stopped", "Tip: …")
THIRD_PARTY_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def expected_warning(message: str) -> bool:
    return bool(_EXPECTED.match(message))


class ConsoleFilter(logging.Filter):
    """On a console handler: drop third-party info banners and the expected warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(THIRD_PARTY_LOGGERS) and record.levelno < logging.WARNING:
            return False
        if record.name == "py.warnings" and expected_warning(record.getMessage()):
            return False
        return "Tip:" not in record.getMessage()  # the odd promotion logged at warning level


def console_handlers(logger: logging.Logger) -> list[logging.Handler]:
    """Plain stream handlers (Hydra's console, Lightning's own); not files, not pytest's capture."""
    return [h for h in logger.handlers if type(h) is logging.StreamHandler]


def add_console_filter(handler: logging.Handler) -> None:
    if not any(isinstance(f, ConsoleFilter) for f in handler.filters):
        handler.addFilter(ConsoleFilter())


def quiet_third_party() -> None:
    """Make this process's console quiet (see the module docstring); safe to call once per run."""
    if verbose():
        return
    root = logging.getLogger()
    consoles = console_handlers(root)
    keeps_log = any(isinstance(h, logging.FileHandler) for h in root.handlers)  # Hydra's train.log
    if not keeps_log:  # no log file: the expected warnings go nowhere
        for message in EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
    else:
        logging.captureWarnings(True)  # every warning becomes a py.warnings record: train.log keeps it
        for message in EXPECTED_WARNINGS:
            warnings.filterwarnings("default", message=message)
    for handler in consoles:
        add_console_filter(handler)
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        if keeps_log:  # hand the records to the root's console (filtered) and file handlers
            for handler in console_handlers(logger):
                logger.removeHandler(handler)
            logger.propagate = True
        else:
            for handler in console_handlers(logger):
                add_console_filter(handler)
