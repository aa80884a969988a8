"""experiments/seed_variance.py: the seed spread of planted predictions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).parent.parent / "experiments" / "seed_variance.py"


def _script():
    spec = importlib.util.spec_from_file_location("seed_variance", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(folder: Path, preds: list[float], target: list[float]) -> Path:
    folder.mkdir(parents=True)
    pd.DataFrame({"index": range(len(target)), "y": target, "y_pred": preds}).to_csv(
        folder / "predictions.csv", index=False
    )
    return folder


def test_seeds_off_by_plus_and_minus_d_have_rmse_d_a_perfect_mean_and_variance_d2(tmp_path, capsys):
    sv = _script()
    y = [1.0, -2.0, 0.5]
    runs = [
        _run(tmp_path / "esol" / "dmpnn" / "runs" / "kan-s0", [v + 0.3 for v in y], y),
        _run(tmp_path / "esol" / "dmpnn" / "runs" / "kan-s1", [v - 0.3 for v in y], y),
    ]
    per_seed, ensemble, var = sv.seed_spread(runs)
    assert per_seed == pytest.approx(0.3) and ensemble == pytest.approx(0.0, abs=1e-12)
    assert var == pytest.approx(0.09)
    (tmp_path / "esol" / "dmpnn" / "summary.json").write_text("{}")
    sv.main(tmp_path)
    assert "| esol/dmpnn | kan | 2 | 0.300 | 0.000 | 0.090 | 1.00 |" in capsys.readouterr().out


def test_multi_task_predictions_are_left_out(tmp_path):
    sv = _script()
    folder = tmp_path / "run"
    folder.mkdir()
    pd.DataFrame({"index": [0], "a": [1], "a_pred": [1.0], "b": [0], "b_pred": [0.2]}).to_csv(
        folder / "predictions.csv", index=False
    )
    assert sv.seed_spread([folder, folder]) is None
