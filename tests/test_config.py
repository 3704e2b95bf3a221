"""Invalid configuration fails before compilation with a message naming key, value and what's allowed."""

import json
import os
import subprocess
import sys

import pytest

from jaxac.checkpoint import resume_config
from jaxac.config import ConfigError, compose_config, validate

BAD = [
    (["workers=0"], "workers", "0"),
    (["rollout_length=0"], "rollout_length", "0"),
    (["total_steps=10"], "total_steps", "10"),
    (["seeds=0"], "seeds", "0"),
    (["algo.lr=0"], "algo.lr", "0"),
    (["algo.lr=-1e-3"], "algo.lr", "-0.001"),
    (["algo.gamma=1.5"], "algo.gamma", "1.5"),
    (["algo.gae_lambda=-0.1"], "algo.gae_lambda", "-0.1"),
    (["algo.optimizer=sgd"], "algo.optimizer", "sgd"),
    (["env.name=CartPole-v2"], "env.name", "CartPole-v1"),  # the close match is suggested
    (["devices=2"], "devices", "2"),  # one CPU device in the test process
    (["network.torso=transformer"], "network.torso", "transformer"),
    (["algo=a3c", "algo.update=async"], "algo.update", "async"),
    (["algo=a3c", "algo.envs_per_worker=0"], "algo.envs_per_worker", "0"),
    (["algo=a3c", "seeds=2"], "seeds", "2"),
    (["algo=a3c", "algo.entropy_coef={log_uniform:[0.1,0.01]}"], "algo.entropy_coef", "0.1"),
    (["algo=a3c", "algo.entropy_coef=-0.5"], "algo.entropy_coef", "-0.5"),
    (["network.log_std_init=-0.5"], "network.log_std_init", "discrete"),  # CartPole: discrete
    (["checkpoint_every=-1"], "checkpoint_every", "-1"),
    (["checkpoint_keep=0"], "checkpoint_keep", "0"),
    (["xla_cpu_threads=0"], "xla_cpu_threads", "0"),
    (["+algo.lrr=0.5"], "algo.lrr", "algo.lr"),  # a typo added with +: the closest key named
    (["+network.hidden=3"], "network.hidden", "network.hidden_sizes"),
    (["+foo=1"], "foo", "a key of the schema"),
    (["algo.eps=inf"], "algo.eps", "finite"),
    (["algo.lr=nan"], "algo.lr", "nan"),
    (["env.solve_threshold=-inf"], "env.solve_threshold", "finite"),
    (["algo=a3c", "algo.entropy_coef={log_uniform:[1e-4,inf]}"], "algo.entropy_coef", "inf"),
    (["workers=1000000000", "total_steps=10000000000"], "workers", "GiB per update"),
    (["network.torso=conv"], "network.torso", "shape (4,)"),
]


@pytest.mark.parametrize("overrides,key,mentioned", BAD,
                         ids=[b[1] + "=" + b[0][-1].split("=", 1)[1] for b in BAD])
def test_bad_values_name_the_key(overrides, key, mentioned):
    with pytest.raises(ConfigError) as info:
        validate(compose_config(overrides), available_devices=1)
    message = str(info.value)
    assert info.value.key == key
    assert message.startswith(f"{key}=") and mentioned in message


def test_continuous_only_option_is_fine_on_a_continuous_env():
    validate(compose_config(["env=pendulum", "network.log_std_init=-0.5"]), available_devices=1)


def test_unknown_algo_names_the_group_option():
    from hydra.errors import HydraException

    with pytest.raises(HydraException, match="algo/ppo"):
        compose_config(["algo=ppo"])


@pytest.mark.parametrize("case", ["missing", "not-a-run", "no-checkpoint"])
def test_bad_resume_path_names_the_key_before_anything_runs(tmp_path, case):
    from jaxac.run import execute

    run_dir = tmp_path / "run"
    if case != "missing":
        run_dir.mkdir()
    if case == "no-checkpoint":  # a run directory whose checkpoint was never written
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
        (run_dir / "metrics.jsonl").write_text('{"env_steps": 10}\n')
    with pytest.raises(ConfigError) as info:
        execute(compose_config([f"resume={run_dir}"]), None)
    assert info.value.key == "resume" and str(run_dir) in str(info.value)
    if case == "no-checkpoint":  # nothing already written was touched
        assert (run_dir / "metrics.jsonl").read_text() == '{"env_steps": 10}\n'
        assert (run_dir / ".hydra" / "config.yaml").read_text() == "seed: 0\n"


def test_resume_refuses_to_change_what_the_run_learns(tmp_path):
    from jaxac.run import execute

    execute(compose_config(["total_steps=4000", "log_interval=2000", "eval_episodes=0"]),
            tmp_path)
    with pytest.raises(ConfigError) as info:
        execute(compose_config([f"resume={tmp_path}"]), None, ["algo.lr=0.1"])
    assert info.value.key == "algo.lr" and "total_steps" in str(info.value)
    with pytest.raises(ConfigError) as info:  # cannot end before the checkpoint it starts from
        execute(compose_config([f"resume={tmp_path}"]), None, ["total_steps=2000"])
    assert info.value.key == "total_steps" and "4,000 env steps" in str(info.value)
    # how many XLA threads it runs on is not what it learns: a resume may change it
    assert resume_config(str(tmp_path), ["xla_cpu_threads=1"]).xla_cpu_threads == 1
    # nor how it reports: evaluation during training and rendering may be added
    resumed = resume_config(str(tmp_path), ["eval_every=1000", "render_final=true"])
    assert resumed.eval_every == 1000 and resumed.render_final is True


def test_workers_must_split_evenly_over_devices():
    with pytest.raises(ConfigError, match="multiple of the number of devices"):
        validate(compose_config(["workers=6", "devices=4"]), available_devices=4)


def test_default_config_is_valid():
    validate(compose_config([]), available_devices=1)
    validate(compose_config(["algo=a3c", "algo.entropy_coef={log_uniform:[1e-4,1e-2]}"]),
             available_devices=1)


@pytest.mark.slow
@pytest.mark.parametrize("override,message", [("workers=0", "workers=0 is not allowed"),
                                              ("+algo.lrr=0.5", "did you mean algo.lr")])
def test_cli_reports_bad_value_without_traceback(tmp_path, override, message):
    out = subprocess.run(
        [sys.executable, "-m", "jaxac.run", override, f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"})
    assert out.returncode == 2
    text = out.stdout + out.stderr
    assert message in text and "Traceback" not in text
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    failure = json.loads((tmp_path / "run" / "failure.json").read_text())
    assert failure["kind"] == "config_error" and failure["key"] == override.lstrip("+").split("=")[0]


@pytest.mark.slow
def test_cli_shows_the_traceback_when_asked(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "jaxac.run", "workers=0", f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert out.returncode != 0
    assert "Traceback" in out.stderr and "workers=0 is not allowed" in out.stderr


@pytest.mark.slow
def test_cli_reports_unknown_key(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "jaxac.run", "wrokers=4", f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "wrokers" in out.stdout + out.stderr


@pytest.mark.parametrize("args,message", [
    (["--episodes", "0"], "0 is not allowed: a whole number >= 1"),
    (["--episodes", "-3"], "-3 is not allowed"),
    (["--episodes", "x"], "'x' is not a whole number"),
    ([], "is not a finished jaxac run"),
])
def test_evaluate_refuses_bad_arguments_with_a_message(tmp_path, capsys, args, message):
    from jaxac.evaluate import main

    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path / "missing"), *args])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_directory_path_that_cannot_be_one_is_refused(tmp_path):
    from jaxac import rundir

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for key, check in (("compilation_cache_dir",
                        lambda p: validate(compose_config([f"compilation_cache_dir={p}"]), 1)),
                       ("hydra.run.dir", rundir.claim_fresh)):
        with pytest.raises(ConfigError) as refused:
            check(a_file / "below")
        assert refused.value.key == key and "is a file" in str(refused.value)
    assert a_file.read_text() == "x"
