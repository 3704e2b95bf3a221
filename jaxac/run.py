"""`python -m jaxac.run [OVERRIDES...]`: the Hydra entry point.

Validates the configuration, trains with the trainer `algo` names, then writes into Hydra's run
directory: `metrics.jsonl`, `summary.json`, `learning_curve.png`, `checkpoint/policy.msgpack` and
the training checkpoints `checkpoint/state-*` (and the trackers' files with `logger=...`, the
final policy's GIF with `render_final=true`). `resume=RUN_DIR` continues a run in its directory.
Returns the run's `objective` to a Hydra sweeper (Optuna's).

Exit status: 0 done, 1 an A3C worker failed, 2 invalid configuration (Hydra's own type and key
errors too), 3 training diverged (non-finite loss, gradient or parameters), 4 a write failed (the
trained parameters are rescued where the message says), 5 an internal error (with its
traceback), 6 a multi-process run lost a process or could not join (`jaxac.distributed`), or an
A3C run on Ray lost its parameter-server actor, 130 interrupted (SIGINT/SIGTERM). A failed run
writes `failure.json`. In a sweep (`-m`) a failed job is recorded as failed, the other jobs still run, and the sweep exits with
status 1.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import jax
import matplotlib.pyplot as plt
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from jaxac import a2c, a3c, distributed, loop, rundir
from jaxac.rundir import FAILURE_FILE, record_failure
from jaxac.analysis import read_metrics
from jaxac.plots import plot_learning_curve
from jaxac.checkpoint import (CheckpointError, Checkpointer, FinalWriteFailed, find_checkpoint,
                              network_from_config, resume_config, run_identity, save_policy)
from jaxac.config import CONF_DIR, ConfigError, register_configs, validate, validate_backend
from jaxac import platform
from jaxac.platform import set_up_run as set_up_platform, use_compilation_cache
from jaxac.envs import make_env, solve_threshold
from jaxac.evaluate import GreedyEvaluator, PeriodicEvaluation, evaluate_seeds
from jaxac.trackers import Trackers, make_trackers
from jaxac.results import TrainResult
from jaxac.metrics import (MetricsWriter, Progress, environment_info, peak_memory_mb,
                           truncate_metrics, write_json)
from jaxac.signals import StopRequest

log = logging.getLogger("jaxac")

TRAINERS = {"a2c": a2c.make_trainer, "a3c": a3c.make_trainer}
EXIT_CONFIG_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_WORKER_FAILED = 1
EXIT_DIVERGED = 3
EXIT_WRITE_FAILED = 4
EXIT_INTERNAL_ERROR = 5


def execute(cfg: DictConfig, run_dir: str | Path | None,
            overrides: list[str] = ()) -> dict[str, Any]:
    """Train, evaluate and record one run into `run_dir` (see `_execute`), holding the run
    directory for the run's whole life (`jaxac.rundir`)."""
    held = cfg.get("resume") or run_dir
    try:
        return _execute(cfg, run_dir, overrides)
    finally:
        if held is not None:
            rundir.release(held)


def _execute(cfg: DictConfig, run_dir: str | Path | None,
             overrides: list[str] = ()) -> dict[str, Any]:
    """Train, evaluate and record one run into `run_dir`; returns the summary it wrote.

    With `cfg.resume` set, continues that run in its own directory (`run_dir` is ignored) from its
    newest intact checkpoint, with its saved config and the allowed `overrides` (command-line
    strings such as "total_steps=1000000").
    Raises ConfigError (before anything is compiled or written) on an invalid configuration.
    """
    checkpoint = None
    # Process 0 of a multi-process run (or the only process) owns the run directory.
    main_process = (not distributed.requested(cfg)
                    or distributed.planned_process(cfg)[0] == 0)
    if cfg.get("resume"):
        rundir.check_resume_path(cfg.resume)
        if main_process:
            rundir.lock(cfg.resume, "resume")  # before the resume reads what it continues
        cfg = resume_config(cfg.resume, overrides)
        run_dir = cfg.resume
        checkpoint = find_checkpoint(run_dir)
    else:
        rundir.check_name("env.name", cfg.env.name)
        if main_process:
            rundir.claim_fresh(run_dir)
    distributed.validate(cfg)
    validate_backend(cfg)  # Ray missing: say so before JAX starts
    layout = set_up_platform(cfg)  # before anything starts JAX
    distributed.start(cfg)
    validate(cfg, len(jax.local_devices()), distributed.process_count())
    distributed.check_same_config(cfg)
    run_dir = Path(run_dir)
    monitor = distributed.PeerMonitor(float(cfg.distributed.heartbeat_timeout) / 2,
                                      on_lost=lambda message: _lost(message, run_dir, cfg,
                                                                    main_process)).start()
    try:
        return _train_and_record(cfg, run_dir, checkpoint, layout, main_process)
    finally:
        monitor.finished()


def _lost(message: str, run_dir: Path, cfg: DictConfig, main_process: bool) -> None:
    """A peer of a multi-process run is gone: record it (process 0) and end this process now."""
    if main_process and not cfg.get("resume"):
        record_failure(run_dir, "lost_process", message, exit_code=distributed.EXIT_LOST)
    distributed.abandon(f"{message}\nMetrics up to the loss are in {run_dir}/metrics.jsonl")


def _train_and_record(cfg: DictConfig, run_dir: Path, checkpoint, layout: platform.Layout,
                      main_process: bool) -> dict[str, Any]:
    """The body of `_execute` once the run's directory, config and processes are settled."""
    use_compilation_cache(cfg.compilation_cache_dir)
    saved_config = run_dir / ".hydra" / "config.yaml"
    if checkpoint is not None and main_process:
        OmegaConf.save(cfg, saved_config)  # the changed keys, e.g. a longer total_steps
        aside = truncate_metrics(run_dir, int(checkpoint.meta["metrics_lines"]))
        log.info(f"resuming {run_dir} from its checkpoint at env step {checkpoint.env_steps:,}"
                 + (f"; metric lines logged after it were moved to {aside.name}" if aside else ""))
    elif main_process and not saved_config.exists():  # Hydra writes it for CLI runs
        saved_config.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, saved_config)
    spec = make_env(cfg.env.name)
    network = network_from_config(cfg, spec)
    # A multi-process run's mesh is every device of every process.
    devices = (jax.devices() if distributed.process_count() > 1
               else jax.devices()[: cfg.devices or len(jax.devices())])
    threshold = solve_threshold(cfg.env.name, cfg.env.solve_threshold)
    progress = Progress(f"{cfg.algo.name} {cfg.env.name}", int(cfg.total_steps),
                        float(cfg.progress_seconds), int(cfg.seeds))
    log.info(f"{cfg.algo.name} on {cfg.env.name}: {cfg.seeds} seed(s) x {cfg.workers} workers x "
             f"{cfg.rollout_length} steps per update, {cfg.total_steps:,} env steps per seed, "
             f"{len(devices)} device(s); writing to {run_dir}")
    set_by = "automatic" if layout.automatic else "as set"
    per_process = (f" ({len(jax.local_devices())} per process x "
                   f"{distributed.process_count()} processes)"
                   if distributed.process_count() > 1 else "")
    log.info(f"layout ({set_by}): {len(devices)} {devices[0].platform.upper()} device(s)"
             f"{per_process}, "
             f"xla_cpu_threads={platform.xla_cpu_threads() or 'one per core'}: {layout.reason}")

    checkpointer = Checkpointer(run_dir, int(cfg.checkpoint_every), int(cfg.checkpoint_keep),
                                resume_from=checkpoint, identity=run_identity(cfg),
                                write=main_process)
    def aborted(name: str) -> None:
        if checkpoint is None:  # a resumed run's files stay as its last stop left them
            record_failure(run_dir, "aborted", f"ended by a second {name}; metrics and the last "
                           "periodic checkpoint kept", exit_code=EXIT_INTERRUPTED)

    evaluation = None
    if cfg.get("eval_every", 0) > 0:
        evaluation = PeriodicEvaluation(
            GreedyEvaluator(spec, network.apply, int(cfg.eval_episodes_during),
                            bool(cfg.env.normalize_obs)),
            int(cfg.eval_every), int(cfg.seed),
            history=checkpoint.meta.get("evaluations") if checkpoint is not None else None)
    # Process 0 (or the only process) feeds the trackers, as it writes metrics.jsonl.
    trackers = (make_trackers(cfg, run_dir, OmegaConf.to_container(cfg, resolve=True),
                              checkpoint.env_steps if checkpoint is not None else None,
                              _sweep_name())
                if main_process else Trackers([], {}, ""))
    summary, images = None, {}
    try:
        summary, images = _train(cfg, run_dir, spec, network, devices, threshold, progress,
                                 checkpointer, checkpoint, layout, main_process, evaluation,
                                 trackers, aborted)
    finally:
        trackers.close(summary, images, timeout=_tracker_timeout(cfg))
    return summary


def _train(cfg: DictConfig, run_dir: Path, spec, network, devices: list[Any],
           threshold: float | None, progress: Progress, checkpointer: Checkpointer, checkpoint,
           layout: platform.Layout, main_process: bool, evaluation: PeriodicEvaluation | None,
           trackers, aborted) -> tuple[dict[str, Any], dict[str, Path]]:
    """Train, evaluate, write the records; returns the summary and the figures it drew."""
    images: dict[str, Path] = {}
    # Until the summary is written, a second Ctrl-C ends the run within a second (signals.py).
    with StopRequest(on_abort=aborted) as stop:
        trainer = TRAINERS[cfg.algo.name](cfg, spec, network, devices)  # compiles its init
        # Below the heartbeat timeout: a lost peer is named here before JAX's coordinator
        # aborts every process for it.
        vote = distributed.StopVote(float(cfg.distributed.heartbeat_timeout) / 2,
                                    float(cfg.distributed.timeout))
        with MetricsWriter(run_dir, write=main_process) as writer:
            try:
                result = loop.train(trainer, writer, progress, stop, checkpointer,
                                    seed=int(cfg.seed), log_interval=int(cfg.log_interval),
                                    stop_when_solved=bool(cfg.stop_when_solved),
                                    agree=vote.any, evaluation=evaluation,
                                    to_host=distributed.to_host,
                                    sink=trackers.log if trackers else None)
            except Exception as error:
                if distributed.process_count() > 1 and distributed.is_collective_failure(error):
                    raise distributed.lost_in_collective(error) from error
                raise
        if result.interrupted:
            log.warning(f"stopping on {stop.signal_name}: checkpoint written at env step "
                        f"{result.env_steps:,}; writing the evaluation and summary of what was "
                        f"trained so far. Continue with: python -m jaxac.run resume={run_dir}")
        if result.diverged is not None:
            log.error(result.diverged.message())
        params, obs_stats = distributed.to_host((result.params, result.obs_stats))
        if result.diverged is None and main_process:  # a diverged policy is not worth saving
            save_policy(run_dir, params, obs_stats)

        eval_returns = np.zeros((int(cfg.seeds), 0))
        # The final evaluation runs once, on process 0, on its own copy of the parameters.
        if cfg.eval_episodes > 0 and result.diverged is None and main_process:
            eval_returns = evaluate_seeds(spec, network.apply, params, obs_stats,
                                          jax.random.PRNGKey(int(cfg.seed) + 1_000_003),
                                          int(cfg.eval_episodes), bool(cfg.env.normalize_obs))
        summary = build_summary(cfg, result, eval_returns, threshold, layout, devices,
                                checkpoint.env_steps if checkpoint else None)
        summary["eval_during"] = evaluation.summary() if evaluation is not None else None
        summary["objective"] = objective(cfg, summary, threshold)
        if not main_process:
            log.info(f"process {distributed.process_index()}: training done; process 0 writes "
                     f"the records into {run_dir}")
            return summary, images
        if cfg.get("render_final") and result.diverged is None:
            summary["render"] = _render_final(spec, network, params, obs_stats, cfg, run_dir)
        write_json(run_dir / "summary.json", summary)
        try:
            metrics = read_metrics(run_dir)
        except ValueError as unreadable:  # a damaged metrics.jsonl: no plot, the rest kept
            log.warning(f"no learning curve plotted: {unreadable}")
            metrics = []
        if len(metrics):
            figure = plot_learning_curve(metrics, f"{cfg.algo.name} on {cfg.env.name}",
                                         threshold, run_dir / "learning_curve.png")
            plt.close(figure)  # release it: a sweep runs many jobs in one process
            images["learning_curve"] = run_dir / "learning_curve.png"
    ev, rate = summary["final_eval"], summary["steps_per_second_median"]
    outcome = "diverged" if result.diverged else "interrupted" if result.interrupted else "done"
    log.info(f"{outcome}: {result.env_steps:,} env steps per seed in {result.train_seconds:.1f} s "
             f"(compile {result.compile_seconds:.1f} s, median "
             f"{'n/a' if rate is None else f'{rate:,.0f}'} steps/s); greedy eval return "
             f"{_fmt(ev['return_mean'])}; solved: "
             f"{summary['solved']['all_seeds'] if threshold is not None else 'n/a (no threshold)'}")
    return summary, images


def objective(cfg: DictConfig, summary: dict[str, Any], threshold: float | None) -> dict:
    """What the run returns to a Hydra sweeper (Optuna maximises it), by `objective`: the mean
    final greedy return over seeds, or minus the mean env steps to the solve threshold (an
    unsolved seed counts the whole budget). None for a diverged or interrupted run."""
    name = cfg.get("objective", "final_return")
    value = None
    if summary["diverged"] is None and not summary["interrupted"]:
        if name == "final_return":
            value = summary["final_eval"]["return_mean"]
        elif threshold is not None:
            steps = [s if s is not None else int(cfg.total_steps)
                     for s in summary["solved"]["env_steps"]]
            value = -float(np.mean(steps))
    return {"name": name, "value": value, "maximize": True}


def _render_final(spec, network, params, obs_stats, cfg: DictConfig, run_dir: Path) -> dict:
    """`render_final`: one greedy episode of the first seed's final policy, as a GIF."""
    from jaxac.render import play_greedy, write_animation

    first = jax.tree.map(lambda x: x[0], (params, obs_stats))
    states, returns, lengths = play_greedy(spec, network.apply, *first,
                                           jax.random.PRNGKey(int(cfg.seed) + 3_000_017),
                                           bool(cfg.env.normalize_obs))
    try:
        written = write_animation(spec, states, returns, run_dir / "final_policy.gif")
    except Exception as error:  # noqa: BLE001 - a drawing problem must not cost the trained run
        log.warning(f"render_final: the final policy was not rendered ({error!r})")
        return {"files": [], "error": repr(error)}
    log.info(f"rendered the final policy ({lengths[0]} steps) into {written[0]}")
    return {"files": [p.name for p in written], "episode_length": lengths[0],
            "episode_return": returns[-1], "seed_index": 0}


def _sweep_name() -> str | None:
    """The sweep directory's name in a sweep (`-m`), for the trackers' group; else None."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


def _tracker_timeout(cfg: DictConfig) -> float:
    wandb = (cfg.get("logger") or {}).get("wandb")
    return 30.0 + (float(wandb.init_timeout) if wandb is not None else 0.0)


def build_summary(cfg: DictConfig, result: TrainResult, eval_returns: np.ndarray,
                  threshold: float | None, layout: platform.Layout, devices: list[Any],
                  resumed_from: int | None = None) -> dict[str, Any]:
    """The contents of summary.json."""
    eval_means = [float(r.mean()) if r.size else None for r in eval_returns]
    per_seed_solved = [
        threshold is not None and steps is not None and m is not None and m >= threshold
        for steps, m in zip(result.solved_env_steps, eval_means)]
    return {
        "algo": cfg.algo.name,
        "env": cfg.env.name,
        "seed": int(cfg.seed),
        "seeds": int(cfg.seeds),
        "workers": int(cfg.workers),
        "rollout_length": int(cfg.rollout_length),
        "interrupted": result.interrupted,
        "diverged": None if result.diverged is None else {
            **result.diverged.as_dict(), "message": result.diverged.message()},
        "resumed_from_env_steps": resumed_from,
        "env_steps": result.env_steps,
        "wall_seconds": result.train_seconds,
        "compile_seconds": result.compile_seconds,
        "steps_per_second_median": float(np.median(result.steps_per_second))
        if result.steps_per_second else None,
        "peak_memory_mb": peak_memory_mb(),
        "final_eval": {
            "episodes": int(cfg.eval_episodes),
            "policy": "greedy",
            "return_mean": float(np.mean(eval_means)) if eval_returns.size else None,
            "return_mean_per_seed": eval_means,
            "return_std_per_seed": [float(r.std()) if r.size else None for r in eval_returns],
        },
        "solved": {
            "definition": "mean return of the last 100 finished training episodes >= threshold, "
                          "and final greedy evaluation mean >= threshold",
            "threshold": threshold,
            "all_seeds": bool(per_seed_solved) and all(per_seed_solved),
            "per_seed": per_seed_solved,
            "env_steps": result.solved_env_steps,
            "wall_seconds": result.solved_wall_seconds,
            "wall_seconds_note": "from the start of training, compilation included",
        },
        **({cfg.algo.name: result.extra} if result.extra else {}),
        "layout": {"devices": [str(d) for d in devices],
                   "xla_cpu_threads": platform.xla_cpu_threads(),
                   "automatic": layout.automatic, "reason": layout.reason},
        "environment": environment_info(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


register_configs()


class JobFailed(CompactHydraException):
    """Raised by a failed job of a sweep (`-m`): Hydra records the job as failed, runs the other
    jobs, then exits non-zero naming the first failed job's overrides. A compact Hydra error: the
    expected failure is printed as its message, without a stack trace."""


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN

    def fail(exit_code: int, kind: str, message: str, record: bool = True, **details: Any):
        log.error(message)
        # a failed resume leaves the resumed run's files as they were, and another run's
        # directory is not written to
        if record and not cfg.get("resume") and distributed.is_main():
            record_failure(run_dir, kind, message, exit_code=exit_code, **details)
        if in_sweep:
            raise JobFailed(f"{message}\n(job directory: {run_dir}; failure recorded in "
                            f"{FAILURE_FILE}, as in every failed job of the sweep)") from None
        sys.exit(exit_code)

    try:
        summary = execute(cfg, run_dir, list(hydra_cfg.overrides.task))
    except distributed.DistributedError as error:  # a lost process: end now, never hang
        return _lost(str(error), Path(cfg.get("resume") or run_dir), cfg, distributed.is_main())
    except ConfigError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        return fail(EXIT_CONFIG_ERROR, "config_error", f"configuration error: {error}",
                    record=not isinstance(error, rundir.NotThisRunsDirectory), key=error.key,
                    value=str(error.value))
    except CheckpointError as error:
        return fail(EXIT_CONFIG_ERROR, "checkpoint_error", f"cannot resume: {error}")
    except a3c.WorkerFailed as failure:
        return fail(EXIT_WORKER_FAILED, "worker_failed",
                    f"{failure}\nThe other workers were stopped; metrics up to the failure are "
                    f"in {run_dir}/metrics.jsonl", worker=failure.worker)
    except a3c.ServerLost as lost:
        kept = find_checkpoint(cfg.get("resume") or run_dir)
        where = (f"the newest training checkpoint is at env step {kept.env_steps:,}; continue "
                 f"with: python -m jaxac.run resume={cfg.get('resume') or run_dir}" if kept
                 else "no training checkpoint was written before the loss")
        return fail(distributed.EXIT_LOST, "lost_server", f"{lost}; {where}")
    except FinalWriteFailed as failure:
        return fail(EXIT_WRITE_FAILED, "write_failed", str(failure),
                    rescued=str(failure.rescued) if failure.rescued else None)
    except OSError as error:  # a write of the run's records failed
        kept = find_checkpoint(run_dir)
        where = (f"; the newest training checkpoint (env step {kept.env_steps:,}) holds the "
                 f"trained state: {kept.payload_path}" if kept else "")
        return fail(EXIT_WRITE_FAILED, "write_failed",
                    f"could not write the run's records: {error}{where}")
    except Exception as error:  # noqa: BLE001 - a genuine internal error: record it, show it
        import traceback

        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        trace = traceback.format_exc()
        log.error(trace)
        return fail(EXIT_INTERNAL_ERROR, "internal_error", f"internal error: {error!r}",
                    traceback=trace)
    if summary["diverged"] is not None:
        return fail(EXIT_DIVERGED, "diverged", summary["diverged"]["message"],
                    **{k: v for k, v in summary["diverged"].items() if k != "message"})
    if summary["interrupted"]:
        log.warning(f"interrupted: metrics, summary and checkpoint written to "
                    f"{cfg.get('resume') or run_dir}")
        if in_sweep:
            raise KeyboardInterrupt  # stop the whole sweep, not just this job
        sys.exit(EXIT_INTERRUPTED)
    return summary["objective"]["value"]


# Hydra's own composition errors: a value of the wrong type, an unknown key or group option.
def _hydra_config_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import ConfigCompositionException, OverrideParseException
    from omegaconf.errors import ValidationError

    return ConfigCompositionException, OverrideParseException, ValidationError


def cli() -> None:
    """`python -m jaxac.run`: Hydra's main, with Hydra's own configuration errors exiting 2 (as
    jaxac's do) with one line, before anything is written."""
    from hydra._internal import utils as hydra_utils

    report = hydra_utils.run_and_report
    errors = _hydra_config_errors()

    def config_errors_exit_2(func):
        try:
            return func()
        except errors as error:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            cause = f" ({error.__cause__})" if error.__cause__ else ""
            print(f"configuration error: {error}{cause}", file=sys.stderr)
            sys.exit(EXIT_CONFIG_ERROR)

    hydra_utils.run_and_report = lambda func: report(lambda: config_errors_exit_2(func))
    main()


if __name__ == "__main__":
    cli()
