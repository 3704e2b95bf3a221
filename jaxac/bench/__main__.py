"""`python -m jaxac.bench [--only a2c,a3c,solve] [--vs sb3] ...`: run the sections, write
bench.json, bench.txt and bench.png (see `jaxac.bench`)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path

# "layouts": A2C on one XLA thread, split over CPU devices, and the default layout's check, at
# the a2c section's batch sizes (CPU only)
# "trackers": A2C steps/s with each experiment tracker against none (whole runs)
SECTIONS = ("a2c", "layouts", "a3c", "solve", "distributed", "ray", "trackers")


def parse_workers(value: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(w) for w in value.split(",")) if value else default


def machine_name() -> str:
    import jax

    from jaxac.metrics import environment_info

    info = environment_info()
    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    return (f"{info['processor']} ({info['cpu_count']} cores), JAX {info['versions']['jax']} "
            f"on {jax.default_backend()} ({kind}), {info['cpu_dispatch']} CPU dispatch")


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(prog="python -m jaxac.bench",
                                     description="How fast jaxac trains, and how far that is "
                                                 "from the machine's limit.")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default bench/<date>_<time>)")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per figure")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="duration of one throughput measurement")
    parser.add_argument("--only", default=None,
                        help="comma-separated sections: " + ", ".join(SECTIONS))
    parser.add_argument("--a2c-workers", default=None,
                        help="CartPole-v1 batch sizes instead of 8,64,512,4096 "
                             "(e.g. up to 65536 on a GPU)")
    parser.add_argument("--breakout-workers", default=None,
                        help="Breakout-MinAtar batch sizes instead of 64,512")
    parser.add_argument("--a3c-workers", default=None,
                        help="A3C worker counts instead of 1,2,4,8,16")
    parser.add_argument("--a3c-steps", type=int, default=20_000,
                        help="env steps per A3C measurement")
    parser.add_argument("--solve-seeds", type=int, default=5)
    parser.add_argument("--distributed-workers", default=None,
                        help="comma-separated A2C worker counts of the multi-process section "
                             "(default 512,4096)")
    parser.add_argument("--vs", choices=["sb3"], default=None,
                        help="also train Stable-Baselines3's A2C (needs the sb3 extra)")
    args = parser.parse_args(argv)
    args.only_given = args.only is not None
    args.only = args.only or ",".join(SECTIONS)
    sections = set(args.only.split(","))
    unknown = sections - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown section(s) {sorted(unknown)}; allowed: "
                     + ", ".join(SECTIONS))
    if "layouts" in sections and "a2c" not in sections:
        parser.error("--only layouts compares layouts at the a2c section's batch sizes: add a2c")
    if "ray" in sections and importlib.util.find_spec("ray") is None:
        from jaxac.config import RAY_INSTALL

        if args.only_given:
            parser.error(f"--only ray needs Ray: {RAY_INSTALL}")
        print(f"(the ray section is skipped: Ray is not installed; {RAY_INSTALL})")
        sections.discard("ray")
    if args.vs == "sb3":
        from jaxac.bench import sb3

        sb3.check_installed()  # fail before measuring anything
    from jaxac import platform

    platform.set_up()  # before JAX starts
    return run(args, sections)


def run(args: argparse.Namespace, sections: set[str]):
    import jax

    from jaxac.bench import a2c, a3c, report, roofline, solve, timing
    from jaxac.config import UPDATE_MODES
    from jaxac.metrics import environment_info, write_json

    out = args.out or Path("bench") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out.mkdir(parents=True, exist_ok=True)
    sizes = {"cartpole": parse_workers(args.a2c_workers, a2c.SIZES["cartpole"]),
             "breakout": parse_workers(args.breakout_workers, a2c.SIZES["breakout"])}
    results = report.BenchResults(machine_name(), os.cpu_count() or 1, args.repeats,
                                  environment_info(), vars(args) | {"out": str(out)})
    jax.config.update("jax_enable_compilation_cache", False)  # compile times are cold here
    if "a2c" in sections:
        size = roofline.default_matmul_size()
        matmul_rate = roofline.matmul_timer(size)
        measured = timing.spread([matmul_rate() for _ in range(args.repeats)])
        results.matmul = report.Matmul(size, **vars(measured))
        for env, workers_list in sizes.items():
            for workers in workers_list:
                row = a2c.throughput(env, workers, args.repeats, args.seconds, matmul_rate)
                results.a2c.append(row)
                print(f"A2C {row.env} workers={workers}: "
                      f"{row.train_steps_per_second.median:,.0f} steps/s", flush=True)
        if "layouts" in sections and jax.default_backend() == "cpu":  # about the CPU's cores
            results.a2c_devices = a2c.on_cpu_devices(results.a2c, args.repeats, args.seconds)
            results.a2c_split = a2c.split_ceiling(results.a2c, args.repeats, args.seconds,
                                                  matmul_rate)
            results.a2c_one_core = a2c.one_core(results.a2c, args.repeats, args.seconds)
            results.a2c_default = a2c.default_layouts(results.a2c, results.a2c_one_core,
                                                      results.a2c_devices)
    if "a3c" in sections:
        a3c_workers = parse_workers(args.a3c_workers, a3c.WORKERS)
        for mode in UPDATE_MODES:
            for row in a3c.throughput(a3c_workers, mode, args.repeats, args.a3c_steps):
                results.a3c.append(row)
                print(f"A3C {mode} workers={row.workers}: "
                      f"{row.steps_per_second.median:,.0f} steps/s", flush=True)
        results.a3c_ceiling = [a3c.compute_ceiling(w, args.repeats, args.seconds)
                               for w in a3c_workers]
        results.a3c_floor = a3c.call_floor(args.repeats, args.seconds)
    if "solve" in sections:
        with tempfile.TemporaryDirectory() as tmp:
            results.solve = [solve.time_to_solve(algo, args.solve_seeds, Path(tmp))
                             for algo in ("a2c", "a3c")]
    if "distributed" in sections:
        from jaxac.bench import distributed

        results.distributed = distributed.measure(
            parse_workers(args.distributed_workers, distributed.WORKERS), min(args.repeats, 3))
        for row in results.distributed:
            print(f"A2C workers={row.workers}: 2 processes / 1 process = {row.ratio:.2f}",
                  flush=True)
    if "ray" in sections:
        from jaxac.bench import ray_a3c

        results.ray, results.ray_floor = ray_a3c.measure(
            parse_workers(args.a3c_workers, ray_a3c.WORKERS), min(args.repeats, 3),
            args.a3c_steps)
        for row in results.ray:
            print(f"A3C workers={row.workers}: threads "
                  f"{row.threads_steps_per_second.median:,.0f}, Ray "
                  f"{row.ray_steps_per_second.median:,.0f} steps/s", flush=True)
    if "trackers" in sections:
        from jaxac.bench import trackers

        results.trackers = trackers.measure(min(args.repeats, 5))
        for row in results.trackers:
            print(f"A2C workers={trackers.WORKERS} logger={row.logger}: "
                  f"{row.steps_per_second.median:,.0f} steps/s ({row.ratio:.3f} of none)",
                  flush=True)
    if args.vs == "sb3":
        from jaxac.bench import sb3

        results.sb3 = sb3.measure(args.repeats, args.solve_seeds, args.seconds)
        results.sb3.ratios = sb3.ratios(results.sb3, results.a2c, results.a2c_one_core,
                                        results.solve)
    write_json(out / "bench.json", timing.to_json(results))
    table = report.report(results)
    (out / "bench.txt").write_text(table + "\n")
    written = ["bench.json", "bench.txt"]
    if results.a2c or results.a3c:
        report.plot(results, out / "bench.png")
        written.append("bench.png")
    print(table)
    print(f"\nwritten to {out}/ ({', '.join(written)})")
    return results


def load(path: str | os.PathLike):
    """A bench.json written by this command, as the typed results."""
    from jaxac.bench.report import BenchResults
    from jaxac.bench.timing import from_json

    return from_json(BenchResults, json.loads(Path(path).read_text()))


if __name__ == "__main__":
    main()
