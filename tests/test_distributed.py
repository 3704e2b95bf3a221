"""A2C over several processes (jax.distributed on loopback, gloo collectives): one run, one run
directory, the same numbers as one process with the same devices, and no hang when a process is
lost."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxac import distributed
from jaxac.config import ConfigError, compose_config
from jaxac.metrics import MACHINE_DEPENDENT_FIELDS

ROOT = Path(__file__).resolve().parent.parent
# the batch of the 4-device test (tests/test_multidevice.py)
SAME_AS_FOUR_DEVICE_TEST = ["workers=8", "env.normalize_obs=true", "seeds=2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jaxac_run(*overrides, env=None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jaxac.run", *overrides], cwd=ROOT,
                            env=dict(os.environ, **(env or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def processes(n: int, overrides: list[str], run_dir: Path, port: int | None = None,
              **kwargs) -> list[subprocess.Popen]:
    """Start the `n` processes of one run, each with `overrides`, process 0 into `run_dir`."""
    port = port or free_port()
    common = [f"distributed.num_processes={n}", f"distributed.coordinator=127.0.0.1:{port}",
              *overrides]
    return [jaxac_run(*common, f"distributed.process_id={i}",
                      *([f"hydra.run.dir={run_dir}"] if i == 0 else []), **kwargs)
            for i in range(n)]


def finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str]]:
    return [(p.wait(timeout=timeout), p.stdout.read()) for p in procs]


def metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in MACHINE_DEPENDENT_FIELDS} for row in rows]


def policy_vector(run_dir: Path) -> np.ndarray:
    from jaxac.checkpoint import load_policy

    import jax

    policy = load_policy(run_dir)
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(policy.params)])


def assert_rows_match(rows, expected):
    assert len(rows) == len(expected)
    for a, b in zip(rows, expected):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(b[key], float):
                assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), key
            else:
                assert a[key] == b[key], key


# ----- configuration (no processes started) -----------------------------------------------------
@pytest.mark.parametrize("overrides,key", [
    (["distributed.num_processes=0"], "distributed.num_processes"),
    (["distributed.num_processes=2", "distributed.process_id=2",
      "distributed.coordinator=127.0.0.1:29400"], "distributed.process_id"),
    (["distributed.num_processes=2"], "distributed.coordinator"),
    (["distributed.num_processes=2", "distributed.coordinator=localhost"],
     "distributed.coordinator"),
    (["distributed.num_processes=2", "distributed.coordinator=127.0.0.1:29400", "algo=a3c"],
     "algo"),
    (["distributed.timeout=0"], "distributed.timeout"),
])
def test_bad_distributed_settings_are_refused_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as refused:
        distributed.validate(compose_config(overrides))
    assert refused.value.key == key
    if key == "algo":
        assert "asynchronous" in str(refused.value)


def test_auto_reads_a_slurm_task_from_its_environment(monkeypatch):
    cfg = compose_config(["distributed.auto=true"])
    for name in ("SLURM_JOB_ID", "SLURM_PROCID", "OMPI_MCA_orte_hnp_uri"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="no cluster environment"):
        distributed.planned_process(cfg)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "gpu[017-020]")
    assert distributed.planned_process(cfg) == (5, 8)
    assert distributed._cluster_coordinator() == f"gpu017:{4242 % 4096 + 61440}"


def test_the_config_check_ignores_only_the_process_id():
    base = ["distributed.num_processes=2", "distributed.coordinator=127.0.0.1:29400"]
    zero = distributed.comparable_config(compose_config(base + ["distributed.process_id=0"]))
    one = distributed.comparable_config(compose_config(base + ["distributed.process_id=1"]))
    assert distributed.config_digest(zero) == distributed.config_digest(one)
    other = distributed.comparable_config(compose_config(base + ["workers=16"]))
    assert distributed.config_digest(other) != distributed.config_digest(zero)


# ----- real processes on loopback ---------------------------------------------------------------
@pytest.mark.slow
def test_two_processes_train_as_one_process_with_their_devices_and_resume_as_one(tmp_path):
    """2 processes x 2 CPU devices = 1 process x 4 CPU devices, metric for metric; the
    2-process run then resumes as 1 process and ends where the 1-process run does."""
    steps = ["log_interval=1000", "eval_episodes=0", "checkpoint_every=0"]
    one = tmp_path / "one"
    single = jaxac_run(*SAME_AS_FOUR_DEVICE_TEST, *steps, "devices=4", "total_steps=6000",
                       f"hydra.run.dir={one}")
    code, out = finish([single])[0]
    assert code == 0, out[-3000:]

    two = tmp_path / "two"
    results = finish(processes(2, [*SAME_AS_FOUR_DEVICE_TEST, *steps, "devices=2",
                                   "total_steps=3000"], two))
    for code, out in results:
        assert code == 0, out[-3000:]
    assert "process 1: training done" in results[1][1]
    # one run directory: process 0's records, process 1's log only
    assert (two / "run.process1.log").exists() and not (two / "run.process1.log").is_dir()
    assert sorted(p.name for p in two.iterdir() if p.name.startswith("run")) == [
        "run.log", "run.process1.log"]
    summary = json.loads((two / "summary.json").read_text())
    assert len(summary["layout"]["devices"]) == 4 and summary["env_steps"] == 3000
    expected = metric_rows(one)
    assert_rows_match(metric_rows(two), expected[: 3 * 2])  # 3 log points x 2 seeds

    code, out = finish([jaxac_run(f"resume={two}", "devices=4", "total_steps=6000")])[0]
    assert code == 0, out[-3000:]
    assert_rows_match(metric_rows(two), expected)
    np.testing.assert_allclose(policy_vector(two), policy_vector(one), rtol=2e-4, atol=2e-5)
    assert json.loads((two / "summary.json").read_text())["resumed_from_env_steps"] == 3000


@pytest.mark.slow
def test_a_killed_process_ends_the_run_within_seconds_and_it_resumes(tmp_path):
    run_dir = tmp_path / "run"
    procs = processes(2, ["devices=1", "workers=8", "total_steps=20000000", "log_interval=4000",
                          "checkpoint_every=8000", "eval_episodes=5"], run_dir)
    deadline = time.monotonic() + 240
    while not list((run_dir / "checkpoint").glob("state-*.json")):
        assert time.monotonic() < deadline and procs[0].poll() is None, "no checkpoint written"
        time.sleep(0.2)
    procs[1].kill()
    killed = time.monotonic()
    code, out = finish([procs[0]], timeout=60)[0]
    took = time.monotonic() - killed
    assert code == distributed.EXIT_LOST, out[-3000:]
    assert took < 15, f"process 0 took {took:.1f} s to stop"
    failure = json.loads((run_dir / "failure.json").read_text())
    assert failure["kind"] == "lost_process" and "lost process 1 of 2" in failure["message"]
    assert "lost process 1 of 2" in out
    kept = sorted((run_dir / "checkpoint").glob("state-*.json"))[-1]
    at = json.loads(kept.read_text())["env_steps"]
    assert len(metric_rows(run_dir)) >= at // 4000

    # the same process count continues from the last periodic checkpoint
    results = finish(processes(2, [f"resume={run_dir}", "devices=1", f"total_steps={at + 8000}"],
                               run_dir))
    for code, out in results:
        assert code == 0, out[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from_env_steps"] == at and summary["env_steps"] == at + 8000
    rows = metric_rows(run_dir)
    assert [r["env_steps"] for r in rows] == list(range(4000, at + 8000 + 1, 4000))


@pytest.mark.slow
def test_a_two_task_slurm_job_forms_one_run_and_ctrl_c_in_one_task_stops_both(tmp_path):
    """The SLURM variables of a 2-task job, set by hand around two local processes
    (distributed.auto=true); then SIGINT to task 1 alone stops both after the same update."""
    run_dir = tmp_path / "run"
    slurm = {"SLURM_JOB_ID": str(os.getpid()), "SLURM_NTASKS": "2",
             "SLURM_STEP_NODELIST": "localhost", "SLURM_STEP_NUM_NODES": "1"}
    procs = [jaxac_run("distributed.auto=true", "devices=1", "workers=8",
                       "total_steps=20000000", "log_interval=4000", "eval_episodes=2",
                       f"hydra.run.dir={run_dir}",
                       env={**slurm, "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)})
             for i in range(2)]
    deadline = time.monotonic() + 240
    while not (run_dir / "metrics.jsonl").exists() or not (run_dir / "metrics.jsonl").read_text():
        assert time.monotonic() < deadline and procs[0].poll() is None, "no metrics written"
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGINT)
    results = finish(procs, timeout=120)
    assert [code for code, _ in results] == [130, 130], results[0][1][-2000:]
    assert "process 1 of 2 joined: 1 local and 2 devices in all" in results[1][1]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["layout"]["devices"]) == 2
    assert summary["interrupted"] and summary["env_steps"] < 20000000
    kept = sorted((run_dir / "checkpoint").glob("state-*.json"))[-1]
    assert json.loads(kept.read_text())["env_steps"] == summary["env_steps"]
    assert (run_dir / "run.process1.log").exists()


@pytest.mark.slow
def test_processes_given_different_configs_refuse_naming_the_keys(tmp_path):
    port = free_port()
    common = ["distributed.num_processes=2", f"distributed.coordinator=127.0.0.1:{port}",
              "devices=1", "total_steps=4000"]
    zero = jaxac_run(*common, "distributed.process_id=0", "workers=8",
                     f"hydra.run.dir={tmp_path / 'run'}")
    one = jaxac_run(*common, "distributed.process_id=1", "workers=16", "algo.lr=0.01")
    for code, out in finish([zero, one], timeout=120):
        assert code == 2, out[-2000:]
        assert "differ from process 0 in algo.lr, workers" in out
        assert "compile" not in out  # refused before compiling
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_an_unreachable_coordinator_gives_up_after_the_timeout_naming_it():
    port = free_port()
    started = time.monotonic()
    code, out = finish([jaxac_run("distributed.num_processes=2", "distributed.process_id=1",
                                  f"distributed.coordinator=127.0.0.1:{port}",
                                  "distributed.timeout=3")], timeout=60)[0]
    assert code == distributed.EXIT_LOST, out[-2000:]
    assert f"could not reach the coordinator at 127.0.0.1:{port} within distributed.timeout=3 s" \
        in out
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_slurm_multinode_launcher_requests_one_job_of_many_tasks(tmp_path):
    script = tmp_path / "sbatch.sh"
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "slurm_dry_run.py"), str(script), "-m",
         "hydra/launcher=slurm_multinode", "hydra.launcher.nodes=4",
         "hydra.launcher.tasks_per_node=2", "hydra.launcher.gpus_per_node=8",
         "distributed.auto=true", "workers=4096", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    text = script.read_text()
    lines = set(text.splitlines())
    for expected in ["#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=2",
                     "#SBATCH --gpus-per-node=8", "#SBATCH --array=0-0%1"]:
        assert expected in lines, expected
    assert sum(line.startswith("srun ") for line in text.splitlines()) == 1
