"""One measurement in a fresh process, with whichever jaxac is on PYTHONPATH (old or new head):
  python measure.py a2c ENV WORKERS   -> A2C training env steps/s (the bench's own helper, 3 x 1 s)
  python measure.py a3c MODE WORKERS  -> A3C env steps/s over 40k steps (after compiling)
Prints one JSON line."""
import json, sys, time

kind, a, b = sys.argv[1], sys.argv[2], int(sys.argv[3])
import os
import jaxac  # the old head sets the CPU runtime up on import; the new one does nothing
new = os.path.exists(os.path.join(jaxac.__path__[0], "platform.py"))
if new:
    from jaxac import platform
    platform.set_up()
import jax

if kind == "a2c":
    if new:
        from jaxac.bench import a2c, roofline
        t = a2c.training_rates(a, b, 3, 1.0, roofline.matmul_timer(256))
        rates = t.rates
    else:
        from jaxac import bench
        rates = bench.a2c_training_rates(a, b, 3, 1.0, bench.matmul_timer(256))[4]
    rates.sort()
    print(json.dumps({"median": rates[1], "all": rates}))
else:
    from jaxac.checkpoint import network_from_config
    from jaxac.config import compose_config
    from jaxac.envs import make_env
    from jaxac import a3c
    cfg = compose_config(["algo=a3c", f"workers={b}", f"algo.update={a}", "total_steps=40000",
                          "compilation_cache_dir=null"])
    spec = make_env(cfg.env.name)
    if new:
        trainer = a3c.make_trainer(cfg, spec, network_from_config(cfg, spec), jax.devices())
        trainer.compile()
    else:
        trainer = a3c.build_trainer(cfg, spec, network_from_config(cfg, spec), jax.devices())
        a3c.compile_learner(trainer)
    start = time.perf_counter()
    trainer.run_to_completion()
    elapsed = time.perf_counter() - start
    print(json.dumps({"median": 40000 / elapsed}))
