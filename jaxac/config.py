"""The one configuration schema: every key's type, default and allowed values, and validation.

The dataclasses below are the only place defaults are stated (Hydra's ConfigStore serves them;
`conf/algo/*.yaml` only pick a schema, `conf/env/` and `conf/tuned/` are presets that override).
The allowed-value lists are here too, and the modules that need one import it from here. The
schema catches wrong types and unknown keys while Hydra composes the config; `validate` catches
wrong values, before anything is compiled, with one message naming the key, the value and what is
allowed.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from jaxac import resources


ALGOS = ("a2c", "a3c")
TORSOS = ("auto", "mlp", "conv")
ACTIVATIONS = ("tanh", "relu")
OPTIMIZERS = ("rmsprop", "adam")
UPDATE_MODES = ("locked", "hogwild")  # A3C: `algo.update`
BACKENDS = ("threads", "ray")  # A3C: `algo.backend`
RAY_INSTALL = 'pip install -e ".[ray]"'
# What `python -m jaxac.run` returns to a Hydra sweeper (Optuna), to maximise: the mean final
# greedy return over seeds | minus the mean env steps to the solve threshold (an unsolved seed
# counts the whole budget).
OBJECTIVES = ("final_return", "steps_to_threshold")
WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class EnvConfig:
    name: str = "CartPole-v1"
    normalize_obs: bool = False
    # Mean return of the last 100 training episodes that counts as solved; None: the classic
    # threshold for `name` if it has one (CartPole-v1: 475), else no solve tracking.
    solve_threshold: Optional[float] = None


@dataclass
class NetworkConfig:
    torso: str = "auto"  # auto (conv for image observations, else mlp) | mlp | conv
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    conv_channels: int = 16
    conv_dense: int = 128
    # Initial log standard deviation of the Gaussian policy (continuous actions only); None: 0.0.
    log_std_init: Optional[float] = None


@dataclass
class AlgoConfig:
    """Learner hyperparameters shared by A2C and A3C."""

    name: str = MISSING
    gamma: float = 0.99
    gae_lambda: float = 1.0  # 1.0: the plain n-step return of the A3C paper; < 1: GAE(lambda)
    value_coef: float = 0.5
    entropy_coef: float = 0.01
    reward_scale: float = 1.0  # the learner sees reward * reward_scale; logged returns stay raw
    lr: float = 7e-4
    optimizer: str = "rmsprop"  # one of OPTIMIZERS; A3C shares one optimizer state
    rmsprop_decay: float = 0.99
    eps: float = 1e-5
    max_grad_norm: float = 0.5  # global-norm gradient clipping
    anneal_lr: bool = False  # linear learning-rate decay to 0 over the run
    # A3C: one of BACKENDS, worker threads in this process | Ray actors, on this machine or a
    # cluster. (Here for both, so that `resume=RUN algo.backend=ray` composes; A2C: threads.)
    backend: str = "threads"


@dataclass
class A2CConfig(AlgoConfig):
    name: str = "a2c"
    # Adam at 1e-3 learns every family from the defaults (Catch-bsuite, MountainCar-v0 among
    # them, where RMSprop at 7e-4 stalls on some seeds; docs/learning.md). SB3's RMSprop
    # settings, for comparisons with SB3: `+experiment=sb3_a2c`.
    optimizer: str = "adam"
    lr: float = 1e-3


@dataclass
class A3CConfig(AlgoConfig):
    name: str = "a3c"
    # One number for every worker, or {log_uniform: [low, high]}: each worker draws its own.
    entropy_coef: Any = 0.01
    # The A3C paper's clip: with 5-sample updates the critic's error dominates the gradient norm,
    # and A2C's tight 0.5 shrinks each update's policy part by a varying factor (CartPole stalls).
    max_grad_norm: float = 40.0
    anneal_lr: bool = True
    update: str = "locked"  # one of UPDATE_MODES: a short critical section | no lock at all
    envs_per_worker: int = 1
    staleness_lr: bool = False  # scale each update by 1 / (1 + staleness)


@dataclass
class DistributedConfig:
    """One A2C run over several processes (hosts) with jax.distributed (jaxac/distributed.py)."""

    num_processes: int = 1  # 1: a single-process run (the default)
    process_id: int = 0  # this process's index, 0 .. num_processes - 1; 0 owns the run directory
    coordinator: Optional[str] = None  # HOST:PORT where process 0 serves the coordinator
    auto: bool = False  # take all three from the cluster environment JAX detects (SLURM, Open MPI)
    timeout: int = 60  # seconds to wait for every process to join (and for a peer to answer)
    # seconds without a heartbeat after which JAX's coordinator declares a process lost (and
    # aborts the others); jaxac's own watch names a lost peer after half of it
    heartbeat_timeout: int = 10


@dataclass
class RayConfig:
    """Where `algo.backend=ray` runs its actors (jaxac/a3c/ray_trainer.py)."""

    # null: start a local Ray instance on this machine; "auto": join the running cluster (after
    # `ray start --head` on its head node); or a cluster address such as "10.0.0.1:6379"
    address: Optional[str] = None
    # CPUs each worker actor reserves; null: 1 where the cluster has a CPU for every worker and
    # the server, else the cluster's CPUs shared among them (oversubscribed, as threads are)
    worker_cpus: Optional[float] = None
    worker_gpus: float = 0.0  # GPUs each worker actor reserves (fractions share one GPU)
    server_cpus: float = 1.0  # CPUs the parameter-server actor reserves
    max_restarts: int = 10  # restarts Ray gives each worker actor that dies; -1: no limit


@dataclass
class TensorBoardConfig:
    """`logger=tensorboard`: event files in the run directory (tensorboardX; no TensorFlow)."""

    dir: str = "tensorboard"  # relative to the run directory
    flush_secs: float = 10.0


@dataclass
class WandbConfig:
    """`logger=wandb`: a Weights & Biases run per jaxac run."""

    project: str = "jaxac"
    entity: Optional[str] = None
    group: Optional[str] = None  # null: the sweep's directory name in a sweep, else none
    tags: list[str] = field(default_factory=list)
    mode: str = "online"  # one of WANDB_MODES; offline writes into the run directory only
    init_timeout: float = 60.0  # seconds wandb.init may take before the tracker is given up


@dataclass
class LoggerConfig:
    """Experiment trackers, fed off the training path (jaxac/trackers.py); null: not used.
    `logger=[tensorboard,wandb]` selects both (conf/logger/)."""

    tensorboard: Optional[TensorBoardConfig] = None
    wandb: Optional[WandbConfig] = None


@dataclass
class Config:
    algo: Any = MISSING
    env: EnvConfig = field(default_factory=EnvConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    seeds: int = 1  # independent agents trained side by side (vmapped)
    workers: int = 8  # parallel actors: vmapped environments for A2C, threads for A3C
    rollout_length: int = 5
    total_steps: int = 500_000  # environment steps per seed
    # None: every accelerator, or on a machine without one the CPU layout `platform.choose_layout`
    # picks for the batch; N: N devices (on a CPU, N CPU devices)
    devices: Optional[int] = None
    log_interval: int = 20_000  # environment steps between two metric lines
    progress_seconds: float = 2.0  # at most this long between two console progress lines
    eval_episodes: int = 100  # greedy evaluation episodes at the end of training
    # Greedy evaluation during training every this many env steps (per seed); 0: off
    eval_every: int = 0
    eval_episodes_during: int = 10  # episodes per seed of each evaluation during training
    # Render the final greedy policy into final_policy.gif (environments with a gymnax visualiser)
    render_final: bool = False
    objective: str = "final_return"  # one of OBJECTIVES: what the run returns to a sweeper
    stop_when_solved: bool = False  # end training at the first log point where every seed solved
    checkpoint_every: int = 100_000  # env steps between training checkpoints; 0: only the last
    checkpoint_keep: int = 2  # newest training checkpoints kept on disk
    resume: Optional[str] = None  # a run directory to continue in place
    # JAX's persistent compilation cache: a repeated run loads its compiled programs instead of
    # compiling again. null turns it off.
    compilation_cache_dir: Optional[str] = "~/.cache/jaxac/jax"
    # Threads of XLA's CPU thread pools (PJRT_NPROC), fixed when JAX starts; null: one per core,
    # except 1 for an A2C batch of at most 64 environments on one device (faster there). 1 suits
    # runs side by side (sweep jobs, one per core).
    xla_cpu_threads: Optional[int] = None


@dataclass
class JaxacLauncherConf:
    """The default sweep launcher (hydra_plugins/jaxac_launcher)."""

    _target_: str = "hydra_plugins.jaxac_launcher.JaxacLauncher"
    n_jobs: int = 1  # > 1: a batch's jobs in parallel processes (joblib), e.g. Optuna's trials


@dataclass
class JaxacSweeperConf:
    """The default sweeper (hydra_plugins/jaxac_launcher): Hydra's basic sweeper's keys."""

    _target_: str = "hydra_plugins.jaxac_launcher.JaxacSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[dict[str, str]] = None


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore (the yaml files in conf/ extend them)."""
    cs = ConfigStore.instance()
    # `${jaxac_if:COND,THEN,ELSE}` in conf/: THEN where COND is set, else ELSE (a resumed run
    # writes into its own directory instead of a new one).
    if not OmegaConf.has_resolver("jaxac_if"):
        OmegaConf.register_new_resolver("jaxac_if", lambda cond, then, otherwise:
                                        then if cond else otherwise)
    # `${jaxac_process:PROCESS_ID,AUTO}`: this process's index in a multi-process run (the
    # configured one, or with auto the cluster environment's); its log file and `.hydra/` follow.
    if not OmegaConf.has_resolver("jaxac_process"):
        OmegaConf.register_new_resolver("jaxac_process", _planned_process_index)
    cs.store(name="base_config", node=Config)
    cs.store(group="hydra/launcher", name="jaxac_basic", node=JaxacLauncherConf)
    cs.store(group="hydra/sweeper", name="jaxac_basic", node=JaxacSweeperConf)
    cs.store(group="algo", name="a2c_schema", node=A2CConfig)
    cs.store(group="algo", name="a3c_schema", node=A3CConfig)


def _planned_process_index(process_id: int, auto: bool) -> int:
    if not auto:
        return int(process_id)
    cluster = cluster_environment()
    return int(cluster.get_process_id()) if cluster is not None else 0


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message names key, value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def steps_per_update(cfg: DictConfig) -> int:
    """Environment steps one update consumes (per seed)."""
    return int(cfg.workers) * int(cfg.rollout_length)


def schema_for(algo: str) -> DictConfig:
    """The schema of a run of `algo`, every key at its default."""
    node = A3CConfig if algo == "a3c" else A2CConfig
    # the trackers' sections as they are when selected (null when not), to check their keys
    trackers = {"tensorboard": OmegaConf.structured(TensorBoardConfig),
                "wandb": OmegaConf.structured(WandbConfig)}
    return OmegaConf.merge(OmegaConf.structured(Config), {"algo": OmegaConf.structured(node),
                                                         "logger": trackers})


def _dotted_keys(node: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in node:
        value = node._get_node(key)
        keys.append(f"{prefix}{key}")
        if isinstance(value, DictConfig):
            keys += _dotted_keys(value, f"{prefix}{key}.")
    return keys


def check_keys(cfg: DictConfig) -> None:
    """Refuse a key the schema does not have (one added with `+key=value` too), naming the
    closest schema keys. Values of `Any`-typed keys (A3C's entropy spread) are not looked into."""
    schema = schema_for(str(cfg.algo.get("name", "a2c")))
    known = [key for key in _dotted_keys(schema)
             if not isinstance(OmegaConf.select(schema, key), DictConfig)]

    def walk(node: DictConfig, reference: DictConfig, prefix: str) -> None:
        for key in node:
            dotted = f"{prefix}{key}"
            if key not in reference:
                close = difflib.get_close_matches(dotted, known, n=3, cutoff=0.6)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise ConfigError(dotted, OmegaConf.to_container(node)[key]
                                  if isinstance(node._get_node(key), DictConfig) else node[key],
                                  f"a key of the schema (jaxac/config.py, README's options "
                                  f"table){hint}")
            child, expected = node._get_node(key), reference._get_node(key)
            if isinstance(child, DictConfig) and isinstance(expected, DictConfig):
                walk(child, expected, f"{dotted}.")

    walk(cfg, schema, "")


def check_finite(cfg: DictConfig, prefix: str = "") -> None:
    """Refuse any float value that is NaN or infinite, naming its key."""
    for key in cfg:
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and node._metadata.object_type is not dict:
            check_finite(node, f"{prefix}{key}.")  # a schema section: name its own keys
            continue
        value = OmegaConf.to_container(node) if isinstance(node, (DictConfig, ListConfig)) \
            else cfg[key]
        require(all(math.isfinite(x) for x in _floats(value)), f"{prefix}{key}", value,
                "finite numbers only (no NaN or infinity)")


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _floats(v)]
    if isinstance(value, list):
        return [x for v in value for x in _floats(v)]
    return []


def validate(cfg: DictConfig, available_devices: int, processes: int = 1) -> None:
    """Check every key and every value that the schema's types cannot; raise ConfigError on the
    first bad one. `available_devices`: this process's; `processes`: of a multi-process run,
    whose batch splits over the devices of every process (`devices` counts one process's)."""
    from jaxac.envs import env_names, make_env, unknown_env_message

    algo = cfg.algo
    require(algo.name in ALGOS, "algo", algo.name, f"one of {', '.join(ALGOS)}")
    check_keys(cfg)
    check_finite(cfg)
    if cfg.env.name not in env_names():
        raise ConfigError("env.name", cfg.env.name, unknown_env_message(cfg.env.name))
    try:
        spec = make_env(cfg.env.name)
    except ValueError as error:  # spaces jaxac cannot handle, data that is missing
        raise ConfigError("env.name", cfg.env.name, str(error)) from error
    require(cfg.seeds >= 1, "seeds", cfg.seeds, "an integer >= 1")
    require(cfg.workers >= 1, "workers", cfg.workers, "an integer >= 1")
    require(cfg.rollout_length >= 1, "rollout_length", cfg.rollout_length, "an integer >= 1")
    per_update = steps_per_update(cfg)
    require(cfg.total_steps >= per_update, "total_steps", cfg.total_steps,
             f"at least one update's worth of steps, workers * rollout_length = {per_update}")
    require(cfg.log_interval >= 1, "log_interval", cfg.log_interval, "an integer >= 1")
    require(cfg.progress_seconds > 0, "progress_seconds", cfg.progress_seconds, "a number > 0")
    require(cfg.eval_episodes >= 0, "eval_episodes", cfg.eval_episodes, "an integer >= 0")
    validate_reporting(cfg)
    require(cfg.checkpoint_every >= 0, "checkpoint_every", cfg.checkpoint_every,
             "an integer >= 0 (0: only the final checkpoint)")
    require(cfg.checkpoint_keep >= 1, "checkpoint_keep", cfg.checkpoint_keep, "an integer >= 1")
    require(algo.lr > 0, "algo.lr", algo.lr, "a number > 0")
    for key in ("gamma", "gae_lambda"):
        value = algo[key]
        require(0.0 <= value <= 1.0, f"algo.{key}", value, "a number in [0, 1]")
    require(algo.reward_scale > 0, "algo.reward_scale", algo.reward_scale, "a number > 0")
    if algo.name == "a2c":
        require(algo.entropy_coef >= 0, "algo.entropy_coef", algo.entropy_coef, "a number >= 0")
    require(algo.value_coef >= 0, "algo.value_coef", algo.value_coef, "a number >= 0")
    require(algo.max_grad_norm > 0, "algo.max_grad_norm", algo.max_grad_norm, "a number > 0")
    require(algo.eps > 0, "algo.eps", algo.eps, "a number > 0")
    require(0.0 <= algo.rmsprop_decay < 1.0, "algo.rmsprop_decay", algo.rmsprop_decay,
             "a number in [0, 1)")
    require(algo.optimizer in OPTIMIZERS, "algo.optimizer", algo.optimizer,
             f"one of {', '.join(OPTIMIZERS)}")
    require(cfg.network.torso in TORSOS, "network.torso", cfg.network.torso,
             f"one of {', '.join(TORSOS)}")
    require(cfg.network.activation in ACTIVATIONS, "network.activation", cfg.network.activation,
             f"one of {', '.join(ACTIVATIONS)}")
    require(len(cfg.network.hidden_sizes) >= 1 and min(cfg.network.hidden_sizes) >= 1,
             "network.hidden_sizes", list(cfg.network.hidden_sizes),
             "a non-empty list of positive layer widths")
    if cfg.network.torso == "conv":
        shape = spec.obs_shape
        require(len(shape) == 3, "network.torso", cfg.network.torso,
                f"mlp or auto for {cfg.env.name}, whose observations have shape {shape}: the "
                "conv torso needs images (height, width, channels)")
    if cfg.network.log_std_init is not None:
        require(not spec.discrete, "network.log_std_init",
                 cfg.network.log_std_init, f"unset (null) for {cfg.env.name}, whose actions are "
                 "discrete: it sets the Gaussian policy of continuous-action environments")
    _check_memory(cfg, spec.obs_shape)
    if cfg.compilation_cache_dir is not None:
        check_writable_dir("compilation_cache_dir", cfg.compilation_cache_dir)
    validate_xla_cpu_threads(cfg)
    validate_distributed(cfg)
    validate_backend(cfg)
    if cfg.devices is not None:
        require(1 <= cfg.devices <= available_devices, "devices", cfg.devices,
                 f"between 1 and the {available_devices} available device(s), or null for all "
                 "(on a machine without accelerators a fresh process gets as many CPU devices as "
                 "`devices` asks for)")
    n_devices = (cfg.devices or available_devices) * processes
    if algo.name == "a3c":
        _validate_a3c(cfg)
    if algo.name == "a2c":
        count = (f"{n_devices}: {n_devices // processes} per process x {processes} processes"
                 if processes > 1 else f"{n_devices}")
        require(cfg.workers % n_devices == 0, "workers", cfg.workers,
                 f"a multiple of the number of devices ({count}), so the environment batch "
                 "splits evenly")


# ----- a multi-process run (jaxac/distributed.py), as far as it is decided before JAX starts -----
def multi_process_requested(cfg: DictConfig) -> bool:
    """Whether the config asks for a multi-process run (more than one process, or `auto`)."""
    d = cfg.get("distributed")
    return d is not None and (bool(d.auto) or int(d.num_processes) > 1)


def cluster_environment() -> Any | None:
    """The cluster environment JAX would detect here (SLURM, Open MPI, ...), or None."""
    from jax._src import clusters

    for env in clusters.ClusterEnv._cluster_types:
        try:
            if env.is_env_present():
                return env
        except Exception:  # noqa: BLE001 - a detector that cannot decide is not this cluster
            continue
    return None


def planned_process(cfg: DictConfig) -> tuple[int, int]:
    """(process id, process count) the config gives this process, read without starting JAX:
    the configured ones, or with `auto` the cluster environment's. ConfigError when `auto` finds
    no cluster environment."""
    d = cfg.distributed
    if not d.auto:
        return int(d.process_id), int(d.num_processes)
    cluster = cluster_environment()
    if cluster is None:
        raise ConfigError("distributed.auto", True, "false here: no cluster environment that JAX "
                          "detects (SLURM: SLURM_JOB_ID, SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID, "
                          "SLURM_STEP_NODELIST; Open MPI: OMPI_MCA_orte_hnp_uri) is set; give "
                          "distributed.num_processes, process_id and coordinator instead")
    return int(cluster.get_process_id()), int(cluster.get_process_count())


def validate_distributed(cfg: DictConfig) -> None:
    """Check the `distributed` keys (before anything starts): ConfigError naming the key."""
    d = cfg.distributed
    if not d.auto:
        n = int(d.num_processes)
        if n < 1:
            raise ConfigError("distributed.num_processes", n, "an integer >= 1")
        if not 0 <= int(d.process_id) < n:
            raise ConfigError("distributed.process_id", d.process_id,
                              f"an integer in [0, {n - 1}] (distributed.num_processes={n})")
        if n > 1 and not d.coordinator:
            raise ConfigError("distributed.coordinator", d.coordinator,
                              "HOST:PORT of process 0, where it serves the coordinator (every "
                              "process gives the same), e.g. 127.0.0.1:29400")
    if d.coordinator is not None:
        host, _, port = str(d.coordinator).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("distributed.coordinator", d.coordinator,
                              "HOST:PORT, e.g. 127.0.0.1:29400 (the port process 0 listens on)")
    for key in ("timeout", "heartbeat_timeout"):
        if int(d[key]) < 1:
            raise ConfigError(f"distributed.{key}", d[key], "a number of seconds >= 1")
    if multi_process_requested(cfg) and cfg.algo.name != "a2c":
        raise ConfigError("algo", cfg.algo.name, "a2c for a multi-process run: A3C's workers "
                          "apply their updates asynchronously, which does not fit jax.distributed's "
                          "every-process-runs-the-same-program model (an A3C run spans one "
                          "machine; distributed.num_processes=1)")


def check_writable_dir(key: str, value: str) -> None:
    """ConfigError unless `value` is a directory this process can write to, or can create."""
    path = Path(value).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    require(existing.is_dir(), key, value, f"a directory path ({existing} is a file)")
    require(os.access(existing, os.W_OK | os.X_OK), key, value,
            f"a directory this process may write to ({existing} is not writable)")


def _check_memory(cfg: DictConfig, obs_shape: tuple[int, ...]) -> None:
    """Refuse a batch whose estimated memory (`jaxac.resources`) will obviously not fit."""
    per_worker = int(cfg.algo.envs_per_worker) if cfg.algo.name == "a3c" else 1
    net = cfg.network
    need = resources.estimate_bytes(obs_shape, int(cfg.workers) * per_worker, int(cfg.seeds),
                                    int(cfg.rollout_length), net.torso, list(net.hidden_sizes),
                                    int(net.conv_channels), int(net.conv_dense))
    have = resources.available_bytes()
    require(have is None or need <= resources.MOST_OF_AVAILABLE * have, "workers", cfg.workers,
            f"a batch that fits in memory: workers x seeds x rollout_length environment steps "
            f"need about {resources.gib(need)} per update (an estimate made before compiling), "
            f"and this machine has {resources.gib(have or 0)} available")


def validate_reporting(cfg: DictConfig) -> None:
    """Check evaluation during training, rendering, the objective and the trackers."""
    require(cfg.get("eval_every", 0) >= 0, "eval_every", cfg.get("eval_every"),
            "an integer >= 0 (env steps per seed between evaluations; 0: off)")
    require(cfg.get("eval_episodes_during", 1) >= 1, "eval_episodes_during",
            cfg.get("eval_episodes_during"), "an integer >= 1")
    objective = cfg.get("objective", "final_return")
    require(objective in OBJECTIVES, "objective", objective, f"one of {', '.join(OBJECTIVES)}")
    if objective == "steps_to_threshold":
        from jaxac.envs import solve_threshold

        require(solve_threshold(cfg.env.name, cfg.env.solve_threshold) is not None,
                "objective", objective, f"final_return for env.name={cfg.env.name}, which has no "
                "solve threshold; or set env.solve_threshold")
    if cfg.get("render_final"):
        from jaxac.render import renderable_message

        problem = renderable_message(cfg.env.name)
        require(problem is None, "render_final", True, f"false here: {problem}")
    trackers = cfg.get("logger") or {}
    wandb = trackers.get("wandb")
    if wandb is not None:
        require(wandb.mode in WANDB_MODES, "logger.wandb.mode", wandb.mode,
                f"one of {', '.join(WANDB_MODES)}")
        require(wandb.init_timeout > 0, "logger.wandb.init_timeout", wandb.init_timeout,
                "a number of seconds > 0")
    tensorboard = trackers.get("tensorboard")
    if tensorboard is not None:
        require(tensorboard.flush_secs > 0, "logger.tensorboard.flush_secs",
                tensorboard.flush_secs, "a number of seconds > 0")
    from jaxac.trackers import missing_packages

    for name, package, extra in missing_packages(cfg):
        raise ConfigError(f"logger.{name}", "selected", f"not selected here: {package} is not "
                          f"installed; install it with pip install -e \".[{extra}]\"")


def validate_xla_cpu_threads(cfg: DictConfig) -> None:
    """Check `xla_cpu_threads` alone: it is applied before JAX starts, ahead of `validate`."""
    threads = cfg.get("xla_cpu_threads")
    require(threads is None or threads >= 1, "xla_cpu_threads", threads,
             "an integer >= 1, or null for one thread per core")


def _validate_a3c(cfg: DictConfig) -> None:
    algo = cfg.algo
    require(algo["update"] in UPDATE_MODES, "algo.update", algo["update"],
             f"one of {', '.join(UPDATE_MODES)}")
    require(algo.envs_per_worker >= 1, "algo.envs_per_worker", algo.envs_per_worker,
             "an integer >= 1")
    require(cfg.seeds == 1, "seeds", cfg.seeds,
             "1 for A3C (run several seeds as a sweep: -m seed=0,1,2)")
    coef = algo.entropy_coef
    allowed = "a number >= 0, or {log_uniform: [low, high]} with 0 < low <= high"
    if isinstance(coef, (int, float)) and not isinstance(coef, bool):
        require(coef >= 0, "algo.entropy_coef", coef, allowed)
        return
    ok = (isinstance(coef, DictConfig) and set(coef.keys()) == {"log_uniform"}
          and len(coef.log_uniform) == 2
          and all(isinstance(x, (int, float)) for x in coef.log_uniform)
          and 0 < coef.log_uniform[0] <= coef.log_uniform[1])
    require(ok, "algo.entropy_coef", coef if not isinstance(coef, DictConfig)
             else OmegaConf.to_container(coef), allowed)


def validate_backend(cfg: DictConfig) -> None:
    """Check `algo.backend` and the `ray` keys (before JAX starts): ConfigError naming the key."""
    algo = cfg.algo
    backend = algo.get("backend", "threads")
    require(backend in BACKENDS, "algo.backend", backend, f"one of {', '.join(BACKENDS)}")
    if algo.name != "a3c":
        require(backend == "threads", "algo.backend", backend,
                "threads (the default) for A2C: its environments step in one jitted program; "
                "the ray backend runs A3C's workers (A2C beyond one machine: distributed.*)")
    if backend != "ray":
        return
    import importlib.util

    require(importlib.util.find_spec("ray") is not None, "algo.backend", backend,
            f"threads here: Ray is not installed; install it with `{RAY_INSTALL}`")
    require(algo["update"] == "locked", "algo.update", algo["update"],
            "locked with algo.backend=ray: hogwild writes into one shared array without a lock, "
            "and Ray's actors share no memory (use algo.backend=threads for hogwild)")
    ray = cfg.ray
    require(ray.worker_cpus is None or ray.worker_cpus > 0, "ray.worker_cpus", ray.worker_cpus,
            "a number > 0 (fractions share a CPU), or null to size by the cluster")
    require(ray.worker_gpus >= 0, "ray.worker_gpus", ray.worker_gpus, "a number >= 0")
    require(ray.server_cpus >= 0, "ray.server_cpus", ray.server_cpus, "a number >= 0")
    require(ray.max_restarts >= -1, "ray.max_restarts", ray.max_restarts,
            "an integer >= 0, or -1 for no limit")
    address = ray.address
    require(address is None or address == "auto" or _host_port(str(address)), "ray.address",
            address, "null (a local Ray instance), auto (the running cluster) or HOST:PORT "
            "(e.g. 10.0.0.1:6379), or ray://HOST:PORT for Ray Client")


def _host_port(address: str) -> bool:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def compose_config(overrides: list[str] | None = None,
                   return_hydra_config: bool = False) -> DictConfig:
    """The config `python -m jaxac.run OVERRIDES...` would use (for tests and notebooks); with
    `return_hydra_config`, Hydra's own section too."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="config", overrides=list(overrides or []),
                       return_hydra_config=return_hydra_config)
