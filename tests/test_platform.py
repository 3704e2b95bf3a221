"""`jaxac.platform.set_up` makes CPU computations run inline, unless the environment or an
existing JAX backend already decided, and compiles for 512-bit vectors on processors that run them
at full clock; `xla_cpu_threads` sizes XLA's CPU thread pools and `devices` makes CPU devices;
importing jaxac does none of it. Each case in a fresh process, since all are fixed once per
process, when JAX creates its CPU client."""

import json
import pytest
import os
import subprocess
import sys

FLAG_VARIABLE = "JAX_CPU_ENABLE_ASYNC_DISPATCH"

PROBE = """
import json, sys
import jax
if "--backend-first" in sys.argv:
    jax.devices()
from jaxac.platform import cpu_dispatch, run_cpu_computations_inline, set_up
set_up()
x = jax.numpy.ones((1024, 1024))
x.block_until_ready()
y = jax.jit(lambda a: a @ a @ a @ a)(x)
ready = y.is_ready()  # inline: the call returned only once the result existed
print(json.dumps({"dispatch": cpu_dispatch(), "ready_on_return": ready,
                  "again": run_cpu_computations_inline()}))
"""


def probe(*args, env_flag=None):
    env = {k: v for k, v in os.environ.items() if k != FLAG_VARIABLE}
    if env_flag is not None:
        env[FLAG_VARIABLE] = env_flag
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                         env=env, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_set_up_runs_cpu_computations_inline():
    result = probe()
    assert result["dispatch"] == "inline"
    assert result["ready_on_return"]
    assert not result["again"]  # the client exists now: a second call changes nothing


@pytest.mark.slow
def test_the_environment_keeps_asynchronous_dispatch():
    assert probe(env_flag="true")["dispatch"] == "async"


@pytest.mark.slow
def test_an_existing_backend_is_left_as_it_is():
    assert probe("--backend-first")["dispatch"] == "async"


THREADS_PROBE = """
import json, os, sys
from jaxac.platform import use_xla_cpu_threads, xla_cpu_threads
use_xla_cpu_threads(int(sys.argv[1]))
import jax
x = jax.numpy.ones((512, 512))
jax.jit(lambda a: jax.numpy.tanh(a @ a) @ a + jax.numpy.tanh(a @ a.T) @ a)(x).block_until_ready()
print(json.dumps({"threads": xla_cpu_threads(), "os_threads": len(os.listdir("/proc/self/task"))}))
"""


def threads_probe(threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PJRT_NPROC"}
    out = subprocess.run([sys.executable, "-c", THREADS_PROBE, str(threads)], capture_output=True,
                         text=True, env=env, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_xla_cpu_threads_sizes_the_pools():
    one, four = threads_probe(1), threads_probe(4)
    assert one["threads"] == 1 and four["threads"] == 4
    assert four["os_threads"] >= one["os_threads"] + 3  # three more pool threads at least


def test_a_started_jax_keeps_its_thread_count():
    import jax
    import pytest

    from jaxac.config import ConfigError, compose_config
    from jaxac.platform import xla_cpu_threads
    from jaxac.run import set_up_platform

    jax.devices()  # JAX runs in this process from here on
    other = (xla_cpu_threads() or 0) + 7
    with pytest.raises(ConfigError) as info:
        set_up_platform(compose_config([f"xla_cpu_threads={other}"]))
    assert info.value.key == "xla_cpu_threads" and "fresh process" in str(info.value)
    set_up_platform(compose_config([]))  # unset: nothing to apply, no error


@pytest.mark.slow
def test_a_run_records_its_thread_count(tmp_path):
    from cli import run_jaxac

    out = run_jaxac("xla_cpu_threads=1", "total_steps=2000", "eval_episodes=1",
                    f"hydra.run.dir={tmp_path}/run", env={"PJRT_NPROC": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["environment"]["xla_cpu_threads"] == 1
    assert summary["config"]["xla_cpu_threads"] == 1


XLA_PROBE = """
import json, os, sys
from jaxac.platform import set_up, xla_cpu_vector_width
set_up(cpu_devices=int(sys.argv[1]))
import jax
jax.jit(lambda x: x + 1)(1.0)
print(json.dumps({"devices": len(jax.devices()), "width": xla_cpu_vector_width()}))
"""


def xla_probe(devices: int, xla_flags: str, dump_dir) -> tuple[dict, str]:
    """Set up jaxac's platform in a fresh process with `devices` CPU devices, compile; (what the probe
    saw, the vector width line of the debug options XLA compiled with)."""
    env = {**os.environ, "XLA_FLAGS": f"{xla_flags} --xla_dump_to={dump_dir}",
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", XLA_PROBE, str(devices)], capture_output=True,
                         text=True, env=env, timeout=120, check=True)
    options = "\n".join(p.read_text() for p in dump_dir.glob("*debug_options"))
    width = [line for line in options.splitlines() if "prefer_vector_width" in line]
    return json.loads(out.stdout.strip().splitlines()[-1]), (width or ["default"])[0]


@pytest.mark.slow
def test_devices_makes_that_many_cpu_devices_unless_xla_flags_chose(tmp_path):
    assert xla_probe(2, "", tmp_path / "a")[0]["devices"] == 2
    assert xla_probe(1, "", tmp_path / "b")[0]["devices"] == 1
    chosen = "--xla_force_host_platform_device_count=3"
    assert xla_probe(2, chosen, tmp_path / "c")[0]["devices"] == 3


@pytest.mark.slow
def test_wide_vectors_where_the_processor_runs_them_at_full_clock(tmp_path):
    from jaxac.platform import cpu_has_wide_vectors_at_full_clock

    seen, compiled = xla_probe(1, "", tmp_path / "a")
    if cpu_has_wide_vectors_at_full_clock():
        assert seen["width"] == 512 and compiled.endswith("512")  # XLA compiled with it
    else:
        assert seen["width"] is None and compiled == "default"
    seen, compiled = xla_probe(1, "--xla_cpu_prefer_vector_width=128", tmp_path / "b")
    assert seen["width"] == 128 and compiled.endswith("128")  # the user's choice wins


def test_which_processors_get_wide_vectors():
    from jaxac.platform import wide_vectors_at_full_clock

    zen5 = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 avx512f avx512bw\n"
    zen3 = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2\n"
    skylake = "vendor_id\t: GenuineIntel\nflags\t\t: fpu sse avx2 avx512f\n"
    assert wide_vectors_at_full_clock(zen5)
    assert not wide_vectors_at_full_clock(zen3)
    assert not wide_vectors_at_full_clock(skylake)  # 512-bit work lowers its clock
    assert not wide_vectors_at_full_clock("")


@pytest.mark.slow
def test_a_run_with_devices_2_splits_over_two_cpu_devices(tmp_path):
    from cli import run_jaxac

    env = {"XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    out = run_jaxac("devices=2", "workers=8", "total_steps=2000", "eval_episodes=1",
                    f"hydra.run.dir={tmp_path}/run", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    environment = json.loads((tmp_path / "run" / "summary.json").read_text())["environment"]
    assert [d.split()[0] for d in environment["devices"]] == ["cpu:0", "cpu:1"]
    assert "2 device(s)" in out.stdout + out.stderr


def test_small_a2c_batches_on_one_device_get_one_thread(monkeypatch):
    from jaxac.platform import SMALL_A2C_BATCH, automatic_xla_cpu_threads

    monkeypatch.delenv("PJRT_NPROC", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    assert automatic_xla_cpu_threads("a2c", 8, 1, None) == 1
    assert automatic_xla_cpu_threads("a2c", SMALL_A2C_BATCH, 1, 1) == 1
    assert automatic_xla_cpu_threads("a2c", 8, SMALL_A2C_BATCH, None) is None  # seeds count
    assert automatic_xla_cpu_threads("a2c", 512, 1, None) is None
    assert automatic_xla_cpu_threads("a2c", 8, 1, 2) is None  # split over devices
    assert automatic_xla_cpu_threads("a3c", 8, 1, None) is None  # workers overlap on the pool
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    assert automatic_xla_cpu_threads("a2c", 8, 1, None) is None  # devices=null: all four
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("PJRT_NPROC", "2")
    assert automatic_xla_cpu_threads("a2c", 8, 1, None) is None  # the environment decided


@pytest.mark.slow
def test_a_default_run_gets_one_thread_and_a_large_batch_all(tmp_path):
    from cli import run_jaxac

    for name, overrides, expected in (("small", [], 1), ("large", ["workers=128"], None)):
        out = run_jaxac("total_steps=2560", "eval_episodes=1", *overrides,
                        f"hydra.run.dir={tmp_path}/{name}", env={"PJRT_NPROC": ""})
        assert out.returncode == 0, out.stderr[-2000:]
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["environment"]["xla_cpu_threads"] == expected, name
        assert summary["config"]["xla_cpu_threads"] is None


IMPORT_PROBE = """
import json, os
before = {k: os.environ.get(k) for k in ("XLA_FLAGS", "PJRT_NPROC")}
import jax
dispatch = jax.config.read("jax_cpu_enable_async_dispatch")
import jaxac, jaxac.analysis, jaxac.plots, jaxac.run, jaxac.a2c, jaxac.a3c, jaxac.bench
from jaxac import platform
print(json.dumps({"env_unchanged": before == {k: os.environ.get(k) for k in before},
                  "dispatch_unchanged": jax.config.read("jax_cpu_enable_async_dispatch")
                  == dispatch, "threefry": platform.unrolled_threefry_registered(),
                  "jax_started": platform.jax_started()}))
"""


def test_importing_jaxac_changes_nothing_about_jax():
    env = {k: v for k, v in os.environ.items() if k not in (FLAG_VARIABLE, "PJRT_NPROC")}
    env["XLA_FLAGS"] = ""
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True,
                         env=env, timeout=120, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"env_unchanged": True, "dispatch_unchanged": True, "threefry": False,
                    "jax_started": False}


def test_the_layout_rule(monkeypatch):
    from jaxac import platform

    for name in ("PJRT_NPROC", "JAX_PLATFORMS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    plugin_check = platform.accelerator_plugin_installed
    monkeypatch.setattr(platform, "accelerator_plugin_installed", lambda: False)

    def layout(workers, seeds=1, cores=2, algo="a2c", devices=None, threads=None):
        chosen = platform.choose_layout(algo, workers, seeds, devices, threads, cores)
        return chosen.cpu_devices, chosen.xla_cpu_threads, chosen.automatic

    assert layout(8) == (None, 1, True)  # 4 per core: one device, one thread
    assert layout(64) == (2, None, True)  # 32 per core: split, a thread pool per core
    assert layout(512) == layout(4096) == (2, None, True)
    assert layout(8, seeds=8) == (2, None, True)  # the seeds count: 32 environments per device
    assert layout(30) == (None, 1, True)  # 15 per device: one
    assert layout(96, cores=4) == (3, None, True)  # 4 devices would get 24 each; 3 get 32
    assert layout(66, cores=2) == (2, None, True)
    assert layout(65, cores=2)[0] is None  # no even split
    assert layout(512, cores=1) == (None, None, True)
    assert layout(16, algo="a3c") == (None, None, True)  # A3C's workers share one device
    assert layout(512, devices=1) == (None, None, False)  # what the user asked for
    assert layout(8, devices=2) == (2, None, False)
    assert layout(512, threads=1) == (2, 1, True)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    assert layout(512)[2] is False  # the environment decided
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(platform, "accelerator_plugin_installed", plugin_check)
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert layout(512) == (None, None, False)  # every accelerator, as before
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert not platform.accelerator_plugin_installed()


@pytest.mark.slow
def test_a_run_prints_and_records_its_layout(tmp_path):
    from cli import run_jaxac

    env = {"PJRT_NPROC": "", "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    for name, overrides, devices, automatic in (("split", ["workers=64"], 2, True),
                                                ("one", ["workers=8"], 1, True),
                                                ("asked", ["workers=64", "devices=1"], 1, False)):
        out = run_jaxac(*overrides, "total_steps=3200", "eval_episodes=1",
                        f"hydra.run.dir={tmp_path}/{name}", env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        layout = json.loads((tmp_path / name / "summary.json").read_text())["layout"]
        assert len(layout["devices"]) == devices and layout["automatic"] == automatic, name
        assert ("layout (automatic)" if automatic else "layout (as set)") in out.stdout + out.stderr
        assert layout["reason"] in out.stdout + out.stderr
