"""How much of each model's test error is seed-to-seed spread, from committed predictions.

``python experiments/seed_variance.py [RESULTS_DIR]`` reads every comparison folder
``<dataset>/<variant>/runs/<model>-s<seed>/predictions.csv`` under RESULTS_DIR (default
``experiments/results``) and prints, per model with at least two seeds of a single-target
regression set: the mean per-seed test RMSE, the RMSE of the mean prediction over seeds, and the
variance of the predictions over seeds averaged over test molecules (its share of the per-seed
MSE). A model whose seeds disagree much more than another's loses to it on per-seed RMSE even
where their averaged predictions are about as good.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

RUN = re.compile(r"^(?P<model>.+)-s(?P<seed>\d+)$")


def seed_spread(runs: list[Path]) -> tuple[float, float, float] | None:
    """(mean per-seed RMSE, RMSE of the seed-mean prediction, mean variance over seeds)."""
    preds, target = [], None
    for run in runs:
        table = pd.read_csv(run / "predictions.csv").set_index("index").sort_index()
        cols = [c for c in table.columns if c.endswith("_pred")]
        if len(cols) != 1 or cols[0][: -len("_pred")] not in table:
            return None  # multi-task or classification: not this table
        preds.append(table[cols[0]].to_numpy(float))
        target = table[cols[0][: -len("_pred")]].to_numpy(float)
    p = np.stack(preds)
    per_seed = float(np.sqrt(((p - target) ** 2).mean(axis=1)).mean())
    ensemble = float(np.sqrt(((p.mean(axis=0) - target) ** 2).mean()))
    return per_seed, ensemble, float(p.var(axis=0).mean())


def main(root: Path) -> None:
    print("| comparison | model | seeds | per-seed RMSE | seed-mean RMSE | seed variance | share |")
    print("|---|---|---|---|---|---|---|")
    for folder in sorted(p.parent for p in root.glob("*/*/summary.json")):
        groups: dict[str, list[Path]] = defaultdict(list)
        for run in sorted((folder / "runs").glob("*-s*")):
            m = RUN.match(run.name)
            if m and (run / "predictions.csv").is_file():
                groups[m["model"]].append(run)
        for model, runs in groups.items():
            spread = seed_spread(runs) if len(runs) > 1 else None
            if spread is None:
                continue
            per_seed, ensemble, var = spread
            print(
                f"| {folder.relative_to(root)} | {model} | {len(runs)} | {per_seed:.3f} | "
                f"{ensemble:.3f} | {var:.3f} | {var / per_seed**2:.2f} |"
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results")
