"""The bench's A2C sections at a tiny size: what they measure and the arithmetic of their figures
(not how fast)."""

import os

import pytest

from jaxac.bench import a2c, roofline


def same(a: float, b: float, tolerance: float = 1e-9) -> bool:
    """a and b agree to a relative `tolerance` (the bench's derived figures, recomputed)."""
    return abs(a / b - 1) < tolerance


def check_row_arithmetic(row) -> None:
    """The figures of one A2C row agree with each other."""
    assert row.train_steps_per_second.n == 2
    assert row.matmul_flops_per_second.n == 2  # measured between the training repeats
    limit = row.matmul_flops_per_second.median / row.flops.total_per_step
    assert same(row.flop_bound_steps_per_second, limit)
    assert row.train_steps_per_second.min <= row.train_steps_per_second.median
    assert row.compile_seconds > 0
    # a training step costs more FLOPs than acting
    assert row.flops.loss_and_grad_per_step > row.flops.forward_per_step > 0
    assert 0 < row.fraction_of_flop_bound
    assert same(row.fraction_of_flop_bound * limit, row.train_steps_per_second.median)
    # the network passes alone are the same work as the counted training step
    assert same(row.flops.network_passes_per_step, row.flops.total_per_step, tolerance=0.05)
    assert row.network_pass_steps_per_second.n == 2
    passes_limit = row.network_pass_steps_per_second.median / limit
    assert same(row.network_pass_fraction_of_flop_bound, passes_limit)


@pytest.fixture(scope="module")
def rows():
    matmul_rate = roofline.matmul_timer(256)
    return [a2c.throughput(env, 8, 2, 0.05, matmul_rate) for env in ("cartpole", "breakout")]


def test_training_rates_and_the_cores_they_used():
    t = a2c.training_rates("cartpole", 8, 2, 0.01, lambda: 1e9)
    assert t.cfg.env.name == "CartPole-v1" and t.compile_seconds > 0
    assert len(t.rates) == len(t.cores) == 2 and t.matmul == [1e9, 1e9]
    assert all(rate > 0 for rate in t.rates) and all(0 < c <= 16 for c in t.cores)


@pytest.mark.slow
def test_a_cartpole_row_against_the_flop_bound_limit():
    row = a2c.throughput("cartpole", 8, 2, 0.01, roofline.matmul_timer(128))
    assert (row.env, row.preset, row.workers) == ("CartPole-v1", "cartpole", 8)
    check_row_arithmetic(row)


@pytest.mark.slow
def test_a2c_rows_against_the_flop_bound_limit(rows):
    assert [(r.env, r.workers) for r in rows] == [("CartPole-v1", 8), ("Breakout-MinAtar", 8)]
    for row in rows:
        check_row_arithmetic(row)
    cartpole, breakout = rows
    assert breakout.flops.total_per_step > 10 * cartpole.flops.total_per_step  # the conv torso


@pytest.fixture(scope="module")
def one_core_rows(rows):
    return a2c.one_core(rows, 2, 0.05)  # every row again, in a child with one XLA thread


@pytest.fixture(scope="module")
def device_rows(rows):
    return a2c.on_cpu_devices(rows, 2, 0.05)  # in a child with one CPU device per core


@pytest.mark.slow
def test_one_core_rows_in_a_child_with_one_thread(rows, one_core_rows):
    cartpole = rows[0]
    assert [(r.env, r.workers) for r in one_core_rows] == [(r.env, r.workers) for r in rows]
    one = one_core_rows[0]
    assert one.workers == 8 and one.xla_cpu_threads == 1
    assert one.train_steps_per_second.n == 2
    limit = one.matmul_flops_per_second.median / cartpole.flops.total_per_step
    training = one.train_steps_per_second.median
    assert same(one.fraction_of_one_core_flop_bound * limit, training)
    assert same(one.all_cores_speedup * training, cartpole.train_steps_per_second.median)
    cores = os.cpu_count()
    assert same(one.most_with_linear_scaling * cartpole.matmul_flops_per_second.median,
                one.fraction_of_one_core_flop_bound * cores * one.matmul_flops_per_second.median)
    passes = one.network_pass_steps_per_second.median
    assert same(one.network_pass_fraction_of_one_core_flop_bound * limit, passes)
    assert same(one.network_pass_all_cores_speedup * passes,
                cartpole.network_pass_steps_per_second.median)


def fraction_and_ratio_agree(full, row, rate: float, ratio: float) -> bool:
    """A row's FLOP-bound fraction and its ratio to the A2C row `full`, recomputed."""
    limit = row.matmul_flops_per_second.median / full.flops.total_per_step
    return (same(row.fraction_of_flop_bound * limit, rate)
            and same(ratio * full.train_steps_per_second.median, rate))


@pytest.mark.slow
def test_the_batch_split_over_cpu_devices_and_the_split_ceiling(rows, device_rows):
    cartpole, cores = rows[0], os.cpu_count()
    assert len(device_rows) == (2 if cores > 1 and 8 % cores == 0 else 0)  # both environments
    for split, one in zip(device_rows, rows):
        assert (split.env, split.workers, split.devices) == (one.env, 8, cores)
        assert split.train_steps_per_second.n == split.matmul_flops_per_second.n == 2
        assert fraction_and_ratio_agree(one, split, split.train_steps_per_second.median,
                                        split.over_one_device)
    ceiling = a2c.split_ceiling(rows, 2, 0.05, roofline.matmul_timer(256))
    assert len(ceiling) == (1 if cores > 1 and 8 % cores == 0 else 0)
    for split in ceiling:
        assert split.workers == 8 and split.parts == cores
        assert split.steps_per_second.n == 2 and split.cores_used.median > 0
        assert fraction_and_ratio_agree(cartpole, split, split.steps_per_second.median,
                                        split.over_training)


@pytest.mark.slow
def test_default_layout_against_the_best_measured(rows, one_core_rows, device_rows, monkeypatch):
    from jaxac import platform

    monkeypatch.delenv("PJRT_NPROC", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    defaults = a2c.default_layouts(rows, one_core_rows, device_rows)
    assert [(d.env, d.workers) for d in defaults] == [(r.env, r.workers) for r in rows]
    for d, row, one in zip(defaults, rows, one_core_rows):
        measured = {"1 device": row.train_steps_per_second.median,
                    "1 device, 1 thread": one.train_steps_per_second.median}
        measured.update({f"{s.devices} CPU devices": s.train_steps_per_second.median
                         for s in device_rows if (s.env, s.workers) == (row.env, row.workers)})
        assert d.best_steps_per_second == max(measured.values()) == measured[d.best]
        assert d.default_steps_per_second == measured[d.default]
        assert same(d.default_over_best * d.best_steps_per_second, d.default_steps_per_second)
        # 8 workers: too few to split (and one thread), as the run itself picks
        layout = platform.choose_layout("a2c", 8, 1, None, None)
        assert layout.cpu_devices is None and d.default == "1 device, 1 thread"
