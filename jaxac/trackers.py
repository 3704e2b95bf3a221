"""Experiment trackers (TensorBoard, Weights & Biases), fed off the training path.

Every record that goes to `metrics.jsonl` is handed to `Trackers.log`, which only queues it; one
background thread starts the trackers (W&B's start may wait on the network), writes the records
at their env-step axis, and at the end adds the learning-curve figure and the summary. A tracker
that fails warns once and is dropped: the run and its metrics.jsonl go on untouched.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import queue
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger("jaxac")

# logger option -> (the package it needs, the pip extra that installs it)
PACKAGES = {"tensorboard": ("tensorboardX", "trackers"), "wandb": ("wandb", "trackers")}
STATE_FILE = "trackers.json"  # what a resumed run needs to continue the same tracker runs
# Fields of a metric record that are its coordinates or its bookkeeping, not values to plot.
NOT_SCALARS = ("seed", "seed_index", "env_steps")
_END = object()


def selected(cfg: Any) -> list[str]:
    """The tracker names the config selects (`logger.<name>` set), in a fixed order."""
    trackers = cfg.get("logger") or {}
    return [name for name in PACKAGES if trackers.get(name) is not None]


def missing_packages(cfg: Any) -> list[tuple[str, str, str]]:
    """(tracker, package, extra) for each selected tracker whose package is not installed."""
    return [(name, *PACKAGES[name]) for name in selected(cfg)
            if importlib.util.find_spec(PACKAGES[name][0]) is None]


def scalars(record: dict) -> Iterator[tuple[str, float]]:
    """The record's finite numbers, by field name (None, text and nested fields left out)."""
    for key, value in record.items():
        if key in NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            yield key, float(value)


def staleness_bins(record: dict) -> tuple[list[float], list[int]] | None:
    """A3C's staleness histogram as (bin edges, counts): one bin per label of
    `a3c.staleness_histogram` ("0", "1", "2", "3-4", ..., "33+"), edges at half-integers."""
    hist = record.get("staleness_histogram")
    if not isinstance(hist, dict) or not hist:
        return None
    edges, counts = [-0.5], []
    for label, count in hist.items():
        low, _, high = label.rstrip("+").partition("-")
        top = float(high or low)
        if label.endswith("+"):  # open-ended: up to the interval's largest staleness
            top = max(top, float(record.get("staleness_max") or top))
        edges.append(top + 0.5)
        counts.append(int(count))
    return edges, counts


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of "a.b.c" keys (lists kept as JSON text)."""
    out: dict[str, Any] = {}
    for key, value in (tree or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


class TensorBoardTracker:
    """Event files under `<run dir>/<logger.tensorboard.dir>/seed_<i>`, one writer per seed (the
    seeds overlay as runs in TensorBoard). A resumed run appends new event files and purges the
    events logged after its checkpoint."""

    name = "tensorboard"

    def __init__(self, settings: Any, run_dir: Path, seeds: int, resumed_step: int | None):
        self.root = run_dir / settings.dir
        self.flush_secs, self.seeds, self.resumed_step = settings.flush_secs, seeds, resumed_step
        self.writers: dict[int, Any] = {}

    def start(self, config: dict, run_name: str) -> None:
        from tensorboardX import SummaryWriter
        from tensorboardX.summary import hparams

        purge = None if self.resumed_step is None else self.resumed_step + 1
        for i in range(self.seeds):
            self.writers[i] = SummaryWriter(str(self.root / f"seed_{i}"), purge_step=purge,
                                            flush_secs=self.flush_secs)
        if self.resumed_step is None:
            params = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                      for k, v in flatten(config).items()}
            experiment, start, _ = hparams(params, {"final_eval/return_mean": 0.0})
            for writer in self.writers.values():
                for summary in (experiment, start):
                    writer.file_writer.add_summary(summary)
                writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```")

    def log(self, record: dict) -> None:
        writer, step = self.writers[int(record.get("seed_index", 0))], int(record["env_steps"])
        for key, value in scalars(record):
            writer.add_scalar(key, value, step)
        bins = staleness_bins(record)
        if bins is not None:
            edges, counts = bins
            mids = [(lo + hi) / 2 for lo, hi in zip(edges, edges[1:])]
            total = sum(counts)
            if total:
                writer.add_histogram_raw(
                    "staleness", min=edges[0] + 0.5, max=edges[-1] - 0.5, num=total,
                    sum=sum(c * m for c, m in zip(counts, mids)),
                    sum_squares=sum(c * m * m for c, m in zip(counts, mids)),
                    bucket_limits=edges[1:], bucket_counts=counts, global_step=step)

    def finish(self, summary: dict, images: dict[str, Path]) -> None:
        import numpy as np
        from PIL import Image

        step = int(summary.get("env_steps") or 0)
        per_seed = (summary.get("final_eval") or {}).get("return_mean_per_seed") or []
        for i, writer in self.writers.items():
            if i < len(per_seed) and per_seed[i] is not None:
                writer.add_scalar("final_eval/return_mean", per_seed[i], step)
            if i == 0:
                for tag, path in images.items():
                    writer.add_image(tag, np.asarray(Image.open(path).convert("RGB")), step,
                                     dataformats="HWC")
                writer.add_text("summary", "```\n" + json.dumps(summary, indent=2) + "\n```",
                                step)
            writer.close()


class WandbTracker:
    """One W&B run per jaxac run: project, entity, group and tags from `logger.wandb`, the
    resolved config as its config, metrics at the env-step axis (per seed `seed_<i>/<field>`
    when a run has several). Its id is kept in the run directory so that a resumed run
    continues it."""

    name = "wandb"

    def __init__(self, settings: Any, run_dir: Path, seeds: int, resumed_step: int | None,
                 sweep_group: str | None):
        self.settings, self.run_dir, self.seeds = settings, run_dir, seeds
        self.group = settings.group or sweep_group
        self.run = None

    def start(self, config: dict, run_name: str) -> None:
        import wandb

        state = read_state(self.run_dir)
        run_id = state.get("wandb_id") or uuid.uuid4().hex[:12]  # W&B ids: [a-z0-9]
        write_state(self.run_dir, {**state, "wandb_id": run_id})
        s = self.settings
        self.run = wandb.init(
            project=s.project, entity=s.entity, group=self.group, tags=list(s.tags) or None,
            name=run_name, id=run_id, resume="allow", config=config, dir=str(self.run_dir),
            mode=s.mode, settings=wandb.Settings(init_timeout=float(s.init_timeout),
                                                 console="off", silent=True))

    def _key(self, record: dict, key: str) -> str:
        return key if self.seeds == 1 else f"seed_{int(record.get('seed_index', 0))}/{key}"

    def log(self, record: dict) -> None:
        import wandb

        data = {self._key(record, k): v for k, v in scalars(record)}
        bins = staleness_bins(record)
        if bins is not None and sum(bins[1]):
            edges, counts = bins
            data[self._key(record, "staleness")] = wandb.Histogram(np_histogram=(counts, edges))
        self.run.log(data, step=int(record["env_steps"]))

    def finish(self, summary: dict, images: dict[str, Path]) -> None:
        import wandb

        if images:
            self.run.log({tag: wandb.Image(str(path)) for tag, path in images.items()})
        self.run.summary.update({k: v for k, v in flatten(summary).items()
                                 if not k.startswith(("config.", "environment."))})
        self.run.finish()


def read_state(run_dir: Path) -> dict:
    path = run_dir / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_state(run_dir: Path, state: dict) -> None:
    path = run_dir / STATE_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # whole or not at all


class Trackers:
    """The selected trackers behind one queue and one thread (see the module docstring)."""

    def __init__(self, trackers: list[Any], config: dict, run_name: str):
        self._trackers, self._config, self._run_name = trackers, config, run_name
        self._queue: queue.Queue = queue.Queue()
        self.failed: dict[str, str] = {}  # tracker name -> the error that dropped it
        self._thread = threading.Thread(target=self._serve, name="jaxac-trackers", daemon=True)
        if trackers:
            self._thread.start()

    def __bool__(self) -> bool:
        return bool(self._trackers)

    def log(self, record: dict) -> None:
        """Queue one metric record (returns at once)."""
        if self._trackers:
            self._queue.put(("log", record))

    def close(self, summary: dict | None, images: dict[str, Path], timeout: float) -> None:
        """Hand over the summary and figures, then wait up to `timeout` s for the writes."""
        if not self._trackers:
            return
        self._queue.put(("finish", (summary or {}, images)))
        self._queue.put(_END)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning(f"experiment trackers still writing after {timeout:.0f} s; left to "
                        f"finish in the background (metrics.jsonl is complete)")

    def _drop(self, tracker: Any, what: str, error: BaseException) -> None:
        self.failed[tracker.name] = f"{what}: {error!r}"
        self._trackers = [t for t in self._trackers if t is not tracker]
        log.warning(f"logger.{tracker.name} failed to {what} ({error!r}); it is left out for "
                    f"the rest of the run, which goes on (metrics.jsonl is unaffected)")

    def _each(self, what: str, call) -> None:
        for tracker in list(self._trackers):
            try:
                call(tracker)
            except Exception as error:  # noqa: BLE001 - a tracker must never end the run
                self._drop(tracker, what, error)

    def _serve(self) -> None:
        self._each("start", lambda t: t.start(self._config, self._run_name))
        while True:
            item = self._queue.get()
            if item is _END:
                return
            kind, payload = item
            if kind == "log":
                self._each("log", lambda t: t.log(payload))
            else:
                self._each("finish", lambda t: t.finish(*payload))


def make_trackers(cfg: Any, run_dir: Path, config: dict, resumed_step: int | None,
                  sweep_group: str | None = None) -> Trackers:
    """The trackers `cfg.logger` selects, for the run in `run_dir` (`config`: the resolved
    config, as the trackers' hyperparameters; `resumed_step`: the checkpoint a resumed run
    continues from)."""
    settings, seeds = cfg.get("logger") or {}, int(cfg.seeds)
    trackers: list[Any] = []
    for name in selected(cfg):
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(settings.tensorboard, run_dir, seeds, resumed_step))
        else:
            trackers.append(WandbTracker(settings.wandb, run_dir, seeds, resumed_step,
                                         sweep_group))
    return Trackers(trackers, config, run_dir.name)
