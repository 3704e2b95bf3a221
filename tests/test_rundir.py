"""A run directory belongs to one run: locks, refusals before any write, unique names, retention
of only the run's own checkpoints."""

import json
import os
import subprocess
import sys
import threading

import pytest

from jaxac import rundir
from jaxac.checkpoint import Checkpointer, find_checkpoint
from jaxac.config import compose_config
from jaxac.metrics import temporary_path
from jaxac.run import execute


def jaxac_cli(*args, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", "jaxac.run", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


def tree(path):
    """Every file below `path` with its contents (to compare before and after)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    execute(compose_config(["total_steps=4000", "log_interval=2000", "checkpoint_every=2000",
                            "eval_episodes=0"]), run_dir)
    return run_dir


@pytest.mark.slow
def test_a_held_directory_is_refused_to_a_second_process_naming_the_holder(finished, tmp_path):
    before = tree(finished)
    rundir.lock(finished)  # this process is now the run in progress
    try:
        for args in ([f"resume={finished}", "total_steps=8000"],
                     [f"hydra.run.dir={finished}"]):
            out = jaxac_cli(*args, cwd=tmp_path)
            text = out.stdout + out.stderr
            assert out.returncode == 2, text[-2000:]
            assert str(finished) in text
            assert (f"process {os.getpid()} holds it" in text  # resume: the lock
                    or "records of another run" in text)  # fresh: the directory is used
            assert "Traceback" not in text
    finally:
        rundir.release(finished)
    assert tree(finished) == before  # nothing written: no .hydra/resumed-*, no failure.json


@pytest.mark.slow
def test_a_fresh_run_into_a_used_directory_is_refused_and_writes_nothing(finished, tmp_path):
    before = tree(finished)
    out = jaxac_cli(f"hydra.run.dir={finished}", "seed=1", cwd=tmp_path)
    assert out.returncode == 2 and "resume=" in out.stderr
    assert tree(finished) == before


@pytest.mark.slow
def test_paths_and_names_are_checked_before_anything_is_written(tmp_path):
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    for args, key in (([f"resume={not_a_run}"], "resume"),
                      (["env.name=../../escaped"], "env.name"),
                      (["-m", "env.name=../up,CartPole-v1", "hydra.sweep.dir=sweep"], "env.name")):
        out = jaxac_cli(*args, cwd=work)
        assert out.returncode == 2, out.stderr[-2000:]
        assert f"{key}=" in out.stderr and "Traceback" not in out.stderr
    assert list(not_a_run.iterdir()) == [] and list(work.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "work"]


@pytest.mark.slow
def test_default_directories_are_unique_for_runs_started_together(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    runs = [subprocess.Popen([sys.executable, "-m", "jaxac.run", "total_steps=2000",
                              "eval_episodes=1", "compilation_cache_dir=null"], cwd=tmp_path,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for _ in range(2)]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read()[-2000:]
    made = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert len(made) == 2 and all((p / "summary.json").exists() for p in made)


def test_a_fresh_run_from_python_refuses_a_used_directory(finished):
    with pytest.raises(rundir.DirectoryTaken) as refused:
        execute(compose_config(["seed=1"]), finished)
    assert refused.value.key == "hydra.run.dir"


def test_the_lock_is_held_and_released(tmp_path):
    rundir.lock(tmp_path)
    holder = (tmp_path / rundir.LOCK_FILE).read_text().strip()
    assert holder == str(os.getpid())
    probe = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
             "except OSError:\n    print('held')")
    lock_file = str(tmp_path / rundir.LOCK_FILE)
    seen = subprocess.run([sys.executable, "-c", probe, lock_file], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert seen == "held"
    rundir.release(tmp_path)
    seen = subprocess.run([sys.executable, "-c", probe, lock_file], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert seen == "free"


def test_retention_deletes_only_this_runs_checkpoints(tmp_path):
    other = Checkpointer(tmp_path, every=1000, keep=1)
    other.save({"x": 1}, {"env_steps": 1000})  # another run's checkpoint in the same folder
    mine = Checkpointer(tmp_path, every=1000, keep=1)
    for steps in (2000, 3000, 4000):
        mine.save({"x": steps}, {"env_steps": steps})
    kept = sorted(p.name for p in (tmp_path / "checkpoint").glob("state-*.json"))
    assert kept == ["state-000000001000.json", "state-000000004000.json"]
    assert find_checkpoint(tmp_path).meta["run_id"] == mine.run_id != other.run_id
    resumed = Checkpointer(tmp_path, every=1000, keep=1, resume_from=find_checkpoint(tmp_path))
    assert resumed.run_id == mine.run_id  # a resumed run is the same run


def test_temporary_files_are_unique_per_writer(tmp_path):
    names, together = set(), threading.Barrier(4)  # alive at once: thread ids all differ

    def writer():
        together.wait()
        names.add(temporary_path(tmp_path / "a.json"))
        together.wait()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names.add(temporary_path(tmp_path / "a.json"))
    assert len(names) == 5
    assert json.dumps(sorted(str(n.parent) for n in names)) == json.dumps([str(tmp_path)] * 5)
