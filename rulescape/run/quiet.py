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

Progress (`progress_bar()`): a tqdm bar counted in steps against max_steps on a terminal (a resumed run shows
its total), one plain line every max_steps/10 steps anywhere else (a file or a pipe gets no `\r` frames).
"""
from __future__ import annotations

import logging
import math
import os
import re
import sys
import warnings

from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

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
    # Hydra's train.log: a plain FileHandler (pytest's log-file handler is a subclass, and a test run must
    # ignore the expected warnings as a library call does, not re-enable them over pytest.ini's filters)
    keeps_log = any(type(h) is logging.FileHandler for h in root.handlers)
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


# ----------------------------------------------------------------------------------------------------------
# Progress: a tqdm bar on a terminal, plain lines elsewhere (a log file, a pipe, a batch job's output)

PROGRESS_LINES = 10  # off a terminal: about this many lines per run (one every max_steps / 10 steps)


def on_terminal(stream=None) -> bool:
    """True when the progress output (stdout, where Lightning's bar goes) is a terminal that redraws a bar."""
    stream = stream or sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def fmt_metric(value) -> str:
    value = value.item() if hasattr(value, "item") else value
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class StepBar(TQDMProgressBar):
    """Lightning's tqdm bar counted in optimizer steps against `trainer.max_steps`: a resumed run reads
    `175/400`, not `175/?` (the step sampler's epoch has no length)."""

    def total(self) -> int | None:
        steps = self.trainer.max_steps
        return steps if steps and steps > 0 else None

    def init_train_tqdm(self) -> Tqdm:
        return Tqdm(desc="Training", position=2 * self.process_position, disable=self.is_disabled, leave=True,
                    dynamic_ncols=True, file=sys.stdout, smoothing=0, bar_format=self.BAR_FORMAT,
                    total=self.total(), initial=self.trainer.global_step)

    def on_train_epoch_start(self, trainer, *args) -> None:
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        bar = self.train_progress_bar
        bar.total = self.total()
        bar.n = bar.initial = trainer.global_step
        bar.set_description("Training")  # also redraws

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = trainer.global_step
        if self.train_progress_bar is not None and self._should_update(n, self.train_progress_bar.total):
            self.train_progress_bar.n = n
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))  # also redraws


class LineProgress(ProgressBar):
    """Progress without carriage returns: one line `step 250/1000 train_loss=0.41` on stdout every
    `every` steps (default: max_steps / PROGRESS_LINES) and at the last step, from rank 0 only."""

    def __init__(self, every: int | None = None):
        super().__init__()
        self._enabled = True
        self.every = every

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        if self.every is None:
            self.every = max(1, math.ceil(trainer.max_steps / PROGRESS_LINES)) if trainer.max_steps > 0 else 100

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not (self._enabled and trainer.is_global_zero) or (step % self.every and step != trainer.max_steps):
            return
        total = f"/{trainer.max_steps}" if trainer.max_steps > 0 else ""
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        parts = " ".join(f"{k}={fmt_metric(v)}" for k, v in metrics.items())
        sys.stdout.write(f"step {step}{total} {parts}".rstrip() + "\n")
        sys.stdout.flush()


def progress_bar(refresh_rate: int = 25) -> ProgressBar:
    """The run's progress display: StepBar on a terminal, LineProgress otherwise."""
    return StepBar(refresh_rate=refresh_rate) if on_terminal() else LineProgress()
