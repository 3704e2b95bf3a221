"""Ctrl-C (SIGINT) during training: metrics kept, checkpoint and summary written, exit 130."""

import json
import signal
import subprocess
import sys
import time

import pytest

from jaxac.analysis import read_metrics
from jaxac.checkpoint import load_policy


def wait_for_metric_lines(path, count, process, deadline_seconds=180):
    """Block until `path` holds `count` lines (the run is demonstrably training)."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{path} did not reach {count} lines")


@pytest.mark.parametrize("algo", ["a2c", "a3c"])
def test_sigint_stops_cleanly_and_keeps_everything(tmp_path, algo):
    run = subprocess.Popen(
        [sys.executable, "-m", "jaxac.run", f"algo={algo}", "workers=4", "total_steps=100000000",
         "log_interval=2000", "eval_episodes=3", f"hydra.run.dir={tmp_path}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_metric_lines(tmp_path / "metrics.jsonl", 2, run)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, err[-2000:]
    assert "stopping on SIGINT" in out + err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] is True
    metrics = read_metrics(tmp_path)
    assert len(metrics) >= 2 and summary["env_steps"] == metrics["env_steps"].max()
    assert summary["env_steps"] < 100_000_000
    assert load_policy(tmp_path).params is not None
