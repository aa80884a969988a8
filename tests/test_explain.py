"""``kangnn explain`` on a tiny trained ESOL run: report, formulas, pruning, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sympy
from cli_helpers import assert_user_error, run_cli
from tiny import TINY_TRAIN

import kangnn.explain as explain_mod
from kangnn.cli import main

ESOL_ROWS = 160
TINY = ["model.conv=gin", *TINY_TRAIN, "dataset.split=random"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, esol_subset) -> Path:
    root = esol_subset(ESOL_ROWS)
    out = tmp_path_factory.mktemp("runs")
    code = main(
        ["train", "experiments/esol.yaml", f"dataset.root={root}", f"output_dir={out}", *TINY]
    )
    assert code == 0
    (run,) = out.iterdir()
    return run


def test_explain_writes_the_report(run_dir, capsys):
    code, out, err = run_cli(["explain", run_dir, "--top", "3"], capsys)
    assert code == 0, err
    folder = Path(out.strip().splitlines()[-1])
    assert folder == run_dir / "explain"
    names = {p.name for p in folder.iterdir()}
    assert names == {
        "report.md",
        "formulas.json",
        "head_functions.png",
        "conv0_nn.png",
        "conv1_nn.png",
    }
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".explain")]
    doc = json.loads((folder / "formulas.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # The report re-evaluates the checkpoint on the run's own validation split.
    assert doc["val"]["original"] == pytest.approx(metrics["val"]["rmse"], rel=1e-5)
    assert doc["val_molecules"] == metrics["num_molecules"]["val"]
    head = doc["head"]
    assert head["widths"] == [16, 16, 1] and len(head["input_scores"]) == 16
    w = head["pruned_widths"]
    assert [s["edges"] for s in head["summary"]] == [w[k] * w[k + 1] for k in range(len(w) - 1)]
    # The formula is sympy in the kept graph-embedding dimensions (splines as phi functions).
    expr = sympy.sympify(head["formula"])
    assert {str(s) for s in expr.free_symbols} <= {f"g_{i}" for i in head["active_inputs"]}
    assert head["fit_r2"] > 0.99
    assert [c["function"] for c in doc["convs"]] == ["nn", "nn"]
    assert all(len(c["input_scores"]) == 16 and len(c["top_edges"]) == 3 for c in doc["convs"])
    report = (folder / "report.md").read_text()
    for section in ("## Validation rmse", "## Head formula", "## Conv functions"):
        assert section in report
    assert f"{doc['val']['original']:.4f}" in report
    assert "val rmse" in err and "with the head pruned" in err


def test_pruning_threshold_and_replacing_an_old_report(run_dir, tmp_path, capsys):
    out_dir = tmp_path / "ex"
    out_dir.mkdir()
    (out_dir / "report.md").write_text("old")
    (out_dir / "stale.txt").write_text("old")
    code, out, err = run_cli(
        ["explain", run_dir, "--out", out_dir, "--threshold", "0.3", "--top", "2"], capsys
    )
    assert code == 0, err
    assert not (out_dir / "stale.txt").exists()  # replaced as a whole
    doc = json.loads((out_dir / "formulas.json").read_text())
    head = doc["head"]
    scores = head["input_scores"]
    assert head["active_inputs"] == [i for i, s in enumerate(scores) if s >= 0.3]
    assert head["pruned_widths"][0] == len(head["active_inputs"]) < 16
    assert doc["val"]["head_pruned"] > 0 and doc["val"]["head_pruned"] != doc["val"]["original"]


def test_a_failed_explain_leaves_the_old_report(run_dir, tmp_path, monkeypatch, capsys):
    out_dir = tmp_path / "ex"
    out_dir.mkdir()
    (out_dir / "report.md").write_text("old")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(explain_mod, "_report", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        main(["explain", str(run_dir), "--out", str(out_dir), "--top", "1", "--threshold", "0.5"])
    assert (out_dir / "report.md").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ex"]


def test_one_line_errors(run_dir, tmp_path, capsys):
    code, _, err = run_cli(["explain", tmp_path / "nope"], capsys)
    assert_user_error(code, err, "run directory not found")
    mlp = tmp_path / "mlp-run"
    shutil.copytree(run_dir, mlp, ignore=shutil.ignore_patterns("explain"))
    cfg = (mlp / "config.yaml").read_text()
    (mlp / "config.yaml").write_text(cfg.replace("function: kan", "function: mlp"))
    code, _, err = run_cli(["explain", mlp], capsys)
    assert_user_error(code, err, "MLP run", "KAN model")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    code, _, err = run_cli(["explain", run_dir, "--out", other], capsys)
    assert_user_error(code, err, "is not an explain report", "not replacing")
    assert (other / "mine.txt").read_text() == "keep"
    code, _, err = run_cli(["explain", run_dir, "--top", "0"], capsys)
    assert_user_error(code, err, "--top must be >= 1")
    code, _, err = run_cli(["explain", run_dir, "--threshold", "-1"], capsys)
    assert_user_error(code, err, "--threshold must be >= 0")
