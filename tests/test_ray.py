"""A3C on Ray (`algo.backend=ray`): the same protocol as the threads, as actors on a local Ray
instance: every push applied in arrival order, faults (a killed worker, a raising worker, a killed
server, SIGINT), and checkpoints that resume in either backend."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import flax
import jax
import numpy as np
import pytest

from cli import start_jaxac, wait_for_metric_lines
from jaxac import a3c
from jaxac.analysis import read_metrics
from jaxac.checkpoint import find_checkpoint, network_from_config
from jaxac.config import ConfigError, compose_config, validate
from jaxac.envs import make_env
from jaxac.run import execute

ray = pytest.importorskip("ray")


def test_backend_keys_are_validated_before_anything_starts(monkeypatch):
    def check(*overrides):
        with pytest.raises(ConfigError) as info:
            validate(compose_config(["algo=a3c", "algo.backend=ray", *overrides]), 1)
        return info.value

    assert check("algo.update=hogwild").key == "algo.update"
    assert "share no memory" in str(check("algo.update=hogwild"))
    assert check("ray.worker_cpus=0").key == "ray.worker_cpus"
    assert check("ray.worker_gpus=-1").key == "ray.worker_gpus"
    assert check("ray.max_restarts=-2").key == "ray.max_restarts"
    assert check("ray.address=nowhere").key == "ray.address"
    with pytest.raises(ConfigError) as info:
        validate(compose_config(["algo=a2c", "algo.backend=ray"]), 1)
    assert info.value.key == "algo.backend" and "A2C" in str(info.value)
    with pytest.raises(ConfigError) as info:
        validate(compose_config(["algo=a3c", "algo.backend=processes"]), 1)
    assert info.value.key == "algo.backend" and "threads, ray" in str(info.value)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    assert 'pip install -e ".[ray]"' in str(check())


def test_an_address_where_no_cluster_answers_is_refused_at_once(monkeypatch, tmp_path):
    import socket

    from jaxac.a3c import ray_trainer

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        ray_trainer._check_reachable(f"127.0.0.1:{port}")
    assert info.value.key == "ray.address" and f"nothing answers at 127.0.0.1:{port}" in str(
        info.value)
    assert time.monotonic() - started < ray_trainer.REACH_SECONDS
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray_trainer, "CURRENT_CLUSTER_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError) as info:
        ray_trainer._check_reachable("auto")
    assert "ray start --head" in str(info.value)


def test_actor_resources_fit_the_cluster_or_say_what_does():
    from jaxac.a3c.ray_trainer import actor_resources

    cfg = compose_config(["algo=a3c", "algo.backend=ray", "workers=16"])
    assert actor_resources(cfg, {"CPU": 32.0}) == (1.0, 1.0)
    per_worker, server = actor_resources(cfg, {"CPU": 2.0})  # shared, as threads share cores
    assert 16 * per_worker + server <= 2.0 and per_worker == server > 0
    cfg.ray.worker_cpus = 0.5
    with pytest.raises(ConfigError) as info:
        actor_resources(cfg, {"CPU": 4.0})
    assert info.value.key == "ray.worker_cpus" and "4 CPUs" in str(info.value)
    cfg.ray.worker_cpus, cfg.ray.worker_gpus = 0.1, 0.5
    with pytest.raises(ConfigError) as info:
        actor_resources(cfg, {"CPU": 4.0, "GPU": 1.0})
    assert info.value.key == "ray.worker_gpus"


# ----- on a local Ray instance, shared by the tests below that run in this process ----------------
@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def ray_config(*overrides):
    return compose_config(["algo=a3c", "algo.backend=ray", "eval_episodes=5", *overrides])


@pytest.mark.slow
def test_every_push_is_applied_once_in_arrival_order(local_ray):
    from jaxac.signals import StopRequest

    cfg = ray_config("workers=4", "total_steps=3000")
    spec = make_env(cfg.env.name)
    trainer = a3c.make_trainer(cfg, spec, network_from_config(cfg, spec), jax.devices(),
                               keep_history=True)
    try:
        trainer.compile()
        trainer.start()
        with StopRequest() as stop:
            while trainer.runs:
                trainer.advance(10**9, stop)
        history = ray.get(trainer.server.history.remote())
        report = ray.get(trainer.server.report.remote(True))
    finally:
        trainer.close()
    rollouts = 3000 // 5
    assert report["version"] == len(history) == rollouts  # no push lost, none applied twice
    assert [rec.applied_version for rec, *_ in history] == list(range(rollouts))
    assert sum(report["worker_steps"]) == 3000  # stops exactly at the budget
    assert {rec.worker for rec, *_ in history} == {0, 1, 2, 3}
    assert max(rec.staleness for rec, *_ in history) > 0  # asynchronous: snapshots go stale
    learner = trainer.learner
    state = learner.init_state(a3c.worker_keys(0, 4)[0])
    for _, result, scale in history:  # the same updates one by one, in the recorded order
        state, _ = learner.optimizer_steps(state, (result,), np.float32([scale]), np.int32(1))
    np.testing.assert_array_equal(report["state"], np.asarray(state))


def kill_one_worker_when(path, lines, killed):
    """In the background: once `path` holds `lines` lines, SIGKILL one worker actor's process."""
    def watch():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if path.exists() and len(path.read_text().splitlines()) >= lines:
                pids = actor_pids("WorkerProcess")
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def actor_pids(class_name):
    out = subprocess.run(["pgrep", "-f", f"ray::{class_name}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_the_run_ends_at_its_budget(local_ray, tmp_path):
    killed = []
    watcher = kill_one_worker_when(tmp_path / "metrics.jsonl", 2, killed)
    summary = execute(ray_config("workers=3", "total_steps=15000", "log_interval=1000"),
                      tmp_path)
    watcher.join()
    assert killed, "no worker was killed: the run ended before its second log line"
    fields = summary["a3c"]
    assert summary["env_steps"] == 15000 and fields["updates_applied"] == 15000 // 5
    assert sum(fields["worker_restarts"]) == 1 and fields["lost_rollouts"] <= 1
    assert sum(fields["worker_env_steps"]) == 15000
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["worker_restarts"] == 1 and "lost_rollouts" in lines[-1]


@pytest.mark.slow
def test_a_worker_exception_ends_the_run_with_its_traceback(local_ray, tmp_path, monkeypatch):
    from jaxac.a3c import actors, ray_trainer

    class RaisingWorker(actors.WorkerProcess):
        def run(self, attempt, envs=None):
            if self.index == 2:
                raise ValueError("injected failure in worker 2")
            return super().run(attempt, envs)

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(ray_trainer, "WorkerProcess", RaisingWorker)
    with pytest.raises(a3c.WorkerFailed) as info:
        execute(ray_config("workers=4", "total_steps=50000000", "log_interval=500"), tmp_path)
    assert info.value.worker == 2
    assert "injected failure in worker 2" in info.value.trace


@pytest.mark.slow
def test_checkpoints_resume_in_the_other_backend_exactly(local_ray, tmp_path):
    """A checkpoint of one backend, resumed in the other with no steps left to run, ends with the
    same shared state and worker environments; then training goes on in it."""
    threads_run, ray_run = tmp_path / "threads", tmp_path / "ray"
    execute(compose_config(["algo=a3c", "workers=2", "total_steps=4000", "eval_episodes=0"]),
            threads_run)
    saved = find_checkpoint(threads_run)

    def resume(run_dir, *overrides):
        overrides = [f"resume={run_dir}", *overrides]
        return execute(compose_config(overrides), None, overrides)

    resume(threads_run, "algo.backend=ray", f"total_steps={saved.env_steps}")
    rewritten = find_checkpoint(threads_run)
    before = flax.serialization.msgpack_restore(saved.payload_path.read_bytes())
    after = flax.serialization.msgpack_restore(rewritten.payload_path.read_bytes())
    np.testing.assert_array_equal(after["state"], before["state"])
    jax.tree.map(np.testing.assert_array_equal, after["envs"], before["envs"])

    execute(ray_config("workers=2", "total_steps=4000", "eval_episodes=0"), ray_run)
    summary = resume(ray_run, "algo.backend=threads", "total_steps=8000")
    assert summary["a3c"]["backend"] == "threads" and summary["env_steps"] == 8000
    assert summary["a3c"]["version"] == 8000 // 5 and summary["resumed_from_env_steps"] == 4000


# ----- as a user runs it: subprocesses, each with its own local Ray instance ----------------------
@pytest.mark.slow
def test_sigint_checkpoints_and_a_killed_server_ends_the_run_then_resume_continues(tmp_path):
    run = start_jaxac("algo=a3c", "algo.backend=ray", "workers=2", "total_steps=100000000",
                      "log_interval=1000", "checkpoint_every=2000", "eval_episodes=3",
                      f"hydra.run.dir={tmp_path}")
    wait_for_metric_lines(tmp_path / "metrics.jsonl", 3, run)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, err[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] and summary["a3c"]["backend"] == "ray"
    assert find_checkpoint(tmp_path).env_steps == summary["env_steps"]
    assert not actor_pids("ServerProcess")  # the run's actors and Ray instance are gone

    stopped_at = summary["env_steps"]
    resumed = start_jaxac(f"resume={tmp_path}")
    wait_for_metric_lines(tmp_path / "metrics.jsonl", len(read_metrics(tmp_path)) + 3, resumed)
    periodic = find_checkpoint(tmp_path)
    (server,) = actor_pids("ServerProcess")
    killed_at = time.monotonic()
    os.kill(server, signal.SIGKILL)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 6, err[-3000:]
    assert time.monotonic() - killed_at < 30
    assert "parameter server actor is lost" in out + err and f"resume={tmp_path}" in out + err
    kept = find_checkpoint(tmp_path)  # the newest periodic checkpoint, intact
    assert kept is not None and kept.env_steps >= max(periodic.env_steps, stopped_at)

    final = subprocess.run([sys.executable, "-m", "jaxac.run", f"resume={tmp_path}",
                            f"total_steps={kept.env_steps + 2000}"], capture_output=True,
                           text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["env_steps"] == kept.env_steps + 2000 and not summary["interrupted"]
    assert summary["resumed_from_env_steps"] == kept.env_steps
