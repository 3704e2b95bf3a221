"""`python -m jaxac.bench`: how fast jaxac trains, and how far that is from the machine's limit.

Measures, in one process (time-to-solve runs are subprocesses, as a user would start them, and
so are the one-core and the CPU-device A2C runs, whose thread pools and devices must be set before
JAX starts):

- A2C env steps/s on CartPole-v1 at workers 8, 64, 512, 4096 and on Breakout-MinAtar at 64 and
  512 (`rollout_length` 5), compile seconds apart from steady state;
- the FLOP-bound limit for the same work: the floating-point operations of one training env step
  (XLA's count for the rollout's forward pass plus the loss's forward and backward pass), divided
  into the matrix-multiply rate measured here, between each row's training repeats; training
  throughput as a fraction of it, the inference-only rate (policy forward + env step, no
  learning) and the rate of the update's network passes alone (forward and backward, nothing
  else: how close the trainer could come if the rest were free) at each batch size;
- the CartPole-v1 A2C rows again with XLA's CPU thread pools sized to one thread (a child
  process with PJRT_NPROC=1): what the other cores add, and the FLOP-bound fraction on one core,
  of the training and of its network passes alone;
- the CartPole-v1 A2C rows again with the batch split over one CPU device per core (a child
  process started with that many CPU devices, `devices=<cores>`), and their FLOP-bound fraction;
- the ceiling of a data-parallel split over the cores: each CartPole-v1 batch as one independent
  trainer per core, in threads, with no gradient exchange;
- A3C env steps/s and updates/s at 1, 2, 4, 8 and 16 workers in both update modes, with the mean
  staleness, the CPU they used, the most the workers' jitted calls alone reach, and XLA's fixed
  cost per update (the two calls with their math removed);
- wall seconds and env steps to solve CartPole-v1 (mean of the last 100 training episodes >= 475)
  for A2C and A3C with their default presets, median over seeds, with a cold and a warm JAX
  compilation cache;
- with `--vs sb3`, Stable-Baselines3's A2C on CartPole-v1 with matching settings (see
  `jaxac.bench.sb3`), and the ratios.

Every figure is the median of `--repeats` measurements, reported with its min and max. Results go
to `--out` (default `bench/<date>_<time>/`): `bench.json`, `bench.png`, and the printed table.

The package, one module per concern: `timing` (calibrated repeats and spread), `roofline` (the
matrix-multiply rate and FLOP counts), `a2c` and `a3c` (their sections), `solve` (time to solve),
`sb3` (the Stable-Baselines3 side), `report` (the typed results, table and plot), `__main__` (the
command line).
"""
