"""The optax chain shared by A2C and A3C: global-norm clipping, then RMSProp or Adam, with an
optional linear learning-rate annealing. The current learning rate is readable from the state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import optax


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 7e-4
    optimizer: str = "rmsprop"  # "rmsprop" or "adam"
    rmsprop_decay: float = 0.99
    eps: float = 1e-5
    max_grad_norm: float = 0.5
    anneal_lr: bool = False  # linear decay to zero over `total_updates`


OPTIMIZERS = ("rmsprop", "adam")


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
