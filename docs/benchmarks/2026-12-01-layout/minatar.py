"""Breakout-MinAtar A2C training and network-pass env steps/s by batch size, in this process's
layout (PJRT_NPROC / XLA_FLAGS set by the caller; argv[1] = devices)."""
import json, sys
from jaxac import platform
platform.set_up()
from jaxac.bench import a2c, roofline
devices = int(sys.argv[1])
for workers in (64, 256, 512):
    t = a2c.training_rates("breakout", workers, 3, 1.0, roofline.matmul_timer(256), devices=devices)
    passes, _ = roofline.network_pass_rates(t.cfg, t.spec, t.network, workers, 3, 1.0) if devices == 1 else ([0], 0)
    print(json.dumps({"workers": workers, "train": sorted(t.rates)[1], "passes": sorted(passes)[len(passes)//2]}), flush=True)
