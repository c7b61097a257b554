"""The rule interface: a rule turns one batch into a *surrogate* scalar whose gradient is its update.

Why a surrogate and not gradients: the estimate then arrives through an ordinary backward pass, so
Lightning's manual_backward (and DDP's gradient averaging across ranks) treats every rule exactly like
BPTT, and a measurement can ask for the same estimate with torch.autograd.grad without touching `.grad`.

Rules that learn (KeRNL's kernels, DNI's synthetic-gradient module, Kolen-Pollack's feedback matrix) own
nn.Parameters and a local objective of their own, returned as `Estimate.aux_loss`. One mechanism:

    - the training step backpropagates surrogate + aux_loss once: d(surrogate)/d(rule's parameters) is
      None (the rule uses them detached in the network's estimate) and d(aux_loss)/d(network) is None (the
      aux objective sees the network's quantities detached), so the two updates never mix;
    - the rule's parameters get their own optimizer (`rule.optimizer`, `rule.lr` from the rule's config;
      `aux_optimizer()`), stepped right after the network's;
    - being module parameters with a Lightning-managed optimizer, they are checkpointed and resumed with
      their optimizer state, and DDP averages their gradients across ranks like the network's;
    - curvature and alignment read the network (`pl_module.net`) only, so they never see them.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from modules.objective import Objective
from modules.rnn import RateRNN

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x (B, T, N_in), y, mask (B, T)


def prepare_batch(batch: Batch, net: nn.Module) -> Batch:
    """The batch on the network's device, inputs in its dtype (targets keep theirs: class indices stay long)."""
    w = net.W_h
    x, y, mask = batch
    y = y.to(w.device) if not y.is_floating_point() else y.to(w.device, w.dtype)
    return x.to(w.device, w.dtype), y, mask.to(w.device, w.dtype)


@dataclass
class Estimate:
    surrogate: torch.Tensor  # scalar; d(surrogate)/d(params) is the rule's gradient estimate
    loss: torch.Tensor       # the training objective of the exact forward pass (same value for every rule)
    y_hat: torch.Tensor      # readout (B, T, N_out)
    # a rule that learns: its own objective, whose gradient reaches only the rule's parameters (None otherwise)
    aux_loss: torch.Tensor | None = None


AUX_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


RESERVED = ("step", "warnings")  # instance attributes every Rule keeps (Rule.__init__); a rule names none of its own so


class Rule(nn.Module):
    """A gradient estimator. Subclasses set `name` and implement `surrogate`.

    A rule is an nn.Module so that its state (e.g. RFLO's feedback matrix) is saved in checkpoints and
    moved to the model's device. Most rules have no trainable parameters; a rule that learns (`learns =
    True`) registers nn.Parameters, calls `learn_with(lr, optimizer)` in its __init__ and returns its local
    objective as Estimate.aux_loss on every call (see the module docstring).
    """

    name: str = ""
    exact: bool = False  # True when the estimate is the exact gradient (rho = 1 by construction)
    unbiased: bool = False  # True when the estimate's expectation over its random draws is the exact gradient
    # True when the surrogate *is* the exact objective of the same forward pass (BPTT): a measurement may
    # then reuse the exact gradient instead of computing the same one twice
    surrogate_is_objective: bool = False
    learns: bool = False  # True when the rule owns parameters trained by its own objective (Estimate.aux_loss)

    def __init__(self, net: RateRNN):
        super().__init__()
        self.step = 0
        self.warnings: list[str] = []  # said once, in the log and in summary.json
        self.aux_lr, self.aux_optimizer_name = 0.0, "sgd"

    def learn_with(self, lr: float, optimizer: str = "sgd") -> None:
        """The optimizer (`sgd` | `adam`) and learning rate of the rule's own parameters (rule.lr, rule.optimizer)."""
        if optimizer not in AUX_OPTIMIZERS:
            raise ValueError(f"rule.optimizer={optimizer!r}; choose one of: {', '.join(AUX_OPTIMIZERS)}")
        if not (isinstance(lr, (int, float)) and np.isfinite(lr) and lr >= 0):
            raise ValueError(f"rule.lr={lr!r} is not allowed; it must be a number >= 0")
        self.aux_lr, self.aux_optimizer_name = float(lr), optimizer

    def aux_optimizer(self) -> torch.optim.Optimizer | None:
        """The optimizer of the rule's own parameters, or None for a rule without any."""
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return None
        return AUX_OPTIMIZERS[self.aux_optimizer_name](params, lr=self.aux_lr)

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        self._own_name(name, "buffer")
        super().register_buffer(name, tensor, persistent)

    def register_parameter(self, name: str, param) -> None:
        self._own_name(name, "parameter")
        super().register_parameter(name, param)

    def _own_name(self, name: str, what: str) -> None:
        """A rule's buffer or parameter may not take a name the base class uses (`step`): one line naming the
        rule's file, instead of nn.Module's KeyError."""
        if name in RESERVED or hasattr(Rule, name):
            from modules.rules import where  # the registry knows each rule's file
            raise ValueError(f"rule '{self.name}' in {where(type(self))} registers a {what} named "
                             f"'{name}', a name the base class Rule uses (modules/rules/base.py); rename it")

    def set_step(self, step: int) -> None:
        """The step whose batch the next estimate is for, set by a measurement (alignment) before it asks
        for an estimate; only step-dependent rules (bptt_scaled following a rho history) read it."""
        self.step = int(step)

    def surrogate(self, net: RateRNN, batch: Batch, objective: Objective,
                  noise: torch.Tensor | None = None) -> Estimate:
        raise NotImplementedError

    def on_step(self, step: int) -> None:
        """Called by the training loop with the global step just before that step's `surrogate` (and only
        there: measurements call `set_step`, which for a stochastic rule selects its measurement draw)."""
        self.set_step(step)

    def fixed_draw(self, name: str, *shape: int, like: torch.Tensor | None = None) -> torch.Tensor:
        """Standard normal numbers of `shape` fixed for the run (a random feedback matrix, a fixed projection),
        keyed on (a key drawn from the global RNG at the first call, `name`). Call it in `__init__`: `seed`
        seeds the global RNG just before the rule is built, so the same seed gives the same tensor in every
        process (DDP ranks alike) and when a run is resumed, and two names give independent draws (adding a
        second draw does not change the first). In `like`'s dtype and device (float32 on the CPU without it).
        Register the result as a buffer so that checkpoints carry it:
        `self.register_buffer("feedback", self.fixed_draw("feedback", n, n_out, like=net.W_out))`."""
        if getattr(self, "_fixed_key", None) is None:
            self._fixed_key = int(torch.randint(0, 2 ** 62, (1,)))  # the first call only: one global draw
        key = np.random.SeedSequence([self._fixed_key, zlib.crc32(name.encode())]).generate_state(2, np.uint32)
        gen = torch.Generator().manual_seed(int(key[0]) << 32 | int(key[1]))
        dtype = like.dtype if like is not None else torch.float32
        out = torch.randn(*shape, generator=gen, dtype=dtype)
        return out.to(like.device) if like is not None else out

    @staticmethod
    def objective_of(net: RateRNN, y_hat: torch.Tensor, batch: Batch, objective: Objective) -> torch.Tensor:
        _, y, mask = batch
        return objective(y_hat, y, mask, [net.W_x, net.W_h, net.W_out])


class StochasticRule(Rule):
    """A rule that draws random numbers (UORO's signs, node perturbation's noise).

    Its draws are keyed, not streamed: the generator for a call is seeded from (rule seed, step, rank,
    stream), where `step` is the one the training loop last announced with `on_step`. The training step's
    call uses stream 0; any other call (a measurement, e.g. alignment's `surrogate`) uses stream 1 of the
    latest announced step, so measurements get their own draw and never shift the training trajectory.
    Resume is exact with nothing to replay: the rule seed (drawn once from the seeded global RNG at
    construction, so fixed by `seed`) and the last step are saved in the checkpoint as extra state, and
    the training loop announces the restored global step. Under DDP each rank draws its own noise, unless
    a rule sets `per_rank_draws = False` (bptt_noise: one noise vector shared by all ranks).
    """

    per_rank_draws = True  # False: the key's rank is 0 on every rank, so all ranks draw the same numbers

    def __init__(self, net: RateRNN):
        super().__init__(net)
        self.rule_seed = int(torch.randint(0, 2 ** 62, (1,)))  # global RNG, seeded by `seed` before the rule
        self.step = -1
        self._training_call = False

    def on_step(self, step: int) -> None:
        self.step, self._training_call = int(step), True

    def generator(self, device: torch.device) -> torch.Generator:
        """A fresh generator for this call (training draw right after on_step, measurement draw otherwise)."""
        stream = 0 if self._training_call else 1
        self._training_call = False
        dist = torch.distributed
        rank = dist.get_rank() if self.per_rank_draws and dist.is_available() and dist.is_initialized() else 0
        key = np.random.SeedSequence([self.rule_seed, self.step + 1, rank, stream]).generate_state(2, np.uint32)
        return torch.Generator(device=device).manual_seed(int(key[0]) << 32 | int(key[1]))

    def get_extra_state(self) -> dict:
        return {"rule_seed": self.rule_seed, "step": self.step}

    def set_extra_state(self, state: dict) -> None:
        self.rule_seed, self.step = int(state["rule_seed"]), int(state["step"])


class FollowsHistory:
    """Mixin for a rule that follows a value another run recorded, step by step (bptt_scaled's rho,
    bptt_noise's e_ratio). The history lives in two buffers, `<name>_steps` and `<name>_values`, so a
    checkpoint carries it and a resume is exact even if the source record changes; lookups use host lists
    copied from the buffers once (they may live on a GPU: no device read on every training step)."""

    def register_history(self, name: str, points: list[tuple[int, float]]) -> None:
        self.register_buffer(f"{name}_steps", torch.tensor([s for s, _ in points], dtype=torch.long))
        self.register_buffer(f"{name}_values", torch.tensor([v for _, v in points], dtype=torch.float64))
        self._host_histories: dict[str, tuple[list[int], list[float]]] = {}

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._host_histories = {}  # a checkpoint's history replaces the buffers: read them again

    def history_value(self, name: str, step: int) -> float:
        """The last recorded value at or before `step` (the first one before any)."""
        from modules.run_records import value_at
        host = self._host_histories.get(name)
        if host is None:
            host = self._host_histories[name] = (getattr(self, f"{name}_steps").tolist(),
                                                 getattr(self, f"{name}_values").tolist())
        return value_at(*host, step)
