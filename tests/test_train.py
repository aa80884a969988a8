"""Training: metrics, config, determinism, resume, comparison statistics, DDP."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from tiny import TINY_TRAIN as TINY
from tiny import StopAt, tiny_config
from torchmetrics.functional.classification import binary_auroc

from kangnn.config import ConfigError, apply_overrides, default_config, load_config
from kangnn.train.compare import wilcoxon_test
from kangnn.train.metrics import MaskedAUROC, MaskedRegressionMetrics, masked_loss
from kangnn.train.run import train
from kangnn.train.rundir import CheckpointError, read_metrics_csv

NAN = float("nan")
ESOL_ROWS = 160  # a small slice of ESOL keeps each training run to a few seconds


@pytest.fixture(scope="module")
def esol_root(esol_subset) -> Path:
    return esol_subset(ESOL_ROWS)


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
        # <dataset>.yaml, or <dataset>-<variant>.yaml (e.g. hiv-dmpnn.yaml)
        assert path.stem.split("-")[0] == cfg.dataset.name and cfg.model.function == "kan"
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


@pytest.mark.parametrize("function", ["kan", "mlp"])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(esol_root, tmp_path, function):
    """Dropout, batch order, schedule, early-stopping state and the best checkpoint all continue
    where they stopped: a run killed after epoch 1, resumed, killed again after epoch 2 and
    resumed ends bit-identical to one run through, with each epoch logged once."""
    extra = [
        f"model.function={function}",
        "train.epochs=4",
        "model.dropout=0.3",
        "train.patience=3",
        "train.scheduler=cosine",
        "train.warmup_epochs=1",
    ]
    whole = train(tiny_config(esol_root, tmp_path / "whole", *extra))
    cfg = tiny_config(esol_root, tmp_path / "cut", *extra)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train(cfg, run_dir=tmp_path / "cut" / "run", callbacks=[StopAt(2)])
    partial = tmp_path / "cut" / ".partial" / "run"
    assert (partial / "checkpoints" / "last.ckpt").is_file()
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train(None, resume=partial, callbacks=[StopAt(3)])  # a second session's end
    resumed = train(None, resume=partial)
    assert resumed.run_dir == tmp_path / "cut" / "run"
    logged = read_metrics_csv(resumed.run_dir / "logs" / "metrics.csv")
    # continued after epoch 1 (last.ckpt is written every epoch), nothing replayed
    assert [int(r["epoch"]) for r in logged if r.get("val/rmse")] == [0, 1, 2, 3]
    for key in ("val", "test", "best_epoch", "epochs_run"):
        assert resumed.metrics[key] == whole.metrics[key], key
    for ckpt in ("best.ckpt", "last.ckpt"):  # last: the weights after epochs 2-3 too
        a = torch.load(whole.run_dir / "checkpoints" / ckpt, weights_only=False)["state_dict"]
        b = torch.load(resumed.run_dir / "checkpoints" / ckpt, weights_only=False)["state_dict"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), ckpt
    assert (resumed.run_dir / "predictions.csv").read_text() == (
        whole.run_dir / "predictions.csv"
    ).read_text()


def test_weight_average_is_what_is_validated_checkpointed_and_tested(esol_root, tmp_path):
    from kangnn.train.data import MoleculeDataModule, prepare_data
    from kangnn.train.run import evaluate, load_run

    cfg = tiny_config(esol_root, tmp_path, "train.epochs=3", "train.ema_decay=0.7")
    run = train(cfg)
    ckpt = torch.load(run.run_dir / "checkpoints" / "best.ckpt", weights_only=False)
    averaged, current = ckpt["state_dict"], ckpt["current_model_state"]
    assert any(not torch.equal(averaged[k], current[k]) for k in averaged)
    # the weights loaded from the run are the average, and they give the logged best val RMSE
    _, module, metrics = load_run(run.run_dir)
    assert all(torch.equal(v, averaged[k]) for k, v in module.state_dict().items())
    val, _ = evaluate(module, MoleculeDataModule(prepare_data(cfg), 32).val_dataloader())
    logged = [
        float(r["val/rmse"])
        for r in read_metrics_csv(run.run_dir / "logs" / "metrics.csv")
        if r.get("val/rmse")
    ]
    assert val["rmse"] == pytest.approx(min(logged), rel=1e-5)
    assert metrics["val"]["rmse"] == pytest.approx(min(logged), rel=1e-5)
    plain = train(tiny_config(esol_root, tmp_path / "plain", "train.epochs=3"))
    assert plain.metrics["test"]["rmse"] != pytest.approx(metrics["test"]["rmse"], rel=1e-4)


def test_weight_average_and_grid_refresh_are_refused_together():
    with pytest.raises(ConfigError, match="'train.ema_decay'.*grid_refresh_every") as err:
        load_config(
            None, ["dataset.name=esol", "train.ema_decay=0.99", "model.grid_refresh_every=5"]
        )
    assert "\n" not in str(err.value)


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


# ----------------------------------------------------------------------------- protocol


def test_auroc_is_computed_in_float64_for_logits_that_saturate_float32():
    logits = torch.tensor([[18.0], [19.0], [20.0], [21.0], [22.0], [23.0]])
    labels = torch.tensor([[0.0], [0.0], [1.0], [0.0], [1.0], [1.0]])
    assert bool((torch.sigmoid(logits) == 1.0).all())  # float32: six ties
    m = MaskedAUROC(num_tasks=1)
    m.update(logits[:3], labels[:3])
    m.update(logits[3:], labels[3:])
    # Positives at ranks 3, 5, 6 of 6: (3 + 5 + 6 - 6) / (3 * 3) = 8 / 9.
    assert float(m.compute()["roc_auc"]) == pytest.approx(8 / 9, abs=1e-12)


def _kinds_model() -> torch.nn.Module:
    from kangnn.kan import KANLinear

    return torch.nn.Sequential(
        torch.nn.Embedding(5, 3),
        KANLinear(3, 4),
        torch.nn.BatchNorm1d(4),
        torch.nn.Linear(4, 2),
        torch.nn.LayerNorm(2),
    )


def test_param_groups_by_kind_weight_decay_and_spline_lr():
    from kangnn.train.optim import param_groups

    model = _kinds_model()
    groups = param_groups(model, 1e-3, 0.1, ["bias", "norm", "embedding"], spline_lr_scale=3.0)
    by_name = {g["name"]: g for g in groups}
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(by_name["decay"]["params"]) == ids([model[1].base_weight, model[3].weight])
    assert ids(by_name["spline"]["params"]) == ids([model[1].spline_weight])
    no_decay = [model[0].weight, model[2].weight, model[2].bias, model[3].bias]
    assert ids(by_name["no_decay"]["params"]) == ids([*no_decay, model[4].weight, model[4].bias])
    assert (
        by_name["spline"]["lr"] == pytest.approx(3e-3) and by_name["spline"]["weight_decay"] == 0.1
    )
    assert by_name["no_decay"]["weight_decay"] == 0.0 and by_name["decay"]["lr"] == 1e-3
    # Every trainable parameter in exactly one group.
    flat = [id(p) for g in groups for p in g["params"]]
    assert sorted(flat) == sorted(id(p) for p in model.parameters())
    spline_too = param_groups(model, 1e-3, 0.1, ["spline"], spline_lr_scale=2.0)
    assert {g["name"] for g in spline_too} == {"decay", "spline_no_decay"}
    with pytest.raises(ValueError, match="unknown parameter kind"):
        param_groups(model, 1e-3, 0.1, ["weights"])


def test_lr_schedule_warmup_then_cosine_or_exponential_per_step():
    from kangnn.train.optim import make_optimizer, make_scheduler

    def lrs(kind: str, total: int = 20, warmup: int = 4) -> list[tuple[float, float]]:
        opt = make_optimizer(
            _kinds_model(), "adamw", lr=1e-2, weight_decay=0.01, spline_lr_scale=2.0
        )
        sched = make_scheduler(opt, kind, total, warmup, final_ratio=0.1)
        out = []
        for _ in range(total + 2):
            groups = {g["name"]: g["lr"] for g in opt.param_groups}
            out.append((groups["decay"], groups["spline"]))
            opt.step()
            sched.step()
        return out

    cos = lrs("cosine")
    assert cos[0][0] == pytest.approx(1e-3)  # warm-up starts at min_lr_ratio * lr
    assert cos[2][0] == pytest.approx(1e-3 + 0.5 * 9e-3)  # linear
    assert cos[4][0] == pytest.approx(1e-2)  # peak after the warm-up
    assert cos[12][0] == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5))  # half-way down the cosine
    assert cos[20][0] == pytest.approx(1e-3) and cos[21][0] == pytest.approx(1e-3)  # floor
    assert all(s == pytest.approx(2 * b) for b, s in cos)  # the spline group keeps its ratio
    exp = lrs("exponential")
    assert exp[12][0] == pytest.approx(1e-2 * 0.1**0.5) and exp[20][0] == pytest.approx(1e-3)
    const = lrs("none")
    assert const[4][0] == const[20][0] == pytest.approx(1e-2)
    opt = make_optimizer(_kinds_model(), "adam", lr=1e-2)
    assert make_scheduler(opt, "none", 20, 0) is None and isinstance(opt, torch.optim.Adam)


# Each bad value a model would reject (or that makes no sense) is a one-line ConfigError naming
# its key, before any data is loaded.
BAD_VALUES = [
    ("model.spline_order=0", "model.spline_order"),
    ("model.spline_order=-1", "model.spline_order"),
    ("model.grid_size=0", "model.grid_size"),
    ("model.hidden_channels=-4", "model.hidden_channels"),
    ("model.num_layers=0", "model.num_layers"),
    ("model.function_layers=0", "model.function_layers"),
    ("model.function_hidden_channels=0", "model.function_hidden_channels"),
    ("model.mlp_hidden_channels=-3", "model.mlp_hidden_channels"),
    ("model.dropout=1.0", "model.dropout"),
    ("model.basis=wavelet", "model.basis"),
    ("model.match_tolerance=0", "model.match_tolerance"),
    ("train.optimizer=sgd", "train.optimizer"),
    ("train.scheduler=plateau", "train.scheduler"),
    ("train.warmup_epochs=-1", "train.warmup_epochs"),
    ("train.min_lr_ratio=0", "train.min_lr_ratio"),
    ("train.min_lr_ratio=1.5", "train.min_lr_ratio"),
    ("train.ema_decay=1.0", "train.ema_decay"),
    ("train.ema_decay=0", "train.ema_decay"),
    ("train.spline_lr_scale=0", "train.spline_lr_scale"),
    ("train.decay_exclude=[bias,gain]", "train.decay_exclude[1]"),
    ("train.grad_clip=-1", "train.grad_clip"),
    ("train.grad_clip_algorithm=max", "train.grad_clip_algorithm"),
    ("train.batch_size=0", "train.batch_size"),
    ("tune.trials=0", "tune.trials"),
    ("tune.pruner=hyperband", "tune.pruner"),
    ("tune.sampler=grid", "tune.sampler"),
]


@pytest.mark.parametrize(("override", "key"), BAD_VALUES)
def test_bad_config_value_is_a_one_line_error_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["dataset.name=esol", override])
    assert f"'{key}'" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("basis", ["bspline", "rbf", "chebyshev", "fourier"])
def test_smallest_accepted_model_values_build_a_model(basis):
    """The bounds of the checks above are the models' own: the smallest accepted values build
    and run a model (so the config does not reject what the model takes, nor the reverse)."""
    from torch_geometric.data import Batch

    from kangnn.data import feature_dims, smiles_to_graph
    from kangnn.models import MoleculeGNN, model_kwargs

    cfg = load_config(
        None,
        [
            "dataset.name=esol",
            f"model.basis={basis}",
            "model.grid_size=1",
            "model.spline_order=1",
            "model.hidden_channels=1",
            "model.num_layers=1",
            "model.function_layers=1",
            "model.norm=none",
        ],
    )
    atom, bond = feature_dims(cfg.dataset.features)
    model = MoleculeGNN(atom, bond, 1, **model_kwargs(cfg.model))
    batch = Batch.from_data_list([smiles_to_graph("CCO"), smiles_to_graph("c1ccccc1")])
    assert model(batch).shape == (2, 1)


def test_model_overrides_apply_to_their_model_only_and_bad_ones_fail():
    from kangnn.config import for_model

    cfg = load_config(
        None,
        [
            "dataset.name=esol",
            "train.lr=0.001",
            "compare.model_overrides={kan: [train.lr=0.002, model.grid_size=7], "
            "mlp: [train.lr=0.005]}",
        ],
    )
    kan, mlp = for_model(cfg, "kan"), for_model(cfg, "mlp")
    assert (kan.train.lr, kan.model.grid_size, kan.model.function) == (0.002, 7, "kan")
    assert (mlp.train.lr, mlp.model.grid_size, mlp.model.function) == (0.005, 5, "mlp")
    assert for_model(kan) == kan  # idempotent: a run's saved config re-applies it unchanged
    for bad, match in (
        ("{gcn: [train.lr=0.1]}", "unknown model 'gcn'"),
        ("{mlp: [train.rate=0.1]}", "known config key"),
        ("{mlp: [train.lr]}", "key=value"),
        ("{mlp: [dataset.split=random]}", "cannot be set per model"),
        ("{mlp: [model.function=kan]}", "cannot be set per model"),
        ("{kan: [seed=3]}", "cannot be set per model"),
    ):
        with pytest.raises(ConfigError, match=match):
            load_config(None, ["dataset.name=esol", f"compare.model_overrides={bad}"])


def test_environment_records_the_fused_switch_and_environment_variables(monkeypatch):
    from types import SimpleNamespace

    from kangnn.kan import fused
    from kangnn.train.environment import collect_environment

    cfg = load_config(None, ["dataset.name=esol", "seed=4", "train.threads=1"])
    data = SimpleNamespace(  # a PreparedData stand-in: its split, split seed and size
        split={"train": [0, 1], "val": [2], "test": [3]}, split_seed=4, dataset=[None] * 4
    )
    monkeypatch.setenv("KANGNN_FUSED", "0")
    saved = fused._state["enabled"]
    fused.set_fused(False)
    try:
        env = collect_environment(cfg, data)
    finally:
        fused.set_fused(saved)
    assert env["kernels"]["fused_bspline"] is False
    assert env["env"]["KANGNN_FUSED"] == "0"
    assert env["seed"] == 4 and env["split"]["sizes"] == {"train": 2, "val": 1, "test": 1}
    assert {"torch", "torch_geometric", "rdkit", "lightning", "kangnn", "chemprop"} <= set(
        env["versions"]
    )
    assert env["kernels"]["scatter_backend"] in ("torch", "torch_scatter")


# ----------------------------------------------------------------------------- fair pairing


class _Recorder(L.Callback):
    """Records the molecules of every training batch, the learning rate before every step and
    the gradient clipping the trainer was given."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[str]]] = []
        self.lrs: list[float] = []
        self.clip: tuple[Any, Any] | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self.clip = (trainer.gradient_clip_val, trainer.gradient_clip_algorithm)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append((trainer.current_epoch, list(batch.smiles)))
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def epoch(self, e: int) -> list[list[str]]:
        return [b for ep, b in self.batches if ep == e]


PAIRED = [
    "dataset.split_seed=0",  # one split for every seed: only the batch order may follow it
    "train.warmup_epochs=1",
    "train.scheduler=cosine",
    "train.min_lr_ratio=0.1",
    "train.lr=0.002",
    "train.grad_clip=0.5",
    "train.grad_clip_algorithm=value",
]


@pytest.fixture(scope="module")
def paired_runs(esol_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("paired")
    runs = {}
    for function in ("kan", "mlp"):
        rec = _Recorder()
        cfg = tiny_config(esol_root, out, f"model.function={function}", "seed=0", *PAIRED)
        runs[function] = (train(cfg, callbacks=[rec]), rec)
    return runs


def test_kan_and_mlp_of_one_seed_see_the_same_batches(paired_runs, esol_root, tmp_path):
    from kangnn.train.data import MoleculeDataModule, prepare_data

    kan_rec, mlp_rec = paired_runs["kan"][1], paired_runs["mlp"][1]
    assert kan_rec.batches == mlp_rec.batches and len(kan_rec.epoch(1)) > 1
    assert kan_rec.epoch(0) != kan_rec.epoch(1)  # reshuffled every epoch
    data = prepare_data(tiny_config(esol_root, tmp_path, *PAIRED))
    order = lambda seed: [  # noqa: E731
        list(b.smiles) for b in MoleculeDataModule(data, 32, seed=seed).train_dataloader()
    ]
    assert order(0) == kan_rec.epoch(0)  # the loader's own seeded generator decides
    assert order(1) != order(0)  # another seed, another order


def test_schedule_and_clipping_reach_the_trainer(paired_runs):
    from kangnn.train.optim import lr_factor

    kan, rec = paired_runs["kan"]
    assert rec.clip == (0.5, "value")
    steps = len(rec.lrs)  # 128 training molecules, batches of 32: 4 steps per epoch, 2 epochs
    expected = [0.002 * lr_factor(i, "cosine", steps, steps // 2, 0.1) for i in range(steps)]
    assert rec.lrs == pytest.approx(expected)
    logged = [
        float(r["train/lr"])
        for r in read_metrics_csv(kan.run_dir / "logs" / "metrics.csv")
        if r.get("train/lr")
    ]
    assert logged == pytest.approx([0.002, 0.0002])  # end of warm-up, end of the cosine


def test_resumed_run_continues_batch_order_and_schedule(paired_runs, esol_root, tmp_path):
    kan, rec = paired_runs["kan"]
    first = train(tiny_config(esol_root, tmp_path, "seed=0", "train.epochs=1", *PAIRED))
    resumed_rec = _Recorder()
    resumed = train(
        None, resume=first.run_dir, overrides=["train.epochs=2"], callbacks=[resumed_rec]
    )
    assert resumed_rec.epoch(1) == rec.epoch(1)
    assert resumed_rec.lrs == pytest.approx(rec.lrs[len(rec.epoch(0)) :])
    assert resumed.metrics["val"] == kan.metrics["val"]
    assert resumed.metrics["test"] == kan.metrics["test"]


# ----------------------------------------------------------------------------- reproducibility

COMMITTED_RUN = Path("experiments/previous-release/esol/runs/kan-s0")


def test_committed_run_config_retrains_identically_and_records_its_environment(esol_root, tmp_path):
    """A committed run's config (its architecture; one epoch on a slice of ESOL) trained, then
    trained again from the config.yaml that run wrote: same metrics, predictions and split, and
    the run directory records every switch that changes the numbers."""
    cfg = load_config(
        COMMITTED_RUN / "config.yaml",
        [f"dataset.root={esol_root}", f"output_dir={tmp_path / 'a'}", "train.epochs=1"],
    )
    a = train(cfg)
    again = load_config(a.run_dir / "config.yaml", [f"output_dir={tmp_path / 'b'}"])
    b = train(again)
    assert a.metrics["val"] == b.metrics["val"] and a.metrics["test"] == b.metrics["test"]
    for name in ("splits.json", "predictions.csv", "scaler.json"):
        assert (a.run_dir / name).read_text() == (b.run_dir / name).read_text()
    env_a = json.loads((a.run_dir / "environment.json").read_text())
    env_b = json.loads((b.run_dir / "environment.json").read_text())
    for key in ("versions", "git", "kernels", "threads", "deterministic", "seed", "split", "data"):
        assert env_a[key] == env_b[key], key
    versions = env_a["versions"]
    for pkg in ("torch", "torch_geometric", "rdkit", "lightning", "kangnn"):
        assert versions[pkg], pkg
    assert "chemprop" in versions
    assert set(env_a["kernels"]) >= {"fused_bspline", "scatter_backend", "cpu_capability"}
    assert env_a["threads"]["intra_op"] == 1 and env_a["deterministic"]["config"] is True
    assert env_a["seed"] == 0 and env_a["split"]["method"] == "scaffold"
    assert env_a["data"]["sha256"] and env_a["data"]["molecules"] == ESOL_ROWS


# ----------------------------------------------------------------------------- precision, compile


def test_one_epoch_bf16_mixed_on_cpu(esol_root, tmp_path):
    result = train(tiny_config(esol_root, tmp_path, "train.epochs=1", "train.precision=bf16-mixed"))
    for part in ("val", "test"):
        assert math.isfinite(result.metrics[part]["rmse"])
    from omegaconf import OmegaConf

    saved = OmegaConf.load(result.run_dir / "config.yaml")
    assert saved.train.precision == "bf16-mixed"


def test_compiled_training_matches_eager(esol_root, tmp_path):
    """model.compile=true trains the same model (one epoch, same seed and batches) to the same
    metrics up to float rounding, and its checkpoint is the plain model's."""
    small = ("train.epochs=1", "model.conv=gin", "model.num_layers=1", "model.hidden_channels=8")
    eager = train(tiny_config(esol_root, tmp_path / "e", *small))
    compiled = train(tiny_config(esol_root, tmp_path / "c", *small, "model.compile=true"))
    # Float rounding differs between the generated kernels and eager ones, and Adam's first
    # steps (about sign(g) * lr) magnify it for near-zero gradients: a few 1e-3 after an epoch.
    assert compiled.metrics["val"]["rmse"] == pytest.approx(eager.metrics["val"]["rmse"], rel=2e-2)
    assert compiled.metrics["params"] == eager.metrics["params"]
    ckpt = torch.load(compiled.run_dir / "checkpoints" / "best.ckpt", weights_only=False)
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])


def test_bad_precision_is_a_one_line_error():
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(None, ["dataset.name=esol", "train.precision=fp8"])


def test_comparison_written_before_a_config_key_existed_is_the_same_comparison(tmp_path):
    """A compare.json from before a key was added (FreeSolv's lacked dataset.descriptors) must
    still match a config holding that key at its default, so rows can be added to it; a key
    the schema no longer has, or another value, is another config."""
    from omegaconf import OmegaConf

    from kangnn.config import default_config
    from kangnn.train.compare import COMPARE_FILE, _open_staging
    from kangnn.train.rundir import RunDirError

    config = OmegaConf.to_container(default_config(), resolve=True)
    new = {"config": config, "seeds": [0], "with": []}
    older = json.loads(json.dumps(new))
    del older["config"]["dataset"]["descriptors"]
    staging = tmp_path / "cmp"
    staging.mkdir()
    (staging / COMPARE_FILE).write_text(json.dumps(older))
    assert _open_staging(staging, new)
    others = {}
    for key, value in (("descriptors", "rdkit2d"), ("gone", 1)):
        others[key] = json.loads(json.dumps(new))
        others[key]["config"]["dataset"][key] = value
        with pytest.raises(RunDirError, match="another config"):
            _open_staging(staging, others[key])
    (staging / COMPARE_FILE).write_text(json.dumps(others["gone"]))
    with pytest.raises(RunDirError, match="another config"):
        _open_staging(staging, new)


def test_unfinished_comparison_resumes_when_only_chemprops_tuned_values_changed(tmp_path):
    """chemprop's tuning runs beside the KAN/MLP comparison (experiments/verdict.sh): new tuned
    values must not block resuming it, unless it has a chemprop-tuned row they would change."""
    from kangnn.train.compare import COMPARE_FILE, _open_staging
    from kangnn.train.rundir import RunDirError

    def identity(tuned, with_=()):
        overrides = {"kan": ["model.grid_size=8"], "chemprop": tuned}
        config = {"compare": {"model_overrides": overrides}}
        return {"config": config, "seeds": [0], "with": [*with_]}

    staging = tmp_path / "cmp"
    assert not _open_staging(staging, identity(["chemprop.depth=3"]))
    staging.mkdir()
    (staging / COMPARE_FILE).write_text(json.dumps(identity(["chemprop.depth=3"])))
    assert _open_staging(staging, identity(["chemprop.depth=5"]))
    for other in (identity(["chemprop.depth=5"], ["chemprop"]), {**identity([]), "seeds": [0, 1]}):
        with pytest.raises(RunDirError, match="another config"):
            _open_staging(staging, other)
    tuned = identity(["chemprop.depth=3"], ["chemprop", "chemprop-tuned"])
    (staging / COMPARE_FILE).write_text(json.dumps(tuned))
    assert _open_staging(staging, tuned)
    with pytest.raises(RunDirError, match="another config"):
        _open_staging(staging, identity(["chemprop.depth=5"], ["chemprop", "chemprop-tuned"]))
