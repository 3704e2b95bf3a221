"""Running `python -m jaxac.run` in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def _env(extra: dict | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return {**env, **(extra or {})}


def run_jaxac(*overrides: str, timeout: float = 300,
              env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m jaxac.run OVERRIDES...` to completion; stdout and stderr captured."""
    return subprocess.run([sys.executable, "-m", "jaxac.run", *overrides], capture_output=True,
                          text=True, timeout=timeout, env=_env(env))


def start_jaxac(*overrides: str) -> subprocess.Popen:
    """Start `python -m jaxac.run OVERRIDES...` in the background."""
    return subprocess.Popen([sys.executable, "-m", "jaxac.run", *overrides],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(None))


def wait_for_metric_lines(path: Path, count: int, process: subprocess.Popen,
                          deadline_seconds: float = 180) -> None:
    """Block until `path` holds `count` lines (the run is demonstrably training)."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{path} did not reach {count} lines")
