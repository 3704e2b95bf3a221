"""The two jitted calls of one A3C update, with the arguments a worker passes them: the public
way to run or time them outside a training run (`python -m jaxac.bench` does)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxac.a3c.servers import LockedServer
from jaxac.a3c.trainer import A3CTrainer


class UpdateCalls:
    """A locked-mode trainer's update, call by call: `rollout` (rollout and gradient on the
    initial snapshot) and `apply` (the optimizer call on a batch of one, its info row read back,
    as `LockedServer.submit` does), without the server's queue, lock or records."""

    def __init__(self, trainer: A3CTrainer, worker: int = 0):
        if not isinstance(trainer.server, LockedServer):
            raise ValueError("UpdateCalls needs a locked-mode trainer (algo.update=locked)")
        self._learner, self._server = trainer.learner, trainer.server
        self.snapshot = trainer.server.snapshot().vector
        # each worker's starting environments, on its device
        self.env_vectors = [trainer.initial_env_vector(i) for i in range(len(trainer.threads))]
        self.env_vector = self.env_vectors[worker]
        self.entropy_coef = jnp.float32(0.0)

    def rollout(self, env_vector: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(next env vector, result vector) of one rollout and gradient on the snapshot."""
        return self._learner.rollout_and_gradient(self.snapshot, env_vector, self.entropy_coef)

    def apply(self, state: jax.Array, result: jax.Array) -> jax.Array:
        """The state after applying `result` to `state`, with its report read on the host."""
        state, info = self._learner.optimizer_steps(
            *self._server.optimizer_arguments(state, [result], [1.0]))
        self._learner.read_report(np.asarray(info)[0, 1:].tolist())
        return state

    def calls(self) -> dict[str, tuple[Callable, tuple[Any, ...]]]:
        """Each jitted call with the arguments a worker passes it: "rollout_and_gradient" and
        "optimizer_step" (a batch of one)."""
        _, result = self.rollout(self.env_vector)
        return {"rollout_and_gradient": (self._learner.rollout_and_gradient,
                                         (self.snapshot, self.env_vector, self.entropy_coef)),
                "optimizer_step": (self._learner.optimizer_steps,
                                   self._server.optimizer_arguments(self.snapshot, [result],
                                                                    [1.0]))}
