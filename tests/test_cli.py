"""The ``kangnn`` command line: train, predict, plot, compare, datasets, bench, and user errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import assert_user_error, run_cli
from tiny import TINY_TRAIN, StopAt

from kangnn.cli import main

ESOL_ROWS = 160
TINY = [*TINY_TRAIN, "dataset.split=random"]
METRICS_KEYS = {"val", "test", "params", "epoch_time_s", "best_epoch"}


@pytest.fixture(scope="module")
def esol_root(esol_subset) -> Path:
    return esol_subset(ESOL_ROWS)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "esol.yaml"
    path.write_text(Path("experiments/esol.yaml").read_text())
    return path


@pytest.fixture(scope="module")
def trained(esol_root, config_file, tmp_path_factory):
    """One tiny KAN run through the CLI, shared by the tests that read a run directory."""
    out = tmp_path_factory.mktemp("runs")
    capsys = None
    code = main(
        [
            "train",
            str(config_file),
            f"dataset.root={esol_root}",
            f"output_dir={out}",
            "model.conv=gin",
            *TINY,
        ]
    )
    assert code == 0
    runs = [p for p in out.iterdir()]
    assert len(runs) == 1
    del capsys
    return runs[0]


def test_train_writes_a_complete_run_directory(trained):
    run = trained
    for name in (
        "config.yaml",
        "splits.json",
        "metrics.json",
        "predictions.csv",
        "scaler.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "logs/metrics.csv",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert METRICS_KEYS <= set(metrics)
    assert set(metrics["val"]) == {"rmse", "mae"} and set(metrics["test"]) == {"rmse", "mae"}
    assert metrics["params"] == metrics["param_match"]["kan_params"]
    assert 1 <= metrics["best_epoch"] <= 2 and metrics["epoch_time_s"] > 0
    split = json.loads((run / "splits.json").read_text())
    rows = list(csv.DictReader(open(run / "predictions.csv")))
    assert [int(r["index"]) for r in rows] == split["test"]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["conv"] == "gin" and cfg["train"]["epochs"] == 2  # resolved overrides
    assert not (run.parent / ".partial").exists()


def test_data_root_option_is_dataset_root(config_file, tmp_path, capsys):
    # --data-root names where <name>/raw/<file> is read, like dataset.root=DIR: a header-only
    # ESOL file there must be the one the error names.
    raw = tmp_path / "other-root" / "esol" / "raw" / "delaney-processed.csv"
    raw.parent.mkdir(parents=True)
    raw.write_text("Compound ID,measured log solubility in mols per litre,smiles\n")
    code, _, err = run_cli(
        [
            "train",
            config_file,
            "--data-root",
            str(tmp_path / "other-root"),
            f"output_dir={tmp_path / 'runs'}",
            *TINY,
        ],
        capsys,
    )
    assert_user_error(code, err, str(raw))
    assert not (tmp_path / "runs").exists()


def test_train_prints_the_run_directory(esol_root, config_file, tmp_path, capsys):
    code, out, err = run_cli(
        [
            "train",
            config_file,
            f"dataset.root={esol_root}",
            f"output_dir={tmp_path}",
            *TINY,
            "train.epochs=1",
            "model.function=mlp",
        ],
        capsys,
    )
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1])
    assert run.parent == tmp_path and run.name.startswith("esol-gine-mlp-s0-")
    metrics = json.loads((run / "metrics.json").read_text())
    match = metrics["param_match"]
    assert abs(match["rel_diff"]) <= 0.05 and metrics["params"] == match["mlp_params"]


def test_predict_new_molecules(trained, tmp_path, capsys):
    src = tmp_path / "new.csv"
    src.write_text("name,smiles\nethanol,CCO\nphenol,c1ccccc1O\n")
    dst = tmp_path / "out" / "preds.csv"
    code, out, err = run_cli(["predict", trained, "--input", src, "--output", dst], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(open(dst)))
    assert [r["name"] for r in rows] == ["ethanol", "phenol"]
    pred_col = [k for k in rows[0] if k.endswith("_pred")]
    assert len(pred_col) == 1 and all(float(r[pred_col[0]]) == float(r[pred_col[0]]) for r in rows)
    # An invalid SMILES follows the run's policy (skip_invalid=false): one-line error, no output.
    bad = tmp_path / "bad.csv"
    bad.write_text("smiles\nCCO\nC1CC\n")
    dst2 = tmp_path / "bad_out.csv"
    code, out, err = run_cli(["predict", trained, "--input", bad, "--output", dst2], capsys)
    assert_user_error(code, err, "line 3", "C1CC")
    assert not dst2.exists()


def test_plot_learned_functions(trained, capsys):
    code, out, err = run_cli(["plot", trained, "--edges", "3"], capsys)
    assert code == 0, err
    png = Path(out.strip())
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


def test_datasets_lists_the_builtin_names(capsys):
    code, out, _ = run_cli(["datasets"], capsys)
    assert code == 0 and {"esol", "bbbp", "hiv"} <= set(out.split())


# ----------------------------------------------------------------------------- user errors


def test_missing_config_file(tmp_path, capsys):
    code, _, err = run_cli(["train", tmp_path / "nope.yaml"], capsys)
    assert_user_error(code, err, "nope.yaml")


def test_unknown_key_and_wrong_type(config_file, tmp_path, capsys):
    code, _, err = run_cli(
        ["train", config_file, "train.epoch=3", f"output_dir={tmp_path}"], capsys
    )
    assert_user_error(code, err, "train.epoch")
    code, _, err = run_cli(["compare", config_file, "model.hidden_channels=wide"], capsys)
    assert_user_error(code, err, "model.hidden_channels")
    assert not any(tmp_path.iterdir())


def test_missing_data_file(config_file, tmp_path, capsys):
    out = tmp_path / "runs"
    code, _, err = run_cli(
        [
            "train",
            config_file,
            "dataset.name=null",
            f"dataset.path={tmp_path / 'absent.csv'}",
            f"output_dir={out}",
        ],
        capsys,
    )
    assert_user_error(code, err, "absent.csv")
    assert not out.exists()


def test_data_without_molecules(config_file, tmp_path, capsys):
    data = tmp_path / "empty.csv"
    data.write_text("smiles,y\nnot_a_smiles,1.0\nC1CC,2.0\n")
    out = tmp_path / "runs"
    code, _, err = run_cli(
        [
            "train",
            config_file,
            "dataset.name=null",
            f"dataset.path={data}",
            "dataset.target_columns=[y]",
            "dataset.task=regression",
            "dataset.skip_invalid=true",
            f"output_dir={out}",
            *TINY,
        ],
        capsys,
    )
    assert_user_error(code, err, "no valid molecules")
    assert not out.exists()


def test_bad_trainer_settings_leave_nothing_behind(esol_root, config_file, tmp_path, capsys):
    out = tmp_path / "runs" / "deeper"
    args = ["train", config_file, f"dataset.root={esol_root}", f"output_dir={out}", *TINY]
    code, _, err = run_cli([*args, "train.strategy=nonsense"], capsys)
    assert_user_error(code, err, "train.strategy")
    assert not (tmp_path / "runs").exists()  # the folders it made are gone too


def test_missing_run_directory(tmp_path, capsys):
    code, _, err = run_cli(
        ["predict", tmp_path / "gone", "--input", "x.csv", "--output", "y.csv"], capsys
    )
    assert_user_error(code, err, "gone")
    code, _, err = run_cli(["plot", tmp_path / "gone"], capsys)
    assert_user_error(code, err, "run directory not found")
    code, _, err = run_cli(["train", "--resume", tmp_path / "gone"], capsys)
    assert_user_error(code, err, "gone")


def test_checkpoint_of_a_different_model(trained, tmp_path, capsys):
    run = tmp_path / "copied"
    shutil.copytree(trained, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["conv"] = "gine"  # the config now describes another model than the checkpoint
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    src = tmp_path / "in.csv"
    src.write_text("smiles\nCCO\n")
    dst = tmp_path / "preds.csv"
    code, _, err = run_cli(["predict", run, "--input", src, "--output", dst], capsys)
    assert_user_error(code, err, "different model")
    assert not dst.exists()
    code, _, err = run_cli(["train", "--resume", run, "train.epochs=3"], capsys)
    assert_user_error(code, err, "different model")
    assert not (tmp_path / ".partial").exists()


def test_plot_of_an_mlp_run_is_a_user_error(trained, tmp_path, capsys):
    run = tmp_path / "mlp"
    shutil.copytree(trained, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["function"] = "mlp"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    code, _, err = run_cli(["plot", run], capsys)
    assert_user_error(code, err)


# ----------------------------------------------------------------------------- compare, bench


@pytest.mark.slow
def test_compare_two_seeds(esol_root, config_file, tmp_path, capsys):
    code, out, err = run_cli(
        [
            "compare",
            config_file,
            "--seeds",
            "2",
            f"dataset.root={esol_root}",
            f"output_dir={tmp_path}",
            *TINY,
            "train.epochs=1",
        ],
        capsys,
    )
    assert code == 0, err
    cmp_dir = Path(out.strip().splitlines()[-1])
    for name in ("summary.csv", "summary.md", "curves.png", "runs.csv"):
        assert (cmp_dir / name).is_file(), name
    rows = list(csv.DictReader(open(cmp_dir / "summary.csv")))
    assert [r["model"] for r in rows] == ["kan", "mlp"]
    for col in (
        "val_rmse_mean",
        "val_rmse_std",
        "test_rmse_mean",
        "test_rmse_std",
        "params",
        "epoch_time_s_mean",
        "peak_memory_mb_mean",
        "wilcoxon_p",
        "wilcoxon_note",
    ):
        assert col in rows[0], col
    kan, mlp = int(rows[0]["params"]), int(rows[1]["params"])
    assert abs(kan - mlp) / kan <= 0.05
    md = (cmp_dir / "summary.md").read_text()
    assert "Wilcoxon" in md and "±" in md
    assert "| KAN |" in out and "| MLP |" in out  # the table is printed
    runs = sorted(p.name for p in (cmp_dir / "runs").iterdir())
    assert runs == ["kan-s0", "kan-s1", "mlp-s0", "mlp-s1"]
    splits = {
        json.loads((cmp_dir / "runs" / r / "splits.json").read_text())["test"][0]
        for r in ("kan-s1", "mlp-s1")
    }
    assert len(splits) == 1  # same split for both models of a seed
    assert sorted(p.name for p in tmp_path.iterdir()) == [cmp_dir.name]


def test_compare_continues_an_interrupted_comparison(esol_root, config_file, tmp_path, monkeypatch):
    """An interrupted comparison keeps its finished runs; the same call with the same out_dir
    trains only the missing ones (here two at a time), and another config may not reuse it."""
    from kangnn.config import load_config
    from kangnn.train import compare as cmp
    from kangnn.train.rundir import RunDirError

    overrides = [f"dataset.root={esol_root}", f"output_dir={tmp_path}", *TINY, "train.epochs=1"]
    cfg = load_config(config_file, overrides)
    out = tmp_path / "cmp"
    trained, interrupt = [], [True]

    def run_inprocess(run_cfg, run_dir, split, label=None, resume=None):  # no child processes
        if len(trained) == 3 and interrupt[0]:
            raise KeyboardInterrupt
        trained.append(run_dir.name)
        return cmp._train_inprocess(run_cfg, run_dir, split, label, resume)

    monkeypatch.setattr(cmp, "_train_isolated", run_inprocess)
    with pytest.raises(KeyboardInterrupt):
        cmp.compare(cfg, seeds=2, out_dir=out)
    staging = tmp_path / ".partial" / "cmp"
    assert trained == ["kan-s0", "mlp-s0", "kan-s1"] and not out.exists()
    kept = sorted(p.parent.name for p in staging.glob("runs/*/metrics.json"))
    assert kept == ["kan-s0", "kan-s1", "mlp-s0"]
    before = (staging / "runs" / "kan-s0" / "metrics.json").read_text()

    other = load_config(config_file, [*overrides, "train.lr=0.002"])
    with pytest.raises(RunDirError, match="unfinished comparison of another config"):
        cmp.compare(other, seeds=2, out_dir=out)

    interrupt[0] = False
    trained.clear()
    result = cmp.compare(cfg, seeds=2, out_dir=out, jobs=2)
    assert trained == ["mlp-s1"]
    assert result.out_dir == out and not staging.exists()
    assert (out / "runs" / "kan-s0" / "metrics.json").read_text() == before
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["model"] for r in rows] == ["kan", "mlp"]
    with pytest.raises(cmp.ConfigError, match="parallel runs"):
        cmp.compare(load_config(config_file, [*overrides, "compare.isolate=false"]), jobs=2)


def test_compare_continues_an_interrupted_run_where_it_stopped(
    esol_root, config_file, tmp_path, monkeypatch, capsys
):
    """A run killed mid-training (e.g. at a session's end) is continued from its last epoch by
    the next call, and ends with the numbers of a comparison that ran through."""
    from kangnn.config import load_config
    from kangnn.train import compare as cmp
    from kangnn.train.run import train

    overrides = [f"dataset.root={esol_root}", f"output_dir={tmp_path}", *TINY]
    overrides += ["train.epochs=3", "model.dropout=0.3", "compare.isolate=false"]
    cfg = load_config(config_file, overrides)
    whole = cmp.compare(cfg, seeds=1, out_dir=tmp_path / "whole")

    calls, real = [], cmp._train_inprocess

    def run_inprocess(run_cfg, run_dir, split, label=None, resume=None):
        calls.append((run_dir.name, resume is not None))
        if run_dir.name == "mlp-s0" and resume is None:  # killed after its epoch 1
            train(run_cfg, run_dir=run_dir, split=split, callbacks=[StopAt(1)])
        return real(run_cfg, run_dir, split, label, resume)

    monkeypatch.setattr(cmp, "_train_inprocess", run_inprocess)
    out = tmp_path / "cut"
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        cmp.compare(cfg, seeds=1, out_dir=out)
    partial = tmp_path / ".partial" / "cut" / "runs" / ".partial" / "mlp-s0"
    assert (partial / "checkpoints" / "last.ckpt").is_file()
    capsys.readouterr()
    calls.clear()
    cmp.compare(cfg, seeds=1, out_dir=out, log=print)
    assert calls == [("mlp-s0", True)]  # kan-s0 was kept, mlp-s0 continued
    assert "seed 0 MLP: continuing an interrupted run after epoch 1" in capsys.readouterr().out
    for run in ("kan-s0", "mlp-s0"):
        a = json.loads((whole.out_dir / "runs" / run / "metrics.json").read_text())
        b = json.loads((out / "runs" / run / "metrics.json").read_text())
        for key in ("val", "test", "best_epoch", "epochs_run"):
            assert a[key] == b[key], (run, key)
    a, b = (list(csv.DictReader(open(d / "summary.csv"))) for d in (whole.out_dir, out))
    assert [r["test_rmse_mean"] for r in a] == [r["test_rmse_mean"] for r in b]


def test_compare_restarts_a_run_it_cannot_continue_exactly(esol_root, config_file, tmp_path):
    """A checkpoint without the random state (written before it was kept) would continue with
    other dropout masks: such a run is trained anew, not continued."""
    from kangnn.train.rundir import resumable_epochs

    partial = tmp_path / "p"
    assert resumable_epochs(partial) is None  # nothing there
    (partial / "checkpoints").mkdir(parents=True)
    torch.save({"epoch": 4, "callbacks": {"EpochTimer": {}}}, partial / "checkpoints" / "last.ckpt")
    assert resumable_epochs(partial) is None
    torch.save(
        {"epoch": 4, "callbacks": {"RandomState": {}}}, partial / "checkpoints" / "last.ckpt"
    )
    assert resumable_epochs(partial) == 5
    (partial / "checkpoints" / "last.ckpt").write_bytes(b"cut short")
    assert resumable_epochs(partial) is None


def test_compare_summary_describes_each_tuned_model(esol_root, config_file, tmp_path):
    """A tuned pair with its own architecture per model: the summary describes each model from
    its own config, with the parameters each run really had."""
    from kangnn.config import load_config
    from kangnn.train.compare import compare

    overrides = [f"dataset.root={esol_root}", f"output_dir={tmp_path}", *TINY, "train.epochs=1"]
    cfg = load_config(config_file, [*overrides, "compare.isolate=false"])
    cfg.compare.model_overrides = {"mlp": ["model.num_layers=1", "train.lr=0.002"]}
    result = compare(cfg, seeds=1, out_dir=tmp_path / "cmp")
    md = (result.out_dir / "summary.md").read_text()
    kan, mlp = result.rows[0], result.rows[1]
    assert "- KAN: 2 x gine layers, 16 channels" in md and f"{kan['params']:,} parameters" in md
    assert "- MLP: 1 x gine layers, 16 channels" in md and f"{mlp['params']:,} parameters" in md
    assert "lr 0.002" in md and "lr 0.001," in md
    assert kan["function_width"] == 16 and kan["params"] > mlp["params"]


def test_compare_update_reruns_the_changed_row_only(esol_root, config_file, tmp_path, capsys):
    """--update on a finished comparison whose MLP overrides changed (a re-tuned twin) retrains
    the MLP's runs, keeps the KAN's as they were (same files, not retrained), and ends at the
    numbers a fresh comparison of the new config gets."""
    from kangnn.config import load_config
    from kangnn.train.compare import compare
    from kangnn.train.rundir import RunDirError

    overrides = [f"dataset.root={esol_root}", f"output_dir={tmp_path}", *TINY, "train.epochs=1"]
    cfg = load_config(config_file, [*overrides, "compare.isolate=false"])
    cfg.compare.model_overrides = {"mlp": ["train.lr=0.002"]}
    out = tmp_path / "cmp"
    compare(cfg, seeds=1, out_dir=out)
    kan_file = out / "runs" / "kan-s0" / "metrics.json"
    kan_inode, kan_text = kan_file.stat().st_ino, kan_file.read_text()

    cfg.compare.model_overrides = {"mlp": ["train.lr=0.005"]}
    with pytest.raises(RunDirError, match="--update"):
        compare(cfg, seeds=1, out_dir=out)
    with pytest.raises(RunDirError, match="seeds"):
        compare(cfg, seeds=2, out_dir=out, update=True)
    updated = compare(cfg, seeds=1, out_dir=out, update=True)
    assert kan_file.stat().st_ino == kan_inode and kan_file.read_text() == kan_text
    assert load_config(out / "runs" / "mlp-s0" / "config.yaml").train.lr == 0.005
    fresh = compare(cfg, seeds=1, out_dir=tmp_path / "fresh")
    for a, b in zip(updated.rows, fresh.rows, strict=True):
        assert (a["model"], a["test_rmse_mean"]) == (b["model"], b["test_rmse_mean"])
    assert json.loads((out / "compare.json").read_text())["config"]["compare"][
        "model_overrides"
    ] == {"mlp": ["train.lr=0.005"]}
    cfg.quick = ["train.epochs=2"]  # the preset, applied at load time, is not a change
    with pytest.raises(RunDirError, match="nothing to update"):
        compare(cfg, seeds=1, out_dir=out, update=True)
    code, _, err = run_cli(
        [
            "compare",
            str(config_file),
            *overrides,
            "compare.model_overrides={mlp: [train.lr=0.005]}",
            *("--seeds", "1", "--out", str(out), "--update"),
        ],
        capsys,
    )
    assert code != 0 and "Traceback" not in err
    assert "nothing to update" in err.strip().splitlines()[-1]


def test_bench_model_forwards_its_arguments(esol_root, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code, stdout, err = run_cli(
        [
            "bench",
            "model",
            "--conv",
            "gin",
            "--hidden",
            "8",
            "--layers",
            "1",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--batches",
            "1",
            "--threads",
            "1",
            "--root",
            esol_root,
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    payload = json.loads(out.read_text())
    assert {r["model"] for r in payload["rows"]} == {"kan", "mlp"}
    code, _, err = run_cli(["bench", "nothing"], capsys)
    assert code == 2 and "bench needs a KIND" in err
