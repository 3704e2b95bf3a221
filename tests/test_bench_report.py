"""`python -m jaxac.bench` end to end at a tiny size (its files, and its typed results read back),
the FLOP counts, and the SB3 ratios' arithmetic."""

import jax
import jax.numpy as jnp
import pytest

from jaxac.bench import roofline, sb3
from jaxac.bench.__main__ import load, main
from jaxac.bench.a2c import A2CRow, OneCoreRow
from jaxac.bench.distributed import DistributedRow
from jaxac.bench.ray_a3c import RayFloor, RayRow
from jaxac.bench.sb3 import SB3Result
from jaxac.bench.solve import SolvePhase, SolveResult, summarize
from jaxac.bench.timing import spread


@pytest.mark.slow
def test_bench_command_writes_what_it_measured(tmp_path):
    # without the layouts section (tests/test_bench_a2c.py measures each of its parts)
    results = main(["--only", "a2c,a3c", "--repeats", "2", "--seconds", "0.05",
                    "--a2c-workers", "8", "--breakout-workers", "8", "--a3c-workers", "1",
                    "--a3c-steps", "200", "--out", str(tmp_path)])
    assert (tmp_path / "bench.png").stat().st_size > 5000
    assert load(tmp_path / "bench.json") == results  # typed rows survive the round trip
    assert [(r.env, r.workers) for r in results.a2c] == [("CartPole-v1", 8),
                                                         ("Breakout-MinAtar", 8)]
    assert [(r.update, r.workers) for r in results.a3c] == [("locked", 1), ("hogwild", 1)]
    table = (tmp_path / "bench.txt").read_text()
    assert not results.a2c_one_core and not results.a2c_devices  # the layouts section: not asked
    for row in results.a2c:  # every measured figure is reported
        assert f"{row.train_steps_per_second.median:,.0f}" in table
    for row in results.a3c:
        assert f"{row.steps_per_second.median:,.0f}" in table


def test_mlp_flop_count_matches_the_layer_sizes():
    from jaxac.envs import make_env
    from jaxac.networks import make_network

    spec = make_env("CartPole-v1")
    network = make_network(spec)
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    counted = roofline.flops(lambda p, o: network.apply(p, o), params, jnp.zeros((100, 4)))
    # two 4-64-64 towers, then 64->2 (logits) and 64->1 (value): 2 FLOPs per multiply-add
    matmul = 2 * 100 * (2 * (4 * 64 + 64 * 64) + 64 * 2 + 64 * 1)
    assert matmul <= counted < 1.5 * matmul


@pytest.mark.slow
def test_rollout_forward_flops_count_the_policy_only():
    """Acting never evaluates the value head, so the FLOP-bound limit must not count it."""
    from jaxac.checkpoint import network_from_config
    from jaxac.config import compose_config
    from jaxac.envs import make_env

    cfg = compose_config([])
    spec = make_env(cfg.env.name)
    network = network_from_config(cfg, spec)
    counted = roofline.training_flops_per_step(cfg, spec, network, workers=16)
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1,) + spec.obs_shape))
    full = roofline.flops(lambda p, o: network.apply(p, o), params,
                          jnp.zeros((16,) + spec.obs_shape))
    policy = 2 * (4 * 64 + 64 * 64 + 64 * 2)  # the actor tower and its logits, per observation
    assert policy <= counted.forward_per_step < 1.2 * policy < full / 16
    assert counted.total_per_step == counted.forward_per_step + counted.loss_and_grad_per_step


def _spread(value: float):
    return spread([value])


def test_sb3_ratios(monkeypatch):
    monkeypatch.delenv("PJRT_NPROC", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    a2c_rows = [A2CRow("CartPole-v1", "cartpole", 8, 1.0, _spread(300_000.0), _spread(1.0), _spread(1.0),
                       _spread(1.0), roofline.FlopCount(1, 1, 2), 1.0, 0.5, 0.5)]
    solve = [SolveResult("a2c", SolvePhase([], "0/0"),
                         SolvePhase([], "1/1", train_seconds=_spread(2.0)))]
    result = SB3Result("2", "2", _spread(10_000.0), SolvePhase([], "1/1",
                                                               train_seconds=_spread(50.0)))
    wall = {"wall time to solve, SB3 / jaxac A2C (warm cache)": 25.0}
    assert sb3.ratios(result, a2c_rows, [], solve) == {  # no one-core row: default threads
        "A2C steps/s at workers=8 (XLA's default threads, as python -m jaxac.run runs it), "
        "jaxac / SB3": 30.0, **wall}
    # python -m jaxac.run workers=8 runs on one XLA thread: the one-core row is the one to compare
    one = [OneCoreRow("CartPole-v1", 8, _spread(450_000.0), _spread(1.0), _spread(1.0), _spread(1.0), 1)]
    assert sb3.ratios(result, a2c_rows, one, solve) == {
        "A2C steps/s at workers=8 (1 XLA thread, as python -m jaxac.run runs it), "
        "jaxac / SB3": 45.0, **wall}


def test_solve_summary_is_over_the_solved_runs():
    from jaxac.bench.solve import SolveRun

    runs = [SolveRun(0, 100, 2.0, 1.0, 3.0), SolveRun(1, None, None, 3.0, 9.0),
            SolveRun(2, 300, 4.0, 2.0, 5.0)]
    phase = summarize(runs)
    assert phase.solved == "2/3"
    assert (phase.env_steps.median, phase.train_seconds.median) == (200, 3.0)
    assert phase.compile_seconds.median == 2.0  # compile time counts every run


def test_report_plot_and_json_round_trip_of_typed_rows(tmp_path):
    import json as json_module

    from jaxac.bench.__main__ import load
    from jaxac.bench.a2c import DefaultLayoutRow
    from jaxac.bench.a3c import A3CRow
    from jaxac.bench.report import BenchResults, Matmul, plot, report
    from jaxac.bench.timing import to_json

    row = A2CRow("CartPole-v1", "cartpole", 8, 1.5, spread([300_123.0, 310_456.0]),
                 _spread(1e6), _spread(5e5), _spread(2e11), roofline.FlopCount(1e4, 3e4, 4e4),
                 5e6, 0.06, 0.1)
    results = BenchResults("a machine", 2, 2, {}, {}, Matmul(1024, 2e11, 2e11, 2e11, 1, [2e11]),
                           a2c=[row],
                           a2c_default=[DefaultLayoutRow("CartPole-v1", 8, "1 device", 305_289.5,
                                                         "1 device", 305_289.5, 1.0)],
                           a3c=[A3CRow(1, "locked", _spread(40_321.0), _spread(8_064.2),
                                       _spread(0.0), _spread(1.3), _spread(150.0))],
                           distributed=[DistributedRow(512, _spread(933_875.0),
                                                       _spread(496_907.0), 496_907 / 933_875)],
                           ray=[RayRow(w, _spread(20_000.0 * w), _spread(1_000.0 * w),
                                       _spread(4_000.0), _spread(200.0 * w), _spread(w - 1.0),
                                       _spread(w / 2), _spread(800.0 * w), _spread(w / 2),
                                       _spread(36_828.0), _spread(12_880.0)) for w in (1, 4)],
                           ray_floor=RayFloor(_spread(906.0), _spread(640.0), _spread(558.0),
                                              36_656))
    text = report(results)
    # medians, the fraction and the 2-process / 1-process ratio, formatted
    for figure in ("305,290", "40,321", "8,064", "6.0%", "933,875", "496,907", "0.53"):
        assert figure in text, figure
    # Ray / threads (0.050), the floor, and the server bound: 1e6 / 800 us = 1,250 updates/s,
    # 1,250 / 200 updates/s per worker = 6 workers
    for figure in ("0.050", "80,000", "4,000", "906", "36,656", "1,250 updates/s", "about 6"):
        assert figure in text, figure
    plot(results, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").stat().st_size > 5000
    (tmp_path / "bench.json").write_text(json_module.dumps(to_json(results)))
    assert load(tmp_path / "bench.json") == results
