"""Every failure leaves a record and the documented exit status; a second Ctrl-C ends a run
within a second wherever it is."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from jaxac.checkpoint import Checkpointer, FinalWriteFailed, find_checkpoint
from jaxac.config import compose_config
from jaxac.run import execute

SHORT = ["total_steps=8000", "log_interval=4000", "checkpoint_every=4000", "eval_episodes=0"]


def cli(*args, cwd, env=None, timeout=300):
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", "jaxac.run", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env={**environment, **(env or {})})


def test_a_failed_final_checkpoint_write_rescues_the_trained_state(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    real_save = Checkpointer.save

    def disk_full_at_the_end(self, tree, meta):
        if self.run_dir == run_dir and meta["env_steps"] == 8000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, tree, meta)

    monkeypatch.setattr(Checkpointer, "save", disk_full_at_the_end)
    with pytest.raises(FinalWriteFailed) as failed:
        execute(compose_config(SHORT), run_dir)
    rescued = failed.value.rescued
    assert str(rescued) in str(failed.value) and "No space left" in str(failed.value)
    kept = find_checkpoint(rescued)
    assert kept.env_steps == 8000 and kept.meta["metrics_lines"] == 2  # the whole training
    assert find_checkpoint(run_dir).env_steps == 4000  # the periodic one stays in place


@pytest.mark.slow
@pytest.mark.parametrize("args,code,kind", [
    (["workers=1.5"], 2, None),  # Hydra's own type error: before any directory exists
    (["network.torso=conv"], 2, "config_error"),  # CartPole's vector observations
    (["+algo.lrr=0.5"], 2, "config_error"),
], ids=["hydra-type-error", "conv-torso-on-vectors", "typo-added-with-plus"])
def test_configuration_errors_exit_2_with_one_line_and_a_record(tmp_path, args, code, kind):
    out = cli(*args, "hydra.run.dir=run", cwd=tmp_path)
    assert out.returncode == code, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "configuration error" in text and "Traceback" not in text
    if kind is None:
        assert not (tmp_path / "run").exists()  # nothing written
    else:
        failure = json.loads((tmp_path / "run" / "failure.json").read_text())
        assert failure["kind"] == kind and failure["exit_code"] == code


def injected(tmp_path, code: str) -> dict:
    """An environment whose Python first runs `code` (a sitecustomize module)."""
    sitecustomize = tmp_path / "inject" / "sitecustomize.py"
    sitecustomize.parent.mkdir()
    sitecustomize.write_text(code)
    return {"PYTHONPATH": f"{sitecustomize.parent}:{os.environ.get('PYTHONPATH', '')}"}


@pytest.mark.slow
def test_a_failed_final_write_exits_4_naming_where_the_trained_state_is(tmp_path):
    env = injected(tmp_path, (
        "import errno, jaxac.checkpoint as c\n"
        "save = c.Checkpointer.save\n"
        "def full(self, tree, meta):\n"
        "    if self.run_dir.name == 'run' and meta['env_steps'] == 4000:\n"
        "        raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "    return save(self, tree, meta)\n"
        "c.Checkpointer.save = full\n"))
    out = cli("hydra.run.dir=run", "total_steps=4000", "eval_episodes=1", cwd=tmp_path, env=env)
    assert out.returncode == 4, out.stderr[-2000:]
    failure = json.loads((tmp_path / "run" / "failure.json").read_text())
    assert failure["kind"] == "write_failed" and failure["rescued"] in out.stdout + out.stderr
    assert find_checkpoint(failure["rescued"]).env_steps == 4000  # the whole training, kept


@pytest.mark.slow
def test_an_internal_error_exits_5_with_its_traceback_and_a_record(tmp_path):
    # An error no check foresaw: the trainer's constructor fails inside the run.
    env = injected(tmp_path, ("import jaxac.a2c\n"
                              "def broken(*args, **kwargs):\n"
                              "    raise RuntimeError('injected internal error')\n"
                              "jaxac.a2c.A2CTrainer.__init__ = broken\n"))
    out = cli("hydra.run.dir=run", "total_steps=2000", cwd=tmp_path, env=env)
    assert out.returncode == 5, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "injected internal error" in text and "Traceback" in text
    failure = json.loads((tmp_path / "run" / "failure.json").read_text())
    assert failure["kind"] == "internal_error" and "injected" in failure["traceback"]


def wait_for(path, text, process, seconds=180):
    """Until `path` exists (and holds `text`, unless it is None)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        if path.exists() and (text is None or text in path.read_text()):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{text!r} never appeared in {path}")


@pytest.mark.slow
@pytest.mark.parametrize("when", ["training", "evaluation"])
def test_a_second_ctrl_c_ends_the_run_within_a_second(tmp_path, when):
    # One log interval of 2M env steps at 64 workers is one jitted call of many seconds; the
    # final evaluation of a million greedy episodes is another.
    overrides = (["workers=64", "total_steps=50000000", "log_interval=2000000"]
                 if when == "training" else
                 ["workers=8", "total_steps=4000", "eval_episodes=1000000"])
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    run = subprocess.Popen([sys.executable, "-m", "jaxac.run", *overrides, "hydra.run.dir=run",
                            "compilation_cache_dir=null"], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if when == "training":
        wait_for(tmp_path / "run" / "run.log", "layout (", run)
    else:  # the policy is saved just before the evaluation starts
        wait_for(tmp_path / "run" / "checkpoint" / "policy.msgpack", None, run)
    time.sleep(1.5)  # inside the jitted call by now
    run.send_signal(signal.SIGINT)
    time.sleep(0.3)
    run.send_signal(signal.SIGINT)
    second = time.monotonic()
    out, err = run.communicate(timeout=60)
    ended_after = time.monotonic() - second
    assert run.returncode == 130, err[-2000:]
    assert ended_after < 1.0, f"ended {ended_after:.2f} s after the second SIGINT"
    assert "second SIGINT" in out + err
    failure = json.loads((tmp_path / "run" / "failure.json").read_text())
    assert failure["kind"] == "aborted"
