"""Watching the agent: `python -m jaxac.evaluate RUN --render out.gif` and `render_final`."""

from __future__ import annotations

import json

import pytest

from jaxac.config import ConfigError, compose_config, validate
from jaxac.render import gif_frames, renderable_message

pytest.importorskip("gymnasium")
pytest.importorskip("seaborn")

TINY = ["log_interval=400", "eval_episodes=1", "compilation_cache_dir=null"]


def rendered(run_dir, out, capsys, *flags: str) -> dict:
    from jaxac.evaluate import main

    main([str(run_dir), "--render", str(out), *flags])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_cartpole_gif_has_a_frame_per_step_and_the_run_links_its_final_gif(tmp_path, capsys):
    from jaxac.run import execute

    run_dir = tmp_path / "run"
    summary = execute(compose_config(["total_steps=400", "seeds=2", "render_final=true", *TINY]),
                      run_dir)
    final = summary["render"]
    assert final["files"][0] == "final_policy.gif"
    assert gif_frames(run_dir / "final_policy.gif") == final["episode_length"]
    out = rendered(run_dir, tmp_path / "watch.gif", capsys, "--episodes", "2",
                   "--seed-index", "1")
    assert out["seed_index"] == 1 and len(out["episode_lengths"]) == 2
    assert gif_frames(tmp_path / "watch.gif") == sum(out["episode_lengths"]) == out["frames"]
    # CartPole pays 1 per step: each episode's return is its length
    assert out["episode_returns"] == [float(n) for n in out["episode_lengths"]]


@pytest.mark.slow
def test_breakout_gif_has_a_frame_per_step(tmp_path, capsys):
    from jaxac.run import execute

    run_dir = tmp_path / "run"
    execute(compose_config(["env=breakout", "total_steps=640", "workers=64", "rollout_length=10",
                            *TINY]), run_dir)
    out = rendered(run_dir, tmp_path / "breakout.gif", capsys, "--max-steps", "60")
    assert 1 <= out["frames"] <= 60
    assert gif_frames(tmp_path / "breakout.gif") == out["frames"] == out["episode_lengths"][0]


def test_an_environment_without_a_visualiser_is_refused_by_name():
    assert "DeepSea-bsuite has no gymnax visualiser" in renderable_message("DeepSea-bsuite")
    with pytest.raises(ConfigError) as info:
        validate(compose_config(["env.name=DeepSea-bsuite", "render_final=true"]), 1)
    assert info.value.key == "render_final" and "DeepSea-bsuite" in str(info.value)


@pytest.mark.slow
def test_a_bad_seed_index_or_file_type_is_refused(tmp_path, capsys):
    from jaxac.run import execute

    execute(compose_config(["total_steps=400", *TINY]), tmp_path / "run")
    for flags, message in ((["--seed-index", "3"], "the run has 1 agent"),
                           ([], "must end in .gif or .mp4")):
        out = tmp_path / ("x.gif" if flags else "x.png")
        with pytest.raises(SystemExit) as exit_info:
            rendered(tmp_path / "run", out, capsys, *flags)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
