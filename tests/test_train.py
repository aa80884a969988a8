"""Training: metrics, config, determinism, resume, comparison statistics, DDP."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from kangnn.config import ConfigError, apply_overrides, default_config, load_config
from kangnn.train.compare import wilcoxon_test
from kangnn.train.metrics import MaskedAUROC, MaskedRegressionMetrics, masked_loss
from kangnn.train.run import train
from kangnn.train.rundir import CheckpointError, read_metrics_csv

NAN = float("nan")
ESOL_ROWS = 160  # a small slice of ESOL keeps each training run to a few seconds

TINY = [
    "model.hidden_channels=16",
    "model.num_layers=2",
    "model.grid_size=3",
    "train.epochs=2",
    "train.batch_size=32",
    "train.threads=1",
    "train.progress_bar=false",
    "train.patience=0",
]


@pytest.fixture(scope="module")
def esol_root(tmp_path_factory, copy_moleculenet) -> Path:
    root = copy_moleculenet(tmp_path_factory.mktemp("data"), "esol")
    raw = root / "esol" / "raw" / "delaney-processed.csv"
    lines = raw.read_text().splitlines(keepends=True)
    raw.write_text("".join(lines[: ESOL_ROWS + 1]))
    return root


def tiny_config(root: Path, out: Path, *extra: str):
    return load_config(
        None,
        [
            "dataset.name=esol",
            f"dataset.root={root}",
            f"output_dir={out}",
            "dataset.split=random",
            *TINY,
            *extra,
        ],
    )


# ----------------------------------------------------------------------------- metrics


def test_regression_metrics_mask_missing_labels():
    m = MaskedRegressionMetrics(num_tasks=2)
    preds = torch.tensor([[1.0, 0.0], [2.0, 5.0], [3.0, 1.0]])
    target = torch.tensor([[1.0, NAN], [4.0, 5.0], [NAN, 3.0]])
    m.update(preds[:2], target[:2])
    m.update(preds[2:], target[2:])
    out = m.compute()
    rmse0 = math.sqrt((0 + 4) / 2)  # task 0: errors 0, -2
    rmse1 = math.sqrt((0 + 4) / 2)  # task 1: errors 0, -2
    assert float(out["rmse"]) == pytest.approx((rmse0 + rmse1) / 2)
    assert float(out["mae"]) == pytest.approx((1.0 + 1.0) / 2)


def test_auroc_skips_single_class_and_all_missing_tasks():
    torch.manual_seed(0)
    preds = torch.randn(8, 3)
    target = torch.tensor(
        [
            [0, 1, NAN],
            [1, 1, NAN],
            [0, 1, NAN],
            [1, NAN, NAN],
            [1, 1, NAN],
            [0, 1, NAN],
            [NAN, 1, NAN],
            [1, 1, NAN],
        ]
    )
    m = MaskedAUROC(num_tasks=3)
    m.update(preds[:5], target[:5])
    m.update(preds[5:], target[5:])
    out = m.compute()
    mask = ~torch.isnan(target[:, 0])
    expected = float(binary_auroc(preds[mask, 0], target[mask, 0].long()))
    # Task 1 has one class only, task 2 no label at all: both skipped (OGB's rule).
    assert int(out["auc_tasks"]) == 1
    assert float(out["roc_auc"]) == pytest.approx(expected)


def test_auroc_is_nan_when_no_task_has_both_classes():
    m = MaskedAUROC(num_tasks=1)
    m.update(torch.randn(4, 1), torch.ones(4, 1))
    assert math.isnan(float(m.compute()["roc_auc"]))


def test_masked_loss_ignores_missing_labels():
    pred = torch.tensor([[1.0, 100.0], [2.0, 0.0]], requires_grad=True)
    target = torch.tensor([[0.0, NAN], [2.0, NAN]])
    loss = masked_loss(pred, target, "regression")
    assert float(loss.detach()) == pytest.approx(0.5)
    loss.backward()
    assert pred.grad[:, 1].abs().sum() == 0
    all_missing = masked_loss(pred, torch.full((2, 2), NAN), "classification")
    assert float(all_missing.detach()) == 0.0


def test_wilcoxon_needs_two_non_tied_pairs():
    out = wilcoxon_test([1.0, 2.0], [1.0, 2.0])
    assert out["p"] is None and "n/a" in out["note"]
    out = wilcoxon_test([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert out["p"] == pytest.approx(0.03125)  # all six differences negative: exact minimum
    assert out["min_p"] == pytest.approx(2 / 2**6)


# ----------------------------------------------------------------------------- config


def test_config_unknown_key_and_wrong_type_name_the_key(tmp_path):
    cfg = default_config()
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.epoch'"):
        apply_overrides(cfg, ["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"'train\.epochs'") as err:
        apply_overrides(cfg, ["train.epochs=many"])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"'model\.function'"):
        load_config(None, ["dataset.name=esol", "model.function=transformer"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(cfg, ["seed"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset:\n  name: esol\n  colour: red\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'dataset\.colour'"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_experiment_configs_load_and_quick_preset_applies():
    for path in sorted(Path("experiments").glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.dataset.name == path.stem and cfg.model.function == "kan"
        quick = load_config(path, ["seed=3"], quick=True)
        assert quick.seed == 3 and quick.train.epochs <= cfg.train.epochs
    names = {p.stem for p in Path("experiments").glob("*.yaml")}
    assert names >= {"esol", "freesolv", "lipo", "bace", "bbbp", "clintox", "hiv"}


# ----------------------------------------------------------------------------- training


def test_same_seed_gives_identical_metrics(esol_root, tmp_path):
    a = train(tiny_config(esol_root, tmp_path / "a", "seed=5"))
    b = train(tiny_config(esol_root, tmp_path / "b", "seed=5"))
    assert a.metrics["val"] == b.metrics["val"]
    assert a.metrics["test"] == b.metrics["test"]
    assert json.loads((a.run_dir / "splits.json").read_text()) == json.loads(
        (b.run_dir / "splits.json").read_text()
    )
    pa = (a.run_dir / "predictions.csv").read_text()
    assert pa == (b.run_dir / "predictions.csv").read_text()


def test_random_split_follows_the_seed_unless_fixed(esol_root, tmp_path):
    from kangnn.train.data import prepare_data

    s0 = prepare_data(tiny_config(esol_root, tmp_path, "seed=0")).split
    s1 = prepare_data(tiny_config(esol_root, tmp_path, "seed=1")).split
    fixed = prepare_data(tiny_config(esol_root, tmp_path, "seed=1", "dataset.split_seed=0")).split
    assert s0 != s1 and fixed == s0


def test_resume_from_last_checkpoint(esol_root, tmp_path):
    first = train(tiny_config(esol_root, tmp_path, "train.epochs=1", "model.function=mlp"))
    assert first.metrics["epochs_run"] == 1
    resumed = train(None, resume=first.run_dir, overrides=["train.epochs=3"])
    assert resumed.run_dir == first.run_dir  # updated in place
    assert resumed.metrics["epochs_run"] == 3
    assert len(resumed.metrics["epoch_times_s"]) == 3  # times kept across the resume
    epochs = sorted(
        {
            int(r["epoch"])
            for r in read_metrics_csv(first.run_dir / "logs" / "metrics.csv")
            if r.get("val/rmse")
        }
    )
    assert epochs == [0, 1, 2]
    assert not (tmp_path / ".partial").exists()
    # A model change on resume is a checkpoint of a different model: refused, run untouched.
    before = (first.run_dir / "metrics.json").read_text()
    with pytest.raises(CheckpointError, match="different model"):
        train(None, resume=first.run_dir, overrides=["train.epochs=4", "model.hidden_channels=8"])
    assert (first.run_dir / "metrics.json").read_text() == before
    assert not (tmp_path / ".partial").exists()


def test_train_resume_true_finds_the_latest_run(esol_root, tmp_path):
    first = train(tiny_config(esol_root, tmp_path, "train.epochs=1"))
    again = train(tiny_config(esol_root, tmp_path, "train.epochs=2", "train.resume=true"))
    assert again.run_dir == first.run_dir and again.metrics["epochs_run"] == 2


def test_classification_with_missing_labels_and_a_single_class_task(tmp_path):
    from kangnn.data import smiles_to_graph  # noqa: F401  (featurisation is exercised below)

    smiles = [
        "CCO",
        "CCN",
        "CCC",
        "c1ccccc1",
        "CC(=O)O",
        "CCCl",
        "CCBr",
        "C1CCCCC1",
        "CC(C)O",
        "OCCO",
        "CCOC",
        "NCCN",
        "c1ccncc1",
        "CC#N",
        "C=CC",
        "CCS",
    ] * 3
    path = tmp_path / "toy.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["smiles", "active", "toxic", "rare"])
        for i, s in enumerate(smiles):
            rare = "" if i % 2 else "1"  # one class only, half missing
            w.writerow([s, i % 2, "" if i % 3 == 0 else (i // 2) % 2, rare])
    cfg = load_config(
        None,
        [
            f"dataset.path={path}",
            "dataset.target_columns=[active,toxic,rare]",
            "dataset.task=classification",
            "dataset.split=random",
            f"output_dir={tmp_path / 'runs'}",
            *TINY,
        ],
    )
    result = train(cfg)
    m = result.metrics
    assert m["metric"] == "roc_auc" and m["task"] == "classification"
    assert m["val"]["auc_tasks"] <= 2  # the single-class task never counts
    header = next(csv.reader(open(result.run_dir / "predictions.csv")))
    assert header[-3:] == ["active_pred", "toxic_pred", "rare_pred"]
    probs = [
        float(v)
        for row in csv.DictReader(open(result.run_dir / "predictions.csv"))
        for k, v in row.items()
        if k.endswith("_pred")
    ]
    assert all(0.0 <= p <= 1.0 for p in probs)


@pytest.mark.slow
def test_ddp_two_cpu_processes(esol_root, tmp_path):
    """DDP through Lightning's devices/strategy: 2 CPU processes (gloo), one tiny epoch."""
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text("dataset:\n  name: esol\n  split: random\n")
    cmd = [
        sys.executable,
        "-m",
        "kangnn.cli",
        "train",
        str(cfg_path),
        f"dataset.root={esol_root}",
        f"output_dir={tmp_path / 'runs'}",
        *TINY,
        "train.epochs=1",
        "train.devices=2",
        "train.strategy=ddp",
        "train.accelerator=cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = Path(proc.stdout.strip().splitlines()[-1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_devices"] == 2 and metrics["epochs_run"] == 1
    assert math.isfinite(metrics["test"]["rmse"])
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [run_dir.name]
