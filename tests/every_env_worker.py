"""Run in a fresh process with 2 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=2):
`every_env_worker.py CACHE_DIR RUNS ENV...` trains each environment for a few updates in each of
the comma-separated RUNS (keys of `RUNS`), evaluates it, and prints one JSON line per run.

MNISTBandit-bsuite gets a small synthetic stand-in for the MNIST files gymnax would download
(no network here); the environment and everything after it are the real ones."""

import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

from jaxac import run
from jaxac.config import compose_config

RUNS = {  # name -> overrides; tiny batches: this checks that everything runs, not learning
    "a2c-1dev": ["algo=a2c", "workers=4", "rollout_length=2", "total_steps=24", "devices=1"],
    "a2c-2dev": ["algo=a2c", "workers=4", "rollout_length=2", "total_steps=24", "devices=2"],
    "a3c-1dev": ["algo=a3c", "workers=2", "rollout_length=2", "total_steps=24", "devices=1"],
    # the same A3C run without the final evaluation, which is the A2C runs' code (the same
    # `evaluate` of the final parameters): what CI runs, to keep the suite short
    "a3c-1dev-noeval": ["algo=a3c", "workers=2", "rollout_length=2", "total_steps=24",
                        "devices=1", "eval_episodes=0"],
    "a3c-2dev": ["algo=a3c", "workers=2", "rollout_length=2", "total_steps=24", "devices=2"],
}
COMMON = ["log_interval=8", "checkpoint_every=0", "network.hidden_sizes=[16]",
          "network.conv_channels=4", "network.conv_dense=16"]



def fake_mnist():
    """(train images, labels), (test images, labels) shaped as MNIST's, 256 of each."""
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.integers(0, 128, (256, 28, 28), dtype=np.int64).astype(np.int8)
    labels = rng.integers(0, 10, 256).astype(np.uint8)
    return (images, labels), (images, labels)


if __name__ == "__main__":
    from gymnax.utils import load_mnist

    load_mnist.load_mnist = fake_mnist
    cache, runs = sys.argv[1], sys.argv[2].split(",")
    for name in sys.argv[3:]:
        for label in runs:
            overrides = RUNS[label]
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as run_dir:
                try:
                    cfg = compose_config(["eval_episodes=2", *overrides, *COMMON,
                                          f"env.name={name}",
                                          f"compilation_cache_dir={cache}"])
                    summary = run.execute(cfg, Path(run_dir) / "run")
                    result = {"ok": True, "env_steps": summary["env_steps"],
                              "eval": summary["final_eval"]["return_mean_per_seed"]}
                except Exception as error:  # reported, not raised: one line per run
                    result = {"ok": False, "error": f"{type(error).__name__}: {error}",
                              "traceback": traceback.format_exc()[-2000:]}
            result.update(env=name, run=label, seconds=round(time.perf_counter() - started, 1))
            print(json.dumps(result), flush=True)
