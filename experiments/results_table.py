"""Collect ``experiments/results/<name>/summary.json`` into one Markdown table.

``python experiments/results_table.py [RESULTS_DIR]`` prints the table that README shows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ["esol", "freesolv", "lipo", "bace", "bbbp", "clintox", "hiv"]


def fmt(row: dict, key: str) -> str:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if mean is None:
        return "n/a"
    return f"{mean:.3f} ± {std:.3f}" if std == std and std is not None else f"{mean:.3f}"


def main(results: Path) -> str:
    lines = [
        "| dataset | metric | seeds | KAN test | MLP test | KAN val | MLP val | params KAN / MLP "
        "| s/epoch KAN / MLP (ratio) | peak MiB KAN / MLP | Wilcoxon p (test) | better on test |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in ORDER:
        path = results / name / "summary.json"
        if not path.exists():
            continue
        s = json.loads(path.read_text())
        kan, mlp = (next(r for r in s["rows"] if r["model"] == m) for m in ("kan", "mlp"))
        metric = s["metric"]
        k, m = kan[f"test_{metric}_mean"], mlp[f"test_{metric}_mean"]
        kan_better = k < m if s["mode"] == "min" else k > m
        p = s["wilcoxon"].get("p")
        lines.append(
            f"| {name} | {metric} | {kan['n_seeds']} | {fmt(kan, f'test_{metric}')} "
            f"| {fmt(mlp, f'test_{metric}')} | {fmt(kan, f'val_{metric}')} "
            f"| {fmt(mlp, f'val_{metric}')} | {kan['params']:,} / {mlp['params']:,} "
            f"| {kan['epoch_time_s_mean']:.2f} / {mlp['epoch_time_s_mean']:.2f} "
            f"({s['time_ratio_kan_mlp']:.2f}x) "
            f"| {kan['peak_memory_mb_mean']:.0f} / {mlp['peak_memory_mb_mean']:.0f} "
            f"| {'n/a' if p is None else f'{p:.3g}'} | {'KAN' if kan_better else 'MLP'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results"))
