"""jaxac's default sweeper and launcher (`hydra/sweeper=jaxac_basic`, `hydra/launcher=jaxac_basic`,
registered by `jaxac.config.register_configs`; Hydra plugins, so they live in the `hydra_plugins`
namespace where Hydra looks for them): Hydra's basic ones, except that a job whose overrides do
not compose (a value of the wrong type, an unknown key) is recorded as a failed job, with
`failure.json` in its job directory, and the other jobs still run. The sweep then ends as any
sweep with a failed job does (status 1, naming it)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, \
    setup_globals
from hydra.errors import ConfigCompositionException
from omegaconf import open_dict

from jaxac.rundir import record_failure

log = logging.getLogger(__name__)


def job_dir_name(overrides: Sequence[str], exclude: Sequence[str]) -> str:
    """The job directory name Hydra gives `overrides` (its `override_dirname`: the overrides
    other than `exclude`, sorted, joined by commas)."""
    kept = [o for o in overrides if o.lstrip("+~").partition("=")[0] not in set(exclude)]
    return ",".join(sorted(kept))


class JaxacSweeper(BasicSweeper):
    """Hydra's basic sweeper, whose check that every job composes reports the jobs that do not
    (the launcher records them as failed) instead of refusing the whole sweep."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        for overrides in batch:
            try:
                super().validate_batch_is_legal([overrides])
            except ConfigCompositionException as error:
                log.error(f"the job {' '.join(overrides)} will fail: {error}")


class JaxacLauncher(BasicLauncher):
    """Runs the jobs one after another in this process; a job that does not compose fails alone.
    With `n_jobs` > 1 (`hydra.launcher.n_jobs`), runs a batch's jobs in that many processes
    instead, with Hydra's joblib launcher (an Optuna sweeper's batch of trials)."""

    def __init__(self, n_jobs: int = 1) -> None:
        super().__init__()
        self.n_jobs = int(n_jobs)

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        if self.n_jobs > 1 and len(job_overrides) > 1:
            from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

            parallel = JoblibLauncher(n_jobs=self.n_jobs)
            parallel.setup(hydra_context=self.hydra_context, task_function=self.task_function,
                           config=self.config)
            return parallel.launch(job_overrides, initial_job_idx)
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        exclude = list(self.config.hydra.job.config.override_dirname.exclude_keys)
        runs: list[JobReturn] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            try:
                sweep_config = self.hydra_context.config_loader.load_sweep_config(
                    self.config, list(overrides))
            except ConfigCompositionException as error:
                job_dir = sweep_dir / job_dir_name(overrides, exclude)
                message = f"configuration error: {error}" + (
                    f" ({error.__cause__})" if error.__cause__ else "")
                log.error(f"job #{idx} not run: {message}")
                job_dir.mkdir(parents=True, exist_ok=True)
                record_failure(job_dir, "config_error", message, exit_code=2)
                runs.append(JobReturn(overrides=list(overrides), working_dir=str(job_dir),
                                      status=JobStatus.FAILED, _return_value=error))
                continue
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            runs.append(run_job(hydra_context=self.hydra_context,
                                task_function=self.task_function, config=sweep_config,
                                job_dir_key="hydra.sweep.dir",
                                job_subdir_key="hydra.sweep.subdir"))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return runs
