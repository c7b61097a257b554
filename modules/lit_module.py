"""The LightningModule: one batch in, the rule's estimate out through backward, one optimizer step.

Manual optimization, because the rule decides what reaches `.grad`: the readout's exact gradient plus the
rule's estimate for W_h, W_x and b. Under DDP, manual_backward averages the estimate across ranks.
A rule that learns (modules/rules/base.py) adds its own objective to the same backward and gets a second
optimizer for its own parameters, stepped after the network's.
"""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from modules.objective import Objective
from modules.rnn import RateRNN
from modules.rules import Rule
from modules.rules.base import prepare_batch


class Diverged(RuntimeError):
    """Loss or update became NaN/Inf at `step`."""

    def __init__(self, step: int, what: str):
        super().__init__(f"run diverged at step {step}: {what} is not finite")
        self.step, self.what = step, what


class RuleModule(pl.LightningModule):
    def __init__(self, net: RateRNN, rule: Rule, objective: Objective, optimizer: Any,
                 scheduler: Any = None, seed: int = 0, config: dict | None = None, clip_norm: float | None = None):
        """optimizer: a callable params -> torch.optim.Optimizer (e.g. a Hydra partial);
        scheduler: None or a callable optimizer -> LR scheduler stepped once per training step;
        clip_norm: None, or the largest norm of the whole update (rescaled above it; off by default because
        it changes a rule's step length, which rho and Theorem 1 are about)."""
        super().__init__()
        self.save_hyperparameters({"config": config or {}})
        self.net, self.rule, self.objective = net, rule, objective
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.seed, self.clip_norm = seed, clip_norm
        self.log_every = 10  # steps between train/batch_loss logs
        self.automatic_optimization = False
        self._noise_generator: torch.Generator | None = None
        self._noise_state: torch.Tensor | None = None  # restored from a checkpoint, applied on first use

    # ----- what a step does -------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        batch = prepare_batch(batch, self.net)  # float64=true trains in double
        opts = self.optimizers()
        opt, aux_opt = (opts[0], opts[1]) if isinstance(opts, list) else (opts, None)
        opt.zero_grad(set_to_none=True)
        if aux_opt is not None:
            aux_opt.zero_grad(set_to_none=True)
        noise = self.net.sample_noise(batch[0], self.noise_generator())
        self.rule.on_step(self.global_step)  # step-dependent and stochastic rules key this step on it
        estimate = self.rule.surrogate(self.net, batch, self.objective, noise=noise)
        if aux_opt is not None and estimate.aux_loss is None:
            raise RuntimeError(f"rule {self.rule.name} owns parameters but returned no aux_loss")
        # one backward for both: the aux objective reaches only the rule's parameters, the surrogate only the net's
        self.manual_backward(estimate.surrogate if aux_opt is None else estimate.surrogate + estimate.aux_loss)
        self.check_finite(estimate.loss)
        if self.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.clip_norm)
        opt.step()
        if aux_opt is not None:  # the bare optimizer: Lightning counts a step (global_step) per optimizer step
            aux_opt.optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        if self.global_step % self.log_every == 0:  # Lightning's logging costs ~0.3 ms: not every step
            self.log("train/batch_loss", estimate.loss.detach(), prog_bar=True, batch_size=batch[0].shape[0])
        return estimate.loss.detach()

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """A batch is a tuple of three tensors: move them directly (Lightning's generic walk costs ~0.2 ms)."""
        return tuple(t.to(device, non_blocking=True) for t in batch)

    def check_finite(self, loss: torch.Tensor) -> None:
        """Raise Diverged if the loss or any update is NaN/Inf (one host sync per step)."""
        grads = [p.grad for p in [*self.net.parameters(), *self.rule.parameters()] if p.grad is not None]
        total = loss.detach() + torch.stack([g.sum() for g in grads]).sum()
        if not bool(torch.isfinite(total)):
            what = "loss" if not bool(torch.isfinite(loss)) else "update"
            raise Diverged(self.global_step, what)

    def configure_optimizers(self):
        """The network's optimizer (and scheduler); a rule that learns adds its own optimizer as a second entry
        ([{network's}, {"optimizer": rule's}]); the scheduler is the network's only."""
        params = [p for p in self.net.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        aux = self.rule.aux_optimizer()
        if self.scheduler_factory is None:
            return optimizer if aux is None else [{"optimizer": optimizer}, {"optimizer": aux}]
        first = {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer),
                                                          "interval": "step"}}
        return first if aux is None else [first, {"optimizer": aux}]

    # ----- private noise: its own generator, so measurements never shift the training trajectory --------
    def noise_generator(self) -> torch.Generator | None:
        if self.net.noise_std <= 0:
            return None
        if self._noise_generator is None or self._noise_generator.device != self.device:
            self._noise_generator = torch.Generator(device=self.device).manual_seed(self.seed + self.global_rank)
            if self._noise_state is not None:  # resumed: continue the saved stream
                try:
                    self._noise_generator.set_state(self._noise_state)
                except RuntimeError:  # saved on another device type: a fresh stream is the best we can do
                    pass
                self._noise_state = None
        return self._noise_generator

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._noise_generator is not None:
            checkpoint["noise_generator"] = self._noise_generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._noise_state = checkpoint.get("noise_generator")
        self._noise_generator = None

    @property
    def lr(self) -> float:
        """The current learning rate of the first parameter group (eta in Theorem 1)."""
        trainer = self._trainer
        if trainer is not None and trainer.optimizers:
            return float(trainer.optimizers[0].param_groups[0]["lr"])
        raise RuntimeError("learning rate is known once training has started")


def build_optimizer(cfg) -> Any:
    """A Hydra partial config (`_target_`, `_partial_: true`) -> callable params -> optimizer."""
    return instantiate(cfg)
