"""Save the standard figures of a sweep: `python experiments/sweep_figures.py SWEEP_DIR OUT_DIR`.

Writes learning_curves.png, learning_curves_by_workers.png, heatmap_final_return.png, heatmap_threshold_steps.png,
final_return_vs_workers.png, throughput_vs_workers.png and staleness_vs_workers.png (the README's
figures come from here), and prints the results table.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from jaxac import plots  # noqa: E402
from jaxac.analysis import load_results, seed_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", nargs="+", help="sweep or run directories")
    parser.add_argument("--out", default="docs/figures", help="where to write the figures")
    parser.add_argument("--threshold", type=float, default=475.0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = load_results(args.sweep_dir)
    runs = results.runs
    plots.plot_learning_curves(results.metrics, by=["algo", "rollout_length"],
                               threshold=args.threshold,
                               title="last-100 return: mean and 95% band over seeds and worker "
                                     "counts",
                               path=out / "learning_curves.png")
    plots.plot_learning_curves(results.metrics, by=["algo", "workers"], threshold=args.threshold,
                               title="last-100 return: mean and 95% band over seeds and rollout "
                                     "lengths",
                               path=out / "learning_curves_by_workers.png")
    plots.plot_heatmaps(runs, "final_return", path=out / "heatmap_final_return.png")
    plots.plot_heatmaps(runs, "threshold_env_steps", path=out / "heatmap_threshold_steps.png")
    plots.plot_final_return_vs_workers(runs, path=out / "final_return_vs_workers.png")
    plots.plot_throughput_vs_workers(runs, path=out / "throughput_vs_workers.png")
    if (runs["algo"] == "a3c").any():
        plots.plot_staleness_vs_workers(runs, path=out / "staleness_vs_workers.png")
    print(runs["status"].value_counts().to_string())
    print(seed_table(runs, ["final_return", "threshold_env_steps", "steps_per_second"],
                     ["algo", "workers", "rollout_length"]).to_string())


if __name__ == "__main__":
    main()
