"""The bench's A3C sections at a tiny size, measured through A3C's public entry points."""

import pytest

from jaxac.bench import a3c


def test_an_a3c_row():
    [row] = a3c.throughput([1], "locked", 1, 200)
    assert (row.update, row.workers, row.staleness_mean.median) == ("locked", 1, 0)
    assert abs(row.updates_per_second.median * 5 / row.steps_per_second.median - 1) < 1e-9


@pytest.mark.slow
def test_a3c_rows_by_worker_count():
    rows = a3c.throughput([1, 2], "locked", 2, 500)
    assert [(r.update, r.workers) for r in rows] == [("locked", 1), ("locked", 2)]
    assert rows[0].staleness_mean.median == 0  # one worker is never stale
    for row in rows:
        assert row.steps_per_second.n == 2
        assert row.cores_used.median > 0 and row.cpu_us_per_update.median > 0
        # 500 env steps in 5-step rollouts: the updates per env step are known exactly
        assert abs(row.updates_per_second.median * 5 / row.steps_per_second.median - 1) < 1e-9


@pytest.mark.slow
def test_a3c_ceiling_and_floor():
    row = a3c.compute_ceiling(2, 2, 0.05)
    assert row.workers == 2
    for variant in (row.rollout_and_gradient, row.with_optimizer_step):
        assert variant.steps_per_second.n == 2 and variant.steps_per_second.median > 0
        assert variant.cores_used.median > 0 and variant.cpu_us_per_update.min > 0
        for c, r, us in zip(variant.cores_used.values, variant.steps_per_second.values,
                            variant.cpu_us_per_update.values):
            assert abs(c / r * 5 * 1e6 / us - 1) < 1e-9  # CPU µs per 5-step update
    floor = a3c.call_floor(2, 0.05)
    for call in ("rollout_and_gradient", "optimizer_step"):
        # removing the math can only make a call cheaper, and what is left still costs something
        assert 0 < floor[f"{call}_hollow"].cpu_us_per_call.min
        assert (floor[f"{call}_hollow"].cpu_us_per_call.median
                < floor[call].cpu_us_per_call.median * 1.5)
