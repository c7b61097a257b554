"""Save <run dir>/checkpoints/last.ckpt when a run ends (so the final state is always kept, whatever
max_steps % checkpoint_every) and when it is interrupted (Ctrl-C, SIGTERM), so that `ckpt_path=` continues
it. Not on other exceptions: a diverged run's weights are not worth resuming."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl


class InterruptCheckpoint(pl.Callback):
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_end(self, trainer, pl_module):
        trainer.save_checkpoint(str(self.path), weights_only=False)  # the full state, said explicitly

    def on_exception(self, trainer, pl_module, exception):
        if isinstance(exception, (KeyboardInterrupt, SystemExit)):
            trainer.save_checkpoint(str(self.path), weights_only=False)  # the full state, said explicitly
