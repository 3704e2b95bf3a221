"""Hyperparameter search: the search spaces of `+experiment=tune` (Hydra's Optuna sweeper).

Each algorithm has its own space, bracketing its defaults and presets (conf/algo, conf/env,
conf/tuned). The sweeper calls `extend_search_space` for every trial; a key also given in
the command line is left to it: `algo.lr=tag(log,interval(1e-4,1e-2))` replaces a range,
`algo.gamma=0.99` fixes a key, `workers=choice(8,16)` adds one.
"""

from __future__ import annotations

from typing import Any

# key -> ("log", low, high) | ("float", low, high) | ("choice", [values...])
SEARCH_SPACES: dict[str, dict[str, tuple]] = {
    "a2c": {  # defaults: Adam 1e-3, entropy 0.01, gamma 0.99, lambda 1.0, clip 0.5, 5 steps
        "algo.lr": ("log", 1e-4, 3e-3),
        "algo.entropy_coef": ("log", 1e-4, 1e-1),
        "algo.gamma": ("choice", [0.95, 0.98, 0.99, 0.995]),
        "algo.gae_lambda": ("choice", [0.9, 0.95, 1.0]),
        "algo.max_grad_norm": ("choice", [0.5, 1.0, 5.0]),
        "rollout_length": ("choice", [5, 8, 16, 32]),
    },
    "a3c": {  # defaults: RMSprop 7e-4 annealed, entropy 0.01, clip 40, 5 steps, 8 workers
        "algo.lr": ("log", 1e-4, 3e-3),
        "algo.entropy_coef": ("log", 1e-4, 1e-1),
        "algo.gamma": ("choice", [0.95, 0.98, 0.99, 0.995]),
        "algo.gae_lambda": ("choice", [0.9, 0.95, 1.0]),
        "algo.max_grad_norm": ("choice", [0.5, 5.0, 40.0]),
        "rollout_length": ("choice", [5, 10, 20]),
    },
}


def suggest(trial: Any, key: str, spec: tuple) -> Any:
    """Draw `key` from the trial by its search-space entry."""
    kind = spec[0]
    if kind == "log":
        return trial.suggest_float(key, spec[1], spec[2], log=True)
    if kind == "float":
        return trial.suggest_float(key, spec[1], spec[2])
    if kind == "choice":
        return trial.suggest_categorical(key, list(spec[1]))
    raise ValueError(f"search space entry {key}: unknown kind {kind!r}")


def extend_search_space(cfg: Any, trial: Any) -> None:
    """The Optuna sweeper's `custom_search_space`: suggest every key of the run's algorithm's
    space that the command line (`algo.lr=tag(log,interval(1e-4,1e-2))`, `algo.gamma=0.99`) or
    `hydra.sweeper.params` does not set."""
    given = set((cfg.hydra.sweeper.get("params") or {}).keys())
    given |= {str(o).lstrip("+~").partition("=")[0] for o in cfg.hydra.overrides.task}
    for key, spec in SEARCH_SPACES[str(cfg.algo.name)].items():
        if key not in given:
            suggest(trial, key, spec)
