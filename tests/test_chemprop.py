"""chemprop beside kangnn: `compare --with chemprop`, `tune --models chemprop`, `splits export`,
the missing-chemprop error, and `kangnn report`."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_helpers import assert_user_error, run_cli
from scipy.stats import wilcoxon
from tiny import TINY_TRAIN, StopAt

from kangnn.cli import main
from kangnn.train.rundir import RunDirError

ESOL_ROWS = 60
TINY = [
    *TINY_TRAIN,
    "compare.isolate=false",
    "chemprop.epochs=3",
    "chemprop.message_hidden_dim=16",
    "chemprop.ffn_hidden_dim=16",
]


def _needs_chemprop():
    return pytest.importorskip(
        "chemprop", reason="chemprop is not importable (kangnn[chemprop])", exc_type=ImportError
    )


@pytest.fixture(scope="module")
def esol_root(esol_subset) -> Path:
    return esol_subset(ESOL_ROWS)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    """esol.yaml with a small chemprop search space for `kangnn tune`."""
    cfg = yaml.safe_load(Path("experiments/esol.yaml").read_text())
    cfg["tune"] = {
        "trials": 2,
        "pruner": "none",
        "space": [
            {"key": "chemprop.depth", "type": "int", "low": 2, "high": 4, "models": ["chemprop"]},
            {
                "key": "chemprop.max_lr",
                "type": "float",
                "low": 1e-3,
                "high": 1e-2,
                "log": True,
                "models": ["chemprop"],
            },
        ],
    }
    path = tmp_path_factory.mktemp("cfg") / "esol.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _read_predictions(path: Path) -> tuple[list[int], list[str], np.ndarray, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    t = (len(rows[0]) - 2) // 2
    idx = [int(r[0]) for r in rows[1:]]
    smiles = [r[1] for r in rows[1:]]
    truth = np.array([[float(v) if v else np.nan for v in r[2 : 2 + t]] for r in rows[1:]])
    preds = np.array([[float(v) for v in r[2 + t :]] for r in rows[1:]])
    return idx, smiles, truth, preds


@pytest.fixture(scope="module")
def tuned_compare(esol_root, config_file, tmp_path_factory):
    """`kangnn tune --models chemprop` (2 trials), then `kangnn compare best-chemprop.yaml
    --with chemprop`, run from an empty working directory with an empty HOME."""
    _needs_chemprop()
    from kangnn.kan import native

    work = tmp_path_factory.mktemp("work")
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    # The native kernels stay where they are cached: the child runs must not build them into
    # the empty HOME (it must stay empty).
    mp.setenv("KANGNN_CACHE", str(native._cache_dir().parent))
    mp.setenv("HOME", str(work / "home"))
    from kangnn.kan import fused

    mp.setitem(fused._state, "enabled", False)  # no kernel compile: this test is about chemprop
    try:
        common = [f"dataset.root={esol_root}", "output_dir=out", "dataset.split=random", *TINY]
        code = main(["tune", str(config_file), "--models", "chemprop", "--out", "tune", *common])
        assert code == 0
        best = work / "tune" / "best-chemprop.yaml"
        code = main(["compare", str(best), "--with", "chemprop", "--seeds", "2", "--out", "cmp"])
        assert code == 0
    finally:
        mp.undo()
    return work


def test_compare_with_chemprop_end_to_end(tuned_compare):
    work = tuned_compare
    cmp = work / "cmp"
    # chemprop wrote nothing outside the run directories (no lightning_logs, no ~/.chemprop)
    assert sorted(p.name for p in work.iterdir()) == ["cmp", "tune"]
    summary = json.loads((cmp / "summary.json").read_text())
    models = [r["model"] for r in summary["rows"]]
    assert models == ["kan", "mlp", "chemprop", "chemprop-tuned"]
    with open(cmp / "summary.csv", newline="") as f:
        assert [r["model"] for r in csv.DictReader(f)] == models
    tuned_values = yaml.safe_load((work / "tune" / "best-chemprop.yaml").read_text())
    overrides = tuned_values["compare"]["model_overrides"]["chemprop"]
    depth = next(int(o.split("=")[1]) for o in overrides if o.startswith("chemprop.depth="))

    for label in ("chemprop", "chemprop-tuned"):
        row = next(r for r in summary["rows"] if r["model"] == label)
        assert row["params"] > 0 and row["epoch_time_s_mean"] is not None
        assert row["wilcoxon_vs"] == "kan"
        tests = []
        for seed in (0, 1):
            run = cmp / "runs" / f"{label}-s{seed}"
            kan = cmp / "runs" / f"kan-s{seed}"
            metrics = json.loads((run / "metrics.json").read_text())
            assert metrics["seed"] == seed and metrics["model"] == label
            assert metrics["chemprop"]["depth"] == (3 if label == "chemprop" else depth)
            # the same molecules and indices as kangnn's run of this seed
            ours = json.loads((run / "splits.json").read_text())
            theirs = json.loads((kan / "splits.json").read_text())
            assert ours == theirs
            for part, file in (("test", "predictions.csv"), ("val", "val_predictions.csv")):
                idx, smiles, truth, preds = _read_predictions(run / file)
                assert idx == theirs[part]
                if part == "test":
                    k_idx, k_smiles, k_truth, _ = _read_predictions(kan / file)
                    assert (idx, smiles) == (k_idx, k_smiles)
                    assert np.allclose(truth, k_truth, rtol=1e-6)
                # the reported metric is the RMSE of the predictions file (numpy oracle)
                rmse = math.sqrt(float(np.mean((preds[:, 0] - truth[:, 0]) ** 2)))
                assert metrics[part]["rmse"] == pytest.approx(rmse, rel=1e-6)
            tests.append(metrics["test"]["rmse"])
        assert row["test_rmse_mean"] == pytest.approx(np.mean(tests), rel=1e-9)
        per_seed = [r["test"] for r in summary["per_seed"][label]]
        assert per_seed == pytest.approx(tests)
    assert "chemprop-tuned" in (cmp / "summary.md").read_text()


def test_compare_adds_chemprop_rows_to_a_finished_comparison(tuned_compare, capsys):
    """A KAN/MLP comparison first, the chemprop rows later (while chemprop is still being tuned):
    the finished runs are kept as they are, only the new rows are trained."""
    work = tuned_compare
    best = work / "tune" / "best-chemprop.yaml"
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    mp.setenv("HOME", str(work / "home"))
    from kangnn.kan import fused

    mp.setitem(fused._state, "enabled", False)
    try:
        code, _, _ = run_cli(["compare", best, "--seeds", "1", "--out", "pair"], capsys)
        assert code == 0
        runs = work / "pair" / "runs"
        before = {
            p.relative_to(runs): (os.stat(p).st_ino, p.read_bytes())
            for p in runs.rglob("*")
            if p.is_file()
        }
        assert sorted({p.parts[0] for p in before}) == ["kan-s0", "mlp-s0"]
        title = (work / "pair" / "summary.md").read_text().splitlines()[0]

        argv = ["compare", best, "--with", "chemprop", "--seeds", "1", "--out", "pair"]
        code, out, err = run_cli(argv, capsys)
        assert code == 0
        assert "2 of its runs are kept" in out + err
        summary = json.loads((work / "pair" / "summary.json").read_text())
        assert [r["model"] for r in summary["rows"]] == ["kan", "mlp", "chemprop", "chemprop-tuned"]
        for rel, (ino, data) in before.items():  # the same files, not trained again
            assert os.stat(runs / rel).st_ino == ino and (runs / rel).read_bytes() == data
        assert (runs / "chemprop-tuned-s0" / "metrics.json").is_file()
        # the experiment's name, not that of the last kept run
        assert (work / "pair" / "summary.md").read_text().splitlines()[0] == title
        assert not (work / "pair.replaced").exists() and not (work / ".partial").exists()

        # Nothing to add, other seeds, or rows left out: one-line errors, nothing touched.
        for extra, needle in (
            (["--with", "chemprop"], "already exists"),
            (["--with", "chemprop", "--seeds", "2"], "another config (or seeds)"),
            ([], "pass --with chemprop"),
        ):
            argv = ["compare", best, "--seeds", "1", *extra, "--out", "pair"]
            code, _, err = run_cli(argv, capsys)
            assert_user_error(code, err, "pair", needle)
        assert json.loads((work / "pair" / "summary.json").read_text()) == summary
    finally:
        mp.undo()


def test_chemprop_run_is_deterministic(esol_root, tmp_path):
    _needs_chemprop()
    from kangnn.config import load_config
    from kangnn.train.chemprop import train_chemprop

    cfg = load_config(
        "experiments/esol.yaml", [f"dataset.root={esol_root}", "dataset.split=random", *TINY]
    )
    a = train_chemprop(cfg, tmp_path / "a")
    b = train_chemprop(cfg, tmp_path / "b")
    assert a["test"] == b["test"] and a["val"] == b["val"]
    assert (tmp_path / "a" / "predictions.csv").read_text() == (
        tmp_path / "b" / "predictions.csv"
    ).read_text()
    cfg.seed = 1
    c = train_chemprop(cfg, tmp_path / "c")
    assert c["test"] != a["test"]  # the seed reaches the weights and the batch order
    code = main(["splits", "export", str(tmp_path / "a"), "--output", str(tmp_path / "s.json")])
    assert code == 0  # a chemprop run directory exports like a kangnn one


def test_cut_off_chemprop_run_continues_to_the_uninterrupted_numbers(esol_root, tmp_path):
    """A chemprop run killed mid-training (a session's end) continues from its last epoch to the
    run an uninterrupted one gives: weights, schedule, best checkpoint, dropout masks and the
    order of chemprop's batches (its sampler reshuffles on every pass) all carry over."""
    _needs_chemprop()
    from kangnn.config import load_config
    from kangnn.train.chemprop import train_chemprop

    extra = ["chemprop.epochs=4", "chemprop.dropout=0.2"]
    cfg = load_config(
        "experiments/esol.yaml",
        [f"dataset.root={esol_root}", "dataset.split=random", *TINY, *extra],
    )
    whole = train_chemprop(cfg, tmp_path / "whole")
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train_chemprop(cfg, tmp_path / "cut", callbacks=[StopAt(2)])
    partial = tmp_path / ".partial" / "cut"
    assert (partial / "checkpoints" / "last.ckpt").is_file()
    other = copy.deepcopy(cfg)
    other.chemprop.dropout = 0.1
    with pytest.raises(RunDirError, match="made with another config"):
        train_chemprop(other, tmp_path / "cut", resume=True)
    with pytest.raises((KeyboardInterrupt, SystemExit)):  # a second session's end
        train_chemprop(cfg, tmp_path / "cut", resume=True, callbacks=[StopAt(3)])
    # as `kangnn compare` continues it: the child process's --resume
    from kangnn.config import save_config
    from kangnn.train.chemprop import main as chemprop_main

    save_config(cfg, tmp_path / "cfg.yaml")
    assert (
        chemprop_main([str(tmp_path / "cfg.yaml"), "--run-dir", str(tmp_path / "cut"), "--resume"])
        == 0
    )
    cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    for key in ("val", "test", "best_epoch", "epochs_run", "chemprop_selection"):
        assert cut[key] == whole[key], key
    assert len(cut["epoch_times_s"]) == 4
    for name in ("predictions.csv", "val_predictions.csv"):
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "whole" / name).read_text()
    logged = list(csv.DictReader(open(tmp_path / "cut" / "logs" / "metrics.csv")))
    assert [int(r["epoch"]) for r in logged if r["val_loss"]] == [0, 1, 2, 3]  # each once
    assert not partial.exists() and not (tmp_path / "cut" / "checkpoints" / "last.ckpt").exists()


def test_compare_continues_a_cut_off_chemprop_run(esol_root, tmp_path, monkeypatch, capsys):
    _needs_chemprop()
    from kangnn.config import load_config
    from kangnn.train import compare as cmp
    from kangnn.train.chemprop import train_chemprop

    overrides = [f"dataset.root={esol_root}", "dataset.split=random", *TINY, "chemprop.epochs=3"]
    cfg = load_config("experiments/esol.yaml", overrides)
    calls, real = [], cmp._train_inprocess

    def run_inprocess(run_cfg, run_dir, split, label=None, resume=None):
        calls.append((run_dir.name, resume is not None))
        if label == "chemprop" and resume is None:  # killed after its epoch 1
            train_chemprop(run_cfg, run_dir, split, label=label, callbacks=[StopAt(1)])
        return real(run_cfg, run_dir, split, label, resume)

    monkeypatch.setattr(cmp, "_train_inprocess", run_inprocess)
    out = tmp_path / "cmp"
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        cmp.compare(cfg, seeds=1, out_dir=out, with_models=["chemprop"])
    calls.clear()
    cmp.compare(cfg, seeds=1, out_dir=out, with_models=["chemprop"], log=print)
    assert calls == [("chemprop-s0", True)]  # the KAN and MLP runs were kept
    assert "seed 0 chemprop: continuing an interrupted run after epoch 1" in capsys.readouterr().out
    metrics = json.loads((out / "runs" / "chemprop-s0" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and len(metrics["epoch_times_s"]) == 3


def test_chemprop_child_takes_overrides(esol_root, tmp_path, capsys):
    """`python -m kangnn.train.chemprop CONFIG OVERRIDES`: the overrides reach the run's config
    and chemprop's model; a bad one is a one-line error and leaves no run directory."""
    _needs_chemprop()
    import kangnn.train.chemprop as kcp

    base = ["experiments/esol.yaml", f"dataset.root={esol_root}", "dataset.split=random", *TINY]
    assert kcp.main([*base, "--run-dir", str(tmp_path / "norm")]) == 0
    assert kcp.main([*base, "chemprop.aggregation=sum", "--run-dir", str(tmp_path / "sum")]) == 0
    saved = yaml.safe_load((tmp_path / "sum" / "config.yaml").read_text())
    assert saved["chemprop"]["aggregation"] == "sum"
    metrics = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("norm", "sum")]
    assert metrics[0]["test"] != metrics[1]["test"]  # the readout changed what was trained
    capsys.readouterr()
    code = kcp.main([*base, "chemprop.agregation=sum", "--run-dir", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "chemprop.agregation" in err
    assert "Traceback" not in err and not (tmp_path / "bad").exists()


def test_same_predictions_as_chemprop_train(esol_root, tmp_path, monkeypatch):
    """Oracle: `chemprop train` on the exported split, with --pytorch-seed and --data-seed set
    to the run's seed and the same settings, predicts the test molecules as kangnn's run."""
    _needs_chemprop()
    from chemprop.cli.main import construct_parser

    from kangnn.config import load_config
    from kangnn.train.chemprop import train_chemprop

    overrides = [f"dataset.root={esol_root}", "dataset.split=random", "seed=3", *TINY]
    cfg = load_config("experiments/esol.yaml", overrides)
    monkeypatch.chdir(tmp_path)  # chemprop train writes where it is told, and no further
    train_chemprop(cfg, tmp_path / "ours")
    assert main(["splits", "export", "ours", "--output", "splits.json"]) == 0
    source = esol_root / "esol" / "raw" / "delaney-processed.csv"
    target = "measured log solubility in mols per litre"
    argv = ["train", "--data-path", source, "--smiles-columns", "smiles"]
    argv += ["--target-columns", target, "--task-type", "regression"]
    argv += ["--splits-file", "splits.json", "--epochs", "3", "--message-hidden-dim", "16"]
    argv += ["--ffn-hidden-dim", "16", "--pytorch-seed", "3", "--data-seed", "3"]
    argv += ["--accelerator", "cpu", "--devices", "1", "--output-dir", "cli"]
    args = construct_parser().parse_args([str(a) for a in argv])
    func = args.func
    for attr in ("logfile", "v", "q", "mode", "func"):  # what chemprop's main() pops
        delattr(args, attr)
    func(args)  # chemprop's own training, without main()'s global logging set-up
    with open(tmp_path / "cli" / "model_0" / "test_predictions.csv", newline="") as f:
        theirs = np.array([float(r[1]) for r in list(csv.reader(f))[1:]])
    _, _, _, ours = _read_predictions(tmp_path / "ours" / "predictions.csv")
    assert np.allclose(ours[:, 0], theirs, rtol=0, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli", "ours", "splits.json"]


def test_tune_registers_chemprop():
    from kangnn.train import chemprop as kc
    from kangnn.train.tune import OBJECTIVES

    assert "chemprop" in OBJECTIVES
    assert OBJECTIVES["chemprop"].function is None
    assert OBJECTIVES["chemprop"].check_key("chemprop.depth") is None
    assert "chemprop section" in OBJECTIVES["chemprop"].check_key("train.lr")
    assert kc.to_chemprop_splits({"train": [2, 0], "val": [1], "test": [3]}) == [
        {"train": [2, 0], "val": [1], "test": [3]}
    ]


def _chemprop_split_reader(path: Path) -> list[dict[str, list[int]]]:
    """What `chemprop train --splits-file` does with the file (chemprop.cli.train)."""
    from chemprop.cli.utils import parse_indices

    with open(path, "rb") as f:
        split_idxss = json.load(f)
    return [{k: parse_indices(d[k]) for k in ("train", "val", "test")} for d in split_idxss]


def _chemprop_smiles(data_csv: Path, smiles_col: str, targets: list[str]) -> list[str]:
    """The SMILES of the rows chemprop reads from a CSV, in its row order."""
    from chemprop.cli.utils import build_data_from_files

    data = build_data_from_files(
        data_csv,
        no_header_row=False,
        smiles_cols=[smiles_col],
        rxn_cols=None,
        target_cols=targets,
        ignore_cols=None,
        splits_col=None,
        weight_col=None,
        bounded=False,
        p_descriptors=None,
        p_atom_feats={},
        p_bond_feats={},
        p_atom_descs={},
        molecule_featurizers=None,
        keep_h=False,
        add_h=False,
        ignore_stereo=False,
        reorder_atoms=False,
        use_cuikmolmaker_featurization=False,
    )
    return [dp.name for dp in data[0]]


def test_splits_export_round_trip(tuned_compare, esol_root, tmp_path, capsys):
    _needs_chemprop()
    run = tuned_compare / "cmp" / "runs" / "kan-s1"
    ours = json.loads((run / "splits.json").read_text())
    out = tmp_path / "splits.json"
    code, stdout, err = run_cli(
        [
            "splits",
            "export",
            run,
            "--format",
            "chemprop",
            "--output",
            out,
            "--data-root",
            esol_root,
        ],
        capsys,
    )
    assert code == 0, err
    assert stdout.strip() == str(out)
    assert f"--splits-file {out}" in err and "chemprop train --data-path" in err
    back = _chemprop_split_reader(out)
    assert back == [{k: ours[k] for k in ("train", "val", "test")}]
    # every kept row: the indices are the source file's rows, as chemprop reads them
    source = esol_root / "esol" / "raw" / "delaney-processed.csv"
    target = "measured log solubility in mols per litre"
    rows = _chemprop_smiles(source, "smiles", [target])
    _, k_smiles, _, _ = _read_predictions(run / "predictions.csv")
    assert [rows[i].strip() for i in back[0]["test"]] == k_smiles  # ESOL pads some SMILES
    # the comparison folder itself is not a run: the error names one
    code, _, err = run_cli(["splits", "export", run.parent.parent], capsys)
    assert_user_error(code, err, "no splits.json", "pick a run")


def test_splits_export_with_skipped_rows(tmp_path, capsys):
    """A CSV with an invalid SMILES (skipped): indices are kangnn's, so --data is required and
    writes the molecules they index; chemprop reads both back to kangnn's molecules."""
    _needs_chemprop()
    from kangnn.config import load_config, save_config
    from kangnn.train.data import prepare_data

    csv_path = tmp_path / "mols.csv"
    lines = ["smiles,logp"] + [f"{'C' * (i + 1)}O,{i * 0.5}" for i in range(12)]
    lines.insert(4, "C1CC,9.9")  # unclosed ring: RDKit rejects it
    csv_path.write_text("\n".join(lines) + "\n")
    cfg = load_config(
        None,
        [
            f"dataset.path={csv_path}",
            "dataset.smiles_column=smiles",
            "dataset.target_columns=[logp]",
            "dataset.task=regression",
            "dataset.skip_invalid=true",
            "dataset.split=random",
        ],
    )
    data = prepare_data(cfg)
    run = tmp_path / "run"
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    (run / "splits.json").write_text(json.dumps({**data.split, "n": len(data.dataset)}))
    code, _, err = run_cli(["splits", "export", run], capsys)
    assert_user_error(code, err, "mols.csv", "1 skipped", "--data FILE")
    assert not (run / "chemprop_splits.json").exists()

    mols = tmp_path / "kangnn-molecules.csv"
    code, stdout, err = run_cli(["splits", "export", run, "--data", mols], capsys)
    assert code == 0, err
    back = _chemprop_split_reader(Path(stdout.strip()))
    assert back == [{k: data.split[k] for k in ("train", "val", "test")}]
    smiles = _chemprop_smiles(mols, "smiles", ["logp"])
    assert smiles == list(data.dataset.smiles)


def test_missing_chemprop_is_a_one_line_error(esol_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "chemprop", None)  # `import chemprop` raises ImportError
    args = ["compare", "experiments/esol.yaml", "--with", "chemprop", "--out", tmp_path / "c"]
    code, _, err = run_cli([*args, f"dataset.root={esol_root}", *TINY], capsys)
    assert_user_error(code, err, "chemprop is not installed", "pip install 'kangnn[chemprop]'")
    assert "install.sh" in err
    assert not (tmp_path / "c").exists() and not any(tmp_path.iterdir())  # nothing trained


def _summary(rows, per_seed, metric="rmse", mode="min") -> dict:
    return {
        "rows": rows,
        "metric": metric,
        "mode": mode,
        "task": "regression" if mode == "min" else "classification",
        "per_seed": per_seed,
    }


def _row(model, conv, test, val, params=1000, t=1.0):
    m = "rmse"
    return {
        "model": model,
        "conv": conv,
        "params": params,
        "n_seeds": len(test),
        f"test_{m}_mean": float(np.mean(test)),
        f"test_{m}_std": float(np.std(test, ddof=1)),
        f"val_{m}_mean": float(np.mean(val)),
        f"val_{m}_std": float(np.std(val, ddof=1)),
        "epoch_time_s_mean": t,
    }


def test_report_renders_planted_results(tmp_path, capsys):
    rng = np.random.default_rng(0)
    seeds = list(range(6))
    vals = {
        "kan": (rng.normal(0.9, 0.02, 6), rng.normal(0.95, 0.02, 6)),
        "mlp": (rng.normal(1.0, 0.02, 6), rng.normal(1.05, 0.02, 6)),
        # best on test, but not on validation: kangnn's side is picked by validation
        "chemprop": (rng.normal(0.85, 0.02, 6), rng.normal(0.99, 0.02, 6)),
        "chemprop-tuned": (rng.normal(0.95, 0.02, 6), rng.normal(0.97, 0.02, 6)),
    }
    rows = [_row(m, "gine" if m in ("kan", "mlp") else "dmpnn", *v) for m, v in vals.items()]
    per_seed = {
        m: [
            {"seed": s, "test": float(t), "val": float(v)}
            for s, t, v in zip(seeds, *vals[m], strict=True)
        ]
        for m in vals
    }
    (tmp_path / "esol").mkdir()
    (tmp_path / "esol" / "summary.json").write_text(json.dumps(_summary(rows, per_seed)))
    # a second conv for ESOL in a subfolder, sharing nothing: its KAN loses to its MLP
    d_test = {"kan": rng.normal(1.2, 0.02, 6), "mlp": rng.normal(1.1, 0.02, 6)}
    d_rows = [_row(m, "dmpnn", d_test[m], d_test[m] + 0.5) for m in d_test]
    d_seed = {
        m: [
            {"seed": s, "test": float(t), "val": 0.0} for s, t in zip(seeds, d_test[m], strict=True)
        ]
        for m in d_test
    }
    (tmp_path / "esol" / "dmpnn").mkdir()
    (tmp_path / "esol" / "dmpnn" / "summary.json").write_text(json.dumps(_summary(d_rows, d_seed)))
    # the same conv with molecule descriptors: rows of their own, paired among themselves
    r_test = {m: rng.normal(1.0, 0.02, 6) for m in ("kan", "mlp", "chemprop")}
    r_rows = [{**_row(m, "dmpnn", t, t + 0.2), "descriptors": "rdkit2d"} for m, t in r_test.items()]
    r_seed = {
        m: [
            {"seed": s, "test": float(t), "val": 1.2} for s, t in zip(seeds, r_test[m], strict=True)
        ]
        for m in r_test
    }
    (tmp_path / "esol" / "dmpnn-rdkit2d").mkdir()
    (tmp_path / "esol" / "dmpnn-rdkit2d" / "summary.json").write_text(
        json.dumps(_summary(r_rows, r_seed))
    )
    # `kangnn tune` folders beside the comparisons (one dataset has nothing but its tuning)
    tuning = {"metric": "rmse", "mode": "min", "trials": 12, "best": {}, "space": {}}
    for folder in ("esol/tune-gine", "freesolv/tune-dmpnn"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "summary.json").write_text(json.dumps(tuning))
    out = tmp_path / "results.md"
    code, stdout, err = run_cli(["report", tmp_path, "--output", out], capsys)
    assert code == 0, err
    text = out.read_text()
    lines = text.splitlines()
    assert stdout.strip() == str(out)
    assert sum(ln.startswith("| esol | rmse ↓ |") for ln in lines) == 9  # every model, once
    for label in ("KAN dmpnn+rdkit2d", "MLP dmpnn+rdkit2d", "chemprop+rdkit2d"):
        assert sum(f"| {label} |" in ln for ln in lines if ln.startswith("| esol | rmse")) == 1
    rd = [ln for ln in lines if ln.startswith("| esol | dmpnn+rdkit2d |")][0].split(" | ")
    p_rd = wilcoxon(r_test["kan"], r_test["mlp"]).pvalue
    assert rd[5] == f"{p_rd:.3g}" and rd[4] == (
        "KAN" if r_test["kan"].mean() < r_test["mlp"].mean() else "MLP"
    )
    twin = [ln for ln in lines if ln.startswith("| esol | gine |")][0].split(" | ")
    p_twin = wilcoxon(vals["kan"][0], vals["mlp"][0]).pvalue
    assert twin[4] == "KAN" and twin[5] == f"{p_twin:.3g}" and twin[6].strip(" |") == "6"
    dm = [ln for ln in lines if ln.startswith("| esol | dmpnn |")][0].split(" | ")
    assert dm[4] == "MLP"
    # kangnn's best by validation is KAN gine (val 0.95); chemprop's is chemprop-tuned (0.97),
    # although plain chemprop has the best test metric
    ext = [ln for ln in lines if ln.startswith("| esol | KAN gine |")][0].split(" | ")
    assert ext[3] == "chemprop-tuned"
    p_ext = wilcoxon(vals["kan"][0], vals["chemprop-tuned"][0]).pvalue
    assert ext[5] == "kangnn" and ext[6] == f"{p_ext:.3g}"
    assert "a KAN beats its MLP twin on 1 of 1 datasets" in text
    assert "kangnn's best model beats chemprop's on 1 of 1" in text
    # stdout when no --output; a broken summary is a one-line error naming it
    code, stdout, _ = run_cli(["report", tmp_path], capsys)
    assert code == 0 and stdout == text
    (tmp_path / "bace").mkdir()
    (tmp_path / "bace" / "summary.json").write_text("{}")
    code, _, err = run_cli(["report", tmp_path], capsys)
    assert_user_error(code, err, "bace/summary.json", "not a kangnn summary.json")
    code, _, err = run_cli(["report", tmp_path, "--datasets", "freesolv"], capsys)
    assert_user_error(code, err, "No comparison summary.json", "freesolv")
    # one model in two comparisons of a dataset: which to show is not guessed
    (tmp_path / "esol" / "again").mkdir()
    (tmp_path / "esol" / "again" / "summary.json").write_text(json.dumps(_summary(rows, per_seed)))
    code, _, err = run_cli(["report", tmp_path, "--datasets", "esol"], capsys)
    assert_user_error(code, err, "'KAN gine' is in both", "again/summary.json")


def test_override_that_is_not_yaml_is_a_one_line_error(capsys):
    bad = "compare.model_overrides={chemprop:[chemprop.depth=2]}"  # `{a: b}` needs the space
    code, _, err = run_cli(["compare", "experiments/esol.yaml", "--with", "chemprop", bad], capsys)
    assert_user_error(code, err, bad, "not valid YAML")
