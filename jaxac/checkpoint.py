"""Checkpoints: msgpack-serialised pytrees (flax.serialization, no pickle), written atomically.

A run directory's `checkpoint/` holds:

- `policy.msgpack`: the final parameters and observation statistics of every seed;
  `load_policy(run_dir)` rebuilds the network from the run's saved Hydra config.
- `state-<env steps>.msgpack` + `.json`: full training checkpoints (everything a trainer needs to
  continue: parameters, optimizer state, environment states, RNG keys, counters) and their
  metadata, which carries the payload's SHA-256. The newest `checkpoint_keep` are kept; loading
  falls back to an older one when the newest is incomplete or corrupt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import serialization
from omegaconf import DictConfig, OmegaConf

from jaxac.config import DistributedConfig, RayConfig, require
from jaxac.envs import EnvSpec, make_env
from jaxac.metrics import json_safe, temporary_path, write_json
from jaxac.rundir import check_resume_path
from jaxac.networks import ActorCritic, make_network
from jaxac.normalization import ObsStats, init_obs_stats

log = logging.getLogger("jaxac")

CHECKPOINT_DIR = "checkpoint"
POLICY_FILE = f"{CHECKPOINT_DIR}/policy.msgpack"
_STATE_NAME = re.compile(r"^state-(\d+)\.json$")


def save_tree(path: str | os.PathLike, tree: Any) -> bytes:
    """Serialise `tree` to `path` atomically: a crash mid-write leaves any older file intact.
    Returns the bytes written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = serialization.to_bytes(jax.device_get(tree))
    tmp = temporary_path(path)
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return payload


def load_tree(path: str | os.PathLike, target: Any) -> Any:
    """Read a tree written by `save_tree` into the structure of `target`."""
    with open(path, "rb") as f:
        return serialization.from_bytes(target, f.read())


def network_from_config(cfg: DictConfig, spec: EnvSpec) -> ActorCritic:
    n = cfg.network
    log_std_init = n.get("log_std_init")  # absent from configs saved before it existed
    return make_network(spec, n.torso, list(n.hidden_sizes), n.activation, n.conv_channels,
                        n.conv_dense, 0.0 if log_std_init is None else float(log_std_init))


def save_policy(run_dir: str | os.PathLike, params: Any, obs_stats: ObsStats) -> Path:
    """Save every seed's parameters and observation statistics (leading axis: seed)."""
    path = Path(run_dir) / POLICY_FILE
    save_tree(path, {"params": params, "obs_stats": obs_stats})
    return path


@dataclass
class Policy:
    spec: EnvSpec
    network: ActorCritic
    params: Any  # leading axis: seed
    obs_stats: ObsStats
    normalize_obs: bool
    config: DictConfig


def load_policy(run_dir: str | os.PathLike) -> Policy:
    """Load a finished run's policy (network rebuilt from `.hydra/config.yaml` in the run)."""
    run_dir = Path(run_dir)
    cfg_path, ckpt = run_dir / ".hydra" / "config.yaml", run_dir / POLICY_FILE
    for needed in (cfg_path, ckpt):
        if not needed.exists():
            raise FileNotFoundError(f"{run_dir} is not a finished jaxac run: {needed} is missing")
    cfg = OmegaConf.load(cfg_path)
    spec = make_env(cfg.env.name)
    network = network_from_config(cfg, spec)
    seeds = int(cfg.seeds)
    one = network.init(jax.random.PRNGKey(0), jnp.zeros((1,) + spec.obs_shape))
    stack = lambda tree: jax.tree.map(lambda x: jnp.stack([x] * seeds), tree)  # noqa: E731
    target = {"params": stack(one), "obs_stats": stack(init_obs_stats(spec.obs_shape))}
    tree = load_tree(ckpt, target)
    return Policy(spec, network, tree["params"], tree["obs_stats"], bool(cfg.env.normalize_obs),
                  cfg)


# ----- training checkpoints (resume) --------------------------------------------------------------

class CheckpointError(RuntimeError):
    """No usable training checkpoint where one was expected."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One training checkpoint on disk whose payload matched its recorded checksum."""

    payload_path: Path
    meta: dict

    @property
    def env_steps(self) -> int:
        return int(self.meta["env_steps"])


def _state_files(run_dir: Path) -> list[tuple[int, Path]]:
    """(env steps, metadata path) of every training checkpoint, newest first."""
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STATE_NAME.match(p.name))]
    return sorted(found, reverse=True)


# What a checkpoint was trained with and must be resumed with: the batch, the algorithm, the
# environment and the network (the shapes of everything it holds).
IDENTITY_KEYS = ("algo.name", "env.name", "env.normalize_obs", "workers", "seeds",
                 "rollout_length", "algo.envs_per_worker", "network.torso",
                 "network.hidden_sizes", "network.activation", "network.conv_channels",
                 "network.conv_dense")


def run_identity(cfg: DictConfig) -> dict:
    """The IDENTITY_KEYS of a run's config (None where a key does not apply)."""
    return {key: json_safe(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)
            for key in IDENTITY_KEYS
            for value in [OmegaConf.select(cfg, key, default=None)]}


def _digest(payload: bytes, meta: dict) -> str:
    """SHA-256 of the payload and of the metadata (all but the digest itself), canonically."""
    fields = {k: v for k, v in meta.items() if k != "sha256"}
    text = json.dumps(json_safe(fields), sort_keys=True).encode()
    return hashlib.sha256(payload + b"\0" + text).hexdigest()


def find_checkpoint(run_dir: str | os.PathLike) -> CheckpointInfo | None:
    """The newest training checkpoint that is complete and intact, or None.

    A checkpoint counts once its metadata exists (it is written after the payload), is a JSON
    object, and the SHA-256 recorded there matches the payload and the metadata (format 1, before
    the metadata was covered: the payload alone); others are skipped with a warning.
    """
    for _, meta_path in _state_files(Path(run_dir)):
        payload_path = meta_path.with_suffix(".msgpack")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            payload = payload_path.read_bytes()
        except (OSError, ValueError) as error:
            log.warning(f"skipping checkpoint {meta_path.name}: unreadable ({error})")
            continue
        if not isinstance(meta, dict) or not isinstance(meta.get("env_steps"), int):
            log.warning(f"skipping checkpoint {meta_path.name}: its metadata is not a checkpoint's "
                        "(a JSON object with env_steps)")
            continue
        expected = (hashlib.sha256(payload).hexdigest() if meta.get("format") == 1
                    else _digest(payload, meta))
        if expected != meta.get("sha256"):
            log.warning(f"skipping checkpoint {payload_path.name}: its contents or metadata do not "
                        "match the checksum recorded when it was written (corrupt, edited or "
                        "partly written)")
            continue
        return CheckpointInfo(payload_path, meta)
    return None


def load_checkpoint(info: CheckpointInfo, target: Any) -> Any:
    """The training state stored in `info`, in the structure of `target`; CheckpointError if
    any array's shape differs from the target's (a checkpoint of another batch or network)."""
    restored = load_tree(info.payload_path, target)
    for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(target),
                                 jax.tree.leaves(restored)):
        if jnp.shape(want) != jnp.shape(got):
            raise CheckpointError(
                f"{info.payload_path} holds {jax.tree_util.keystr(path)} of shape "
                f"{jnp.shape(got)} where this run's config needs {jnp.shape(want)}")
    return restored


class FinalWriteFailed(OSError):
    """The final checkpoint could not be written into the run directory; `rescued` is where
    the trained state was saved instead (None if nowhere: the newest periodic checkpoint is
    then the last one kept)."""

    def __init__(self, error: OSError, rescued: Path | None, last_periodic: int | None):
        self.error, self.rescued = error, rescued
        newest = "none" if last_periodic is None else f"env step {last_periodic:,}"
        kept = (f"the trained state was saved to {rescued}/checkpoint instead (copy it into the "
                "run directory's checkpoint/ to resume from it)" if rescued
                else "it could not be saved anywhere else either; the newest periodic "
                f"checkpoint ({newest}) is kept")
        super().__init__(f"the final checkpoint could not be written ({error}); {kept}")


class Checkpointer:
    """Writes a trainer's periodic training checkpoints into `run_dir/checkpoint/`.

    `every`: environment steps (per seed) between two checkpoints, 0 for none but the final one;
    `keep`: how many of the newest to keep on disk.
    """

    def __init__(self, run_dir: str | os.PathLike, every: int, keep: int,
                 resume_from: CheckpointInfo | None = None, identity: dict | None = None,
                 write: bool = True):
        """`identity`: the run's `run_identity`, stored with every checkpoint and checked on
        resume. `write=False`: keep the cadence but write nothing (the processes other than 0
        of a multi-process run)."""
        self.run_dir, self.every, self.keep = Path(run_dir), int(every), max(1, int(keep))
        self.write = write
        self.resume_from, self.identity = resume_from, identity
        # which checkpoints are this run's (the only ones retention may delete): kept on resume
        self.run_id = (resume_from.meta.get("run_id") if resume_from else None) or uuid.uuid4().hex
        self.last_env_steps = resume_from.env_steps if resume_from else None
        self._next = self._next_after(self.last_env_steps or 0)
        if resume_from is not None and write:
            self._set_aside_newer_than(resume_from.env_steps)

    def _set_aside_newer_than(self, env_steps: int) -> None:
        """Rename checkpoints newer than the one resumed from (corrupt or incomplete ones) so
        they are neither loaded nor mistaken for the newest; nothing is deleted."""
        for steps, meta_path in _state_files(self.run_dir):
            if steps > env_steps:
                for path in (meta_path, meta_path.with_suffix(".msgpack")):
                    if path.exists():
                        path.rename(path.with_name(path.name + ".unusable"))

    def _next_after(self, env_steps: int) -> float:
        return (env_steps // self.every + 1) * self.every if self.every > 0 else float("inf")

    def save_elsewhere(self, tree: Any, meta: dict) -> Path | None:
        """Save a checkpoint that could not go into the run directory into a fresh folder of the
        system's temporary directory, as this run's; that folder, or None if it failed too."""
        try:
            folder = Path(tempfile.mkdtemp(prefix=f"jaxac-rescued-{os.getpid()}-"))
            elsewhere = Checkpointer(folder, 0, self.keep, identity=self.identity)
            elsewhere.run_id = self.run_id  # the same run's checkpoint, only elsewhere
            elsewhere.save(tree, meta)
            return folder
        except OSError as error:
            log.error(f"could not save the checkpoint elsewhere either: {error}")
            return None

    def _written_by_this_run(self, meta_path: Path) -> bool:
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(meta, dict) and meta.get("run_id") == self.run_id

    def due(self, env_steps: int) -> bool:
        """Whether a periodic checkpoint is due at this log point."""
        return env_steps >= self._next

    def save(self, tree: Any, meta: dict) -> Path:
        """Write `tree` and `meta` (which must hold `env_steps`) as the newest checkpoint."""
        env_steps = int(meta["env_steps"])
        base = self.run_dir / CHECKPOINT_DIR / f"state-{env_steps:012d}"
        if not self.write:
            self.last_env_steps, self._next = env_steps, self._next_after(env_steps)
            return base.with_suffix(".msgpack")
        payload = save_tree(base.with_suffix(".msgpack"), tree)
        meta = json_safe({**meta, "run": self.identity, "run_id": self.run_id, "format": 2})
        # The metadata goes last: a checkpoint without it is incomplete and never loaded.
        write_json(base.with_suffix(".json"), {**meta, "sha256": _digest(payload, meta)})
        self.last_env_steps = env_steps
        self._next = self._next_after(env_steps)
        for _, old in _state_files(self.run_dir)[self.keep:]:
            if self._written_by_this_run(old):
                old.unlink(missing_ok=True)
                old.with_suffix(".msgpack").unlink(missing_ok=True)
        return base.with_suffix(".msgpack")


# What a resumed run may change: how long it goes on and how it reports, never what it learns.
RESUME_CHANGEABLE = {"total_steps": int, "eval_episodes": int, "progress_seconds": (int, float),
                     "checkpoint_every": int, "checkpoint_keep": int, "devices": (int, type(None)),
                     "xla_cpu_threads": (int, type(None)), "eval_every": int,
                     "eval_episodes_during": int, "render_final": bool,
                     # A3C's checkpoints are the same in both backends
                     "algo.backend": str}


def resume_config(resume: str, overrides: list[str] = ()) -> DictConfig:
    """The config to continue the run in directory `resume`: its saved config, plus command-line
    `overrides` of the keys in RESUME_CHANGEABLE. Raises ConfigError for a directory that is not a
    run or holds no intact checkpoint, and for an override of any other key."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    check_resume_path(resume)
    run_dir = Path(resume)
    saved = run_dir / ".hydra" / "config.yaml"
    checkpoint = find_checkpoint(run_dir)
    require(checkpoint is not None, "resume", resume,
             "a run directory holding an intact training checkpoint (checkpoint/state-*.json); "
             "this one has none")
    cfg = OmegaConf.load(saved)
    # How the processes are started is this invocation's, not the run's: a run of 2 processes
    # resumes as 1 (or 4) where its batch divides evenly.
    cfg.distributed = OmegaConf.structured(DistributedConfig)
    cfg.ray = OmegaConf.structured(RayConfig)  # where the actors run, likewise
    changeable = ", ".join(RESUME_CHANGEABLE)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if key == "resume" or key.startswith("hydra"):
            continue
        if key.startswith(("distributed.", "ray.")):
            OmegaConf.update(cfg, key, override.value())
            continue
        value = override.value()
        require(key in RESUME_CHANGEABLE, key, value,
                 f"left as saved when resuming (the run continues with its own config); only "
                 f"{changeable} may change")
        wanted = RESUME_CHANGEABLE[key]
        require(isinstance(value, wanted) and (wanted is bool or not isinstance(value, bool)), key,
                 value, f"a value of type {RESUME_CHANGEABLE[key]}")
        OmegaConf.update(cfg, key, value)
    require(cfg.total_steps >= checkpoint.env_steps, "total_steps", cfg.total_steps,
             f"at least the {checkpoint.env_steps:,} env steps of the checkpoint it resumes from")
    held = checkpoint.meta.get("run") or {}  # absent before checkpoints recorded it
    for key, value in run_identity(cfg).items():
        require(key not in held or held[key] == value, key, value,
                f"{held.get(key)!r}, what the checkpoint {checkpoint.payload_path.name} was "
                f"trained with ({saved} says otherwise: was it edited?)")
    cfg.resume = str(run_dir)
    return cfg
