"""The optax chain shared by A2C and A3C: global-norm clipping, then RMSProp or Adam, with an
optional linear learning-rate annealing. The current learning rate is readable from the state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import optax

from jaxac.config import OPTIMIZERS


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer settings; their defaults and meaning are the config schema's
    (`jaxac.config.AlgoConfig`)."""

    lr: float
    optimizer: str  # one of jaxac.config.OPTIMIZERS
    rmsprop_decay: float
    eps: float
    max_grad_norm: float
    anneal_lr: bool  # linear decay to zero over `total_updates`

    @classmethod
    def from_config(cls, cfg: Any) -> "OptimConfig":
        """The optimizer settings of a validated run config."""
        a = cfg.algo
        return cls(lr=float(a.lr), optimizer=str(a.optimizer),
                   rmsprop_decay=float(a.rmsprop_decay), eps=float(a.eps),
                   max_grad_norm=float(a.max_grad_norm), anneal_lr=bool(a.anneal_lr))


def make_optimizer(cfg: OptimConfig, total_updates: int) -> optax.GradientTransformation:
    """Clip by global norm, then RMSProp (decay, eps) or Adam, at a constant or annealed rate."""
    schedule = (optax.linear_schedule(cfg.lr, 0.0, max(total_updates, 1)) if cfg.anneal_lr
                else cfg.lr)

    def chain(learning_rate):
        if cfg.optimizer == "rmsprop":
            base = optax.rmsprop(learning_rate, decay=cfg.rmsprop_decay, eps=cfg.eps)
        elif cfg.optimizer == "adam":
            base = optax.adam(learning_rate, eps=cfg.eps)
        else:
            raise ValueError(f"algo.optimizer={cfg.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), base)

    # inject_hyperparams evaluates the schedule at each step and keeps the value in the state.
    return optax.inject_hyperparams(chain)(learning_rate=schedule)


def current_lr(opt_state: Any) -> jax.Array:
    """The learning rate the last update used (the schedule's value, as kept by optax)."""
    return opt_state.hyperparams["learning_rate"]
