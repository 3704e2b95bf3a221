"""Experiment trackers: TensorBoard event files and a W&B offline run hold what metrics.jsonl
holds, a failing tracker leaves the run complete, a resumed run continues the same tracker run."""

from __future__ import annotations

import glob
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from jaxac.analysis import read_metrics
from jaxac.config import ConfigError, compose_config
from jaxac.trackers import scalars, staleness_bins

pytest.importorskip("tensorboardX")
pytest.importorskip("wandb")

BOTH = ["logger=[tensorboard,wandb]", "logger.wandb.mode=offline"]
SHORT = ["total_steps=8000", "log_interval=2000", "checkpoint_every=4000", "eval_episodes=2",
         "workers=8", "compilation_cache_dir=null"]


def tensorboard_scalars(directory: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every scalar in the event files of `directory`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)}
            for tag in events.Tags()["scalars"]}


def wandb_history(run_dir: Path) -> tuple[list[str], list[dict]]:
    """(the run ids, the history rows) of every offline W&B run file under `run_dir`: read as
    W&B writes it, LevelDB-style log blocks of protobuf Records."""
    from wandb.proto import wandb_internal_pb2 as pb

    ids, rows = [], []
    for path in sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))):
        data = Path(path).read_bytes()
        assert data[:4] == b":W&B"
        pos, block, pending = 7, 32768, b""
        while pos + 7 <= len(data):
            left = block - pos % block
            if left < 7:  # a block's tail too short for a header is padding
                pos += left
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            if length == 0 and kind == 0:
                pos += left
                continue
            chunk = data[pos + 7:pos + 7 + length]
            pos += 7 + length
            pending = chunk if kind in (1, 2) else pending + chunk  # full/first, middle/last
            if kind in (1, 4):
                record = pb.Record()
                record.ParseFromString(pending)
                which = record.WhichOneof("record_type")
                if which == "run":
                    ids.append(record.run.run_id)
                elif which == "history":
                    rows.append({item.key or "/".join(item.nested_key):
                                 json.loads(item.value_json) for item in record.history.item})
    return ids, rows


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """An A2C run of 2 seeds with both trackers and evaluation during training, then resumed."""
    from jaxac.run import execute

    run_dir = tmp_path_factory.mktemp("tracked")
    execute(compose_config(SHORT + BOTH + ["seeds=2", "eval_every=4000"]), run_dir)
    first_ids, _ = wandb_history(run_dir)
    summary = execute(compose_config([f"resume={run_dir}"]), None, ["total_steps=12000"])
    return run_dir, first_ids, summary


@pytest.mark.slow
def test_tensorboard_holds_the_metrics_of_every_seed(tracked_run):
    run_dir, _, _ = tracked_run
    metrics = read_metrics(run_dir)
    assert sorted(metrics["env_steps"].unique()) == [2000, 4000, 6000, 8000, 10000, 12000]
    for seed_index in (0, 1):
        logged = tensorboard_scalars(run_dir / "tensorboard" / f"seed_{seed_index}")
        rows = metrics[metrics["seed_index"] == seed_index]
        for field in ("return_last100", "value_loss", "entropy", "eval_return"):
            expected = {int(r.env_steps): r[field] for _, r in rows.iterrows()
                        if r[field] == r[field]}  # not NaN
            assert expected, field
            assert logged[field].keys() == expected.keys(), field  # resumed: no step twice
            np.testing.assert_allclose([logged[field][s] for s in expected],
                                       list(expected.values()), rtol=1e-6)
        # the final evaluation, at the end of the first run and of the resumed one
        assert sorted(logged["final_eval/return_mean"]) == [8000, 12000]
    # the resume appended a second event file per seed
    assert len(list((run_dir / "tensorboard" / "seed_0").glob("events.out.tfevents.*"))) == 2


@pytest.mark.slow
def test_wandb_offline_history_holds_the_metrics_and_the_resume_continues_it(tracked_run):
    run_dir, first_ids, _ = tracked_run
    ids, history = wandb_history(run_dir)
    assert len(first_ids) == 1 and len(ids) == 2 and set(ids) == set(first_ids)
    metrics = read_metrics(run_dir)
    by_step: dict[int, dict] = {}
    for row in history:
        by_step.setdefault(int(row["_step"]), {}).update(row)
    for _, r in metrics.iterrows():
        logged = by_step[int(r.env_steps)]
        key = f"seed_{int(r.seed_index)}/return_last100"
        assert logged[key] == pytest.approx(r.return_last100, rel=1e-6)
    assert json.loads((run_dir / "trackers.json").read_text())["wandb_id"] == ids[0]


@pytest.mark.slow
def test_a_failing_tracker_leaves_the_run_complete(tmp_path, monkeypatch, caplog):
    from jaxac.run import execute

    # W&B online against a port where nothing listens: its start fails, the run goes on
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    summary = execute(compose_config(SHORT + ["logger=[wandb,tensorboard]",
                                              "logger.wandb.init_timeout=5"]), tmp_path)
    assert summary["env_steps"] == 8000 and not summary["interrupted"]
    warnings = [r.message for r in caplog.records if "logger.wandb failed" in r.message]
    assert len(warnings) == 1, warnings
    assert len(read_metrics(tmp_path)) == 4 and (tmp_path / "summary.json").exists()
    # the other tracker was not affected
    assert set(tensorboard_scalars(tmp_path / "tensorboard" / "seed_0")["entropy"]) == {
        2000, 4000, 6000, 8000}


def test_a3c_staleness_goes_to_the_trackers_as_a_histogram():
    record = {"seed_index": 0, "env_steps": 100, "staleness_mean": 1.5, "staleness_max": 40,
              "staleness_histogram": {"0": 1, "1": 2, "2": 0, "3-4": 3, "5-8": 0, "9-16": 0,
                                      "17-32": 0, "33+": 1}, "note": None}
    edges, counts = staleness_bins(record)
    assert counts == [1, 2, 0, 3, 0, 0, 0, 1]
    assert edges == [-0.5, 0.5, 1.5, 2.5, 4.5, 8.5, 16.5, 32.5, 40.5]
    assert dict(scalars(record)) == {"staleness_mean": 1.5, "staleness_max": 40.0}


def test_tracker_settings_are_checked_before_anything_starts():
    from jaxac.config import validate

    with pytest.raises(ConfigError) as info:
        validate(compose_config(["logger=wandb", "logger.wandb.mode=sometimes"]), 1)
    assert info.value.key == "logger.wandb.mode" and "offline" in str(info.value)
    with pytest.raises(ConfigError) as info:
        validate(compose_config(["logger=tensorboard", "+logger.tensorboard.colour=red"]), 1)
    assert info.value.key == "logger.tensorboard.colour"


@pytest.mark.slow
def test_a_resumed_run_keeps_its_evaluations(tracked_run):
    run_dir, _, summary = tracked_run
    metrics = read_metrics(run_dir)
    evaluated = sorted(metrics.loc[metrics["eval_return"].notna(), "env_steps"].unique())
    assert evaluated == [4000, 8000, 12000]
    during = summary["eval_during"]  # the evaluations before the resume count too
    assert during["evaluations"] == 3 and during["last"]["env_steps"] == 12000
    per_point = metrics.groupby("env_steps")["eval_return"].mean().dropna()
    assert during["best"]["return_mean"] == pytest.approx(per_point.max())
