"""`python -m jaxac.bench` end to end at a tiny size (what it measures, not how fast)."""

import json

from jaxac import bench, bench_sb3


def same(a: float, b: float, tolerance: float = 1e-9) -> bool:
    """a and b agree to a relative `tolerance` (the bench's derived figures, recomputed)."""
    return abs(a / b - 1) < tolerance


def test_bench_measures_and_reports(tmp_path):
    bench.main(["--only", "a2c,a3c", "--repeats", "2", "--seconds", "0.05",
                          "--a2c-workers", "8", "--breakout-workers", "8", "--a3c-workers", "1,2",
                          "--a3c-steps", "500", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["repeats"] == 2 and (tmp_path / "bench.png").stat().st_size > 5000
    assert [(r["env"], r["workers"]) for r in saved["a2c"]] == [("CartPole-v1", 8),
                                                               ("Breakout-MinAtar", 8)]
    for row in saved["a2c"]:
        assert row["train_steps_per_second"]["n"] == 2
        assert row["matmul_flops_per_second"]["n"] == 2  # measured between the training repeats
        limit = row["matmul_flops_per_second"]["median"] / row["flops"]["total_per_step"]
        assert same(row["flop_bound_steps_per_second"], limit)
        assert row["train_steps_per_second"]["min"] <= row["train_steps_per_second"]["median"]
        assert row["compile_seconds"] > 0
        # a training step costs more FLOPs than acting, and the conv torso more than the MLP
        assert row["flops"]["loss_and_grad_per_step"] > row["flops"]["forward_per_step"] > 0
        assert 0 < row["fraction_of_flop_bound"] < 1
        # the network passes alone are the same work as the counted training step
        assert same(row["flops"]["network_passes_per_step"], row["flops"]["total_per_step"],
                    tolerance=0.05)
        assert row["network_pass_steps_per_second"]["n"] == 2
        passes_limit = row["network_pass_steps_per_second"]["median"] / limit
        assert same(row["network_pass_fraction_of_flop_bound"], passes_limit)
    cartpole, breakout = saved["a2c"]
    [one_core] = saved["a2c_one_core"]  # the CartPole rows only, rerun with one XLA thread
    assert one_core["workers"] == 8 and one_core["xla_cpu_threads"] == 1
    assert one_core["train_steps_per_second"]["n"] == 2
    one_core_limit = (one_core["matmul_flops_per_second"]["median"]
                      / cartpole["flops"]["total_per_step"])
    one_core_training = one_core["train_steps_per_second"]["median"]
    assert same(one_core["fraction_of_one_core_flop_bound"] * one_core_limit, one_core_training)
    assert same(one_core["all_cores_speedup"] * one_core_training,
                cartpole["train_steps_per_second"]["median"])
    cores = saved["cpu_cores"]
    all_cores_matmul = cartpole["matmul_flops_per_second"]["median"]
    assert same(one_core["most_with_linear_scaling"] * all_cores_matmul,
                one_core["fraction_of_one_core_flop_bound"] * cores
                * one_core["matmul_flops_per_second"]["median"])
    assert one_core["network_pass_steps_per_second"]["n"] == 2
    one_core_passes = one_core["network_pass_steps_per_second"]["median"]
    assert same(one_core["network_pass_fraction_of_one_core_flop_bound"] * one_core_limit,
                one_core_passes)
    assert same(one_core["network_pass_all_cores_speedup"] * one_core_passes,
                cartpole["network_pass_steps_per_second"]["median"])
    def fraction_and_ratio_agree(row: dict, rate: float, ratio_key: str) -> bool:
        """A CartPole row's FLOP-bound fraction and its ratio to the A2C row, recomputed."""
        limit = row["matmul_flops_per_second"]["median"] / cartpole["flops"]["total_per_step"]
        return (same(row["fraction_of_flop_bound"] * limit, rate)
                and same(row[ratio_key] * cartpole["train_steps_per_second"]["median"], rate))

    # the CartPole batch split over one CPU device per core (if the cores divide it evenly)
    assert len(saved["a2c_devices"]) == (1 if cores > 1 and 8 % cores == 0 else 0)
    for split in saved["a2c_devices"]:
        assert split["workers"] == 8 and split["devices"] == cores
        assert split["train_steps_per_second"]["n"] == split["matmul_flops_per_second"]["n"] == 2
        assert fraction_and_ratio_agree(split, split["train_steps_per_second"]["median"],
                                        "over_one_device")
    # the CartPole batch as one trainer per core, in threads (if the cores divide it evenly)
    assert len(saved["a2c_split"]) == (1 if cores > 1 and 8 % cores == 0 else 0)
    for split in saved["a2c_split"]:
        assert split["workers"] == 8 and split["parts"] == cores
        assert split["steps_per_second"]["n"] == 2 and split["cores_used"]["median"] > 0
        assert fraction_and_ratio_agree(split, split["steps_per_second"]["median"],
                                        "over_training")
    assert breakout["flops"]["total_per_step"] > 10 * cartpole["flops"]["total_per_step"]
    assert [(r["update"], r["workers"]) for r in saved["a3c"]] == [
        ("locked", 1), ("locked", 2), ("hogwild", 1), ("hogwild", 2)]
    assert saved["a3c"][0]["staleness_mean"]["median"] == 0  # one worker is never stale
    for row in saved["a3c"]:
        assert row["cores_used"]["median"] > 0 and row["cpu_us_per_update"]["median"] > 0
    assert [r["workers"] for r in saved["a3c_ceiling"]] == [1, 2]
    for row in saved["a3c_ceiling"]:
        for variant in (row["rollout_and_gradient"], row["with_optimizer_step"]):
            assert variant["steps_per_second"]["n"] == 2
            assert variant["steps_per_second"]["median"] > 0
            assert variant["cores_used"]["median"] > 0 and variant["cpu_us_per_update"]["min"] > 0
    floor = saved["a3c_floor"]
    for call in ("rollout_and_gradient", "optimizer_step"):
        # removing the math can only make a call cheaper, and what is left still costs something
        assert 0 < floor[f"{call}_hollow"]["cpu_us_per_call"]["min"]
        assert (floor[f"{call}_hollow"]["cpu_us_per_call"]["median"]
                < floor[call]["cpu_us_per_call"]["median"] * 1.5)
    table = (tmp_path / "bench.txt").read_text()
    assert "FLOP-bound" in table and "hogwild" in table and "A3C ceiling" in table
    assert "A2C on one core" in table
    assert "XLA's fixed cost is" in table
    assert "more workers can give at most" in table and "alone caps this machine" in table
    assert "whole updates top out at" in table and "2 threads give" in table


def test_mlp_flop_count_matches_the_layer_sizes():
    import jax
    import jax.numpy as jnp

    from jaxac.envs import make_env
    from jaxac.networks import make_network

    spec = make_env("CartPole-v1")
    network = make_network(spec)
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
    counted = bench.flops(lambda p, o: network.apply(p, o), params, jnp.zeros((100, 4)))
    # two 4-64-64 towers, then 64->2 (logits) and 64->1 (value): 2 FLOPs per multiply-add
    matmul = 2 * 100 * (2 * (4 * 64 + 64 * 64) + 64 * 2 + 64 * 1)
    assert matmul <= counted < 1.5 * matmul


def test_rollout_forward_flops_count_the_policy_only():
    """Acting never evaluates the value head, so the FLOP-bound limit must not count it."""
    import jax
    import jax.numpy as jnp

    from jaxac.checkpoint import network_from_config
    from jaxac.config import compose_config
    from jaxac.envs import make_env

    cfg = compose_config([])
    spec = make_env(cfg.env.name)
    network = network_from_config(cfg, spec)
    counted = bench.training_flops_per_step(cfg, spec, network, workers=16)
    params = network.init(jax.random.PRNGKey(0), jnp.zeros((1,) + spec.obs_shape))
    full = bench.flops(lambda p, o: network.apply(p, o), params, jnp.zeros((16,) + spec.obs_shape))
    policy = 2 * (4 * 64 + 64 * 64 + 64 * 2)  # the actor tower and its logits, per observation
    assert policy <= counted["forward_per_step"] < 1.2 * policy < full / 16
    assert counted["total_per_step"] == (counted["forward_per_step"]
                                         + counted["loss_and_grad_per_step"])


def test_sb3_ratios(monkeypatch):
    monkeypatch.delenv("PJRT_NPROC", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    results = {
        "a2c": [{"env": "CartPole-v1", "workers": 8,
                 "train_steps_per_second": {"median": 300_000.0}}],
        "solve": [{"algo": "a2c", "warm_train_seconds": {"median": 2.0}}],
        "sb3": {"steps_per_second": {"median": 10_000.0}, "train_seconds": {"median": 50.0}},
    }
    solve = {"wall time to solve, SB3 / jaxac A2C (warm cache)": 25.0}
    assert bench_sb3.ratios(results) == {  # no one-core row: the default threads' rate
        "A2C steps/s at workers=8 (XLA's default threads, as python -m jaxac.run runs it), "
        "jaxac / SB3": 30.0, **solve}
    # python -m jaxac.run workers=8 runs on one XLA thread: the one-core row is the one to compare
    results["a2c_one_core"] = [{"workers": 8, "train_steps_per_second": {"median": 450_000.0}}]
    assert bench_sb3.ratios(results) == {
        "A2C steps/s at workers=8 (1 XLA thread, as python -m jaxac.run runs it), "
        "jaxac / SB3": 45.0, **solve}
