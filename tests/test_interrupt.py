"""SIGINT/SIGTERM during training: metrics kept, checkpoint and summary written, exit 130."""

import json
import signal

import pytest

from cli import start_jaxac, wait_for_metric_lines
from jaxac.analysis import read_metrics
from jaxac.checkpoint import find_checkpoint, load_policy


@pytest.mark.slow
@pytest.mark.parametrize("algo,sig", [("a2c", signal.SIGINT), ("a3c", signal.SIGTERM)])
def test_signal_stops_cleanly_and_keeps_everything(tmp_path, algo, sig):
    run = start_jaxac(f"algo={algo}", "workers=4", "total_steps=100000000", "log_interval=2000",
                      "eval_episodes=3", f"hydra.run.dir={tmp_path}")
    wait_for_metric_lines(tmp_path / "metrics.jsonl", 2, run)
    run.send_signal(sig)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, err[-2000:]
    assert f"stopping on {sig.name}" in out + err and "resume=" in out + err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] is True
    metrics = read_metrics(tmp_path)
    assert len(metrics) >= 2 and summary["env_steps"] == metrics["env_steps"].max()
    assert summary["env_steps"] < 100_000_000
    assert load_policy(tmp_path).params is not None
    # the training checkpoint is at the interruption point, with every metric line before it
    checkpoint = find_checkpoint(tmp_path)
    assert checkpoint.env_steps == summary["env_steps"]
    assert checkpoint.meta["metrics_lines"] == len(metrics)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["a2c", "a3c"])
def test_stop_when_solved_ends_training_early(tmp_path, algo):
    from jaxac.config import compose_config
    from jaxac.run import execute

    summary = execute(compose_config([f"algo={algo}", "workers=4", "total_steps=2000000",
                                      "log_interval=2000", "env.solve_threshold=40",
                                      "stop_when_solved=true", "eval_episodes=0"]), tmp_path)
    solved_at = summary["solved"]["env_steps"][0]
    assert solved_at is not None and not summary["interrupted"]
    assert summary["env_steps"] < 2_000_000
    if algo == "a2c":  # at the first log point at or after solving
        assert summary["env_steps"] == -(-solved_at // 2000) * 2000
