"""`kangnn tune`: equal budgets for the KAN and its MLP twin, resume, best configs, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from omegaconf import OmegaConf

from kangnn.cli import main
from kangnn.config import load_config
from kangnn.train.tune import PruningReporter, TrialContext

ROWS = 60
SPACE = (
    "tune.space=[{key: train.lr, low: 0.0005, high: 0.005, log: true},"
    " {key: model.dropout, type: categorical, choices: [0.0, 0.1]},"
    " {key: model.grid_size, type: int, low: 3, high: 4, models: [kan]}]"
)
TINY = [
    "model.hidden_channels=8",
    "model.num_layers=1",
    "model.grid_size=2",  # outside the KAN's range: its tuned grid always differs from the twin's
    "train.epochs=1",
    "train.batch_size=16",
    "train.threads=1",
    "train.patience=0",
    "dataset.split=random",
    SPACE,
]


@pytest.fixture(scope="module")
def esol_root(esol_subset) -> Path:
    return esol_subset(ROWS)


def _config(tmp: Path) -> Path:
    path = tmp / "tiny.yaml"
    path.write_text("name: tiny\ndataset:\n  name: esol\n")
    return path


def _trials(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(out / "trials.csv")))


@pytest.fixture(scope="module")
def study(esol_root, tmp_path_factory):
    """Two trials per model, one session."""
    tmp = tmp_path_factory.mktemp("tune")
    out = tmp / "study"
    args = ["tune", str(_config(tmp)), "--trials", "2", "--out", str(out)]
    assert main([*args, f"--data-root={esol_root}", *TINY]) == 0
    return SimpleNamespace(tmp=tmp, out=out, args=args, root=esol_root)


def test_two_trials_per_model_same_shared_space_and_best_configs(study):
    rows = _trials(study.out)
    assert (
        sorted((r["model"], r["state"]) for r in rows)
        == [("kan", "complete")] * 2 + [("mlp", "complete")] * 2
    )
    params = {(r["model"], int(r["number"])): json.loads(r["params"]) for r in rows}
    # The shared space for both; the KAN-only key in the KAN's own trials only.
    assert all(
        set(p) == {"train.lr", "model.dropout", "model.grid_size"}
        for (m, _), p in params.items()
        if m == "kan"
    )
    assert all(
        set(p) == {"train.lr", "model.dropout"} for (m, _), p in params.items() if m == "mlp"
    )
    storage = f"sqlite:///{study.out / 'optuna.db'}"
    for model in ("kan", "mlp"):
        s = optuna.load_study(study_name=model, storage=storage)
        best = min((t for t in s.trials), key=lambda t: t.value)  # selection: validation RMSE
        cfg = load_config(study.out / f"best-{model}.yaml")
        assert cfg.model.function == model
        assert cfg.train.lr == best.params["train.lr"]
        assert cfg.model.dropout == best.params["model.dropout"]
        if model == "kan":
            assert cfg.model.grid_size == best.params["model.grid_size"]
        # Both files carry both tuned models: either one reproduces the tuned pair.
        assert set(cfg.compare.model_overrides) == {"kan", "mlp"}
        assert f"train.lr={best.params['train.lr']}" in cfg.compare.model_overrides[model]
    summary = json.loads((study.out / "summary.json").read_text())
    assert summary["metric"] == "rmse" and set(summary["best"]) == {"kan", "mlp"}
    assert [s["key"] for s in summary["space"]["mlp"]] == ["train.lr", "model.dropout"]


def test_best_configs_are_accepted_by_train(study, capsys):
    out = study.tmp / "runs"
    assert main(["train", str(study.out / "best-mlp.yaml"), f"output_dir={out}"]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    ran = load_config(run_dir / "config.yaml")
    tuned = load_config(study.out / "best-mlp.yaml")
    assert ran.model.function == "mlp" and ran.train.lr == tuned.train.lr
    # The KAN's file, trained as the MLP, gets the MLP's tuned values (its model overrides).
    kan_file = load_config(study.out / "best-kan.yaml", ["model.function=mlp"])
    from kangnn.config import for_model

    assert for_model(kan_file).train.lr == tuned.train.lr
    # `kangnn compare best-kan.yaml` trains the twin that was tuned: matched to a KAN of its own
    # architecture at the grid its trials held (2), not at the KAN's tuned grid (3 or 4).
    twin = for_model(load_config(study.out / "best-kan.yaml"), "mlp")
    assert OmegaConf.to_container(twin.model) == OmegaConf.to_container(tuned.model)
    assert OmegaConf.to_container(twin.train) == OmegaConf.to_container(tuned.train)
    assert twin.model.grid_size == 2 != load_config(study.out / "best-kan.yaml").model.grid_size


def test_rerun_runs_only_missing_trials_and_skips_interrupted_ones(study, capsys):
    storage = f"sqlite:///{study.out / 'optuna.db'}"
    stale = optuna.load_study(study_name="kan", storage=storage).ask()  # left running
    # Same config, 3 trials for the KAN only: one new trial; the stale one does not count.
    args = [*study.args[:3], "3", *study.args[4:], f"--data-root={study.root}", *TINY]
    assert main([*args, "--models", "kan"]) == 0
    rows = _trials(study.out)
    kan = [r for r in rows if r["model"] == "kan"]
    assert sum(r["counted"] == "True" for r in kan) == 3 and len(kan) == 4
    [closed] = [r for r in kan if int(r["number"]) == stale.number]
    # closed a session later, maybe: its start-to-close time is no training time
    assert (closed["state"], closed["error"], closed["seconds"]) == ("fail", "interrupted", "")
    assert all(float(r["seconds"]) > 0 for r in rows if r["state"] != "fail")
    assert sum(r["model"] == "mlp" for r in rows) == 2
    # The MLP tuned in the earlier session keeps its values in the pair.
    assert set(load_config(study.out / "best-kan.yaml").compare.model_overrides) == {"kan", "mlp"}
    # All trials done: a rerun trains nothing.
    capsys.readouterr()
    assert main([*args, "--models", "kan"]) == 0
    assert "already done" in capsys.readouterr().err


def test_a_cut_off_trial_is_continued_to_the_value_of_an_uninterrupted_one(
    esol_root, tmp_path, monkeypatch
):
    """A session ending mid-trial: the rerun continues that trial from its last epoch (same
    values, same run) instead of drawing a new one, and gets the uninterrupted trial's value."""
    from kangnn.train.tune import tune

    # Dropout on, so that the continued trial must also restore the random state.
    cfg = load_config(_config(tmp_path), [f"dataset.root={esol_root}", *TINY, "tune.epochs=3"])
    whole = tune(cfg, trials=1, models=["kan"], out_dir=tmp_path / "whole")

    def stop_at_epoch_2(self, trainer, pl_module):
        if trainer.current_epoch == 2:
            raise KeyboardInterrupt

    out = tmp_path / "cut"
    with monkeypatch.context() as m:
        m.setattr(PruningReporter, "on_train_epoch_start", stop_at_epoch_2, raising=False)
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            tune(cfg, trials=1, models=["kan"], out_dir=out)
    assert (out / "trials" / "kan" / ".partial" / "000" / "checkpoints" / "last.ckpt").is_file()
    lines: list[str] = []
    tune(cfg, trials=1, models=["kan"], out_dir=out, log=lines.append)
    assert any("continuing cut-off trial 0 after epoch 2" in line for line in lines)
    cut, continued = _trials(out)
    assert (cut["state"], cut["counted"], cut["error"]) == ("fail", "False", "interrupted")
    assert (continued["state"], continued["continues"]) == ("complete", "0")
    assert continued["params"] == cut["params"] == whole.trials[0]["params"]
    assert continued["epochs"] == "3"  # the cut trial's epochs were reported again
    assert float(continued["val_rmse"]) == whole.trials[0]["val_rmse"]
    assert not (out / "trials" / "kan" / ".partial").exists()
    val = {
        name: json.loads((folder / "metrics.json").read_text())["val"]
        for name, folder in (
            ("whole", tmp_path / "whole" / "trials" / "kan" / "000"),
            ("continued", out / "trials" / "kan" / "001"),
        )
    }
    assert val["whole"] == val["continued"]
    # Done: a rerun neither trains nor queues anything.
    tune(cfg, trials=1, models=["kan"], out_dir=out)
    storage = f"sqlite:///{out / 'optuna.db'}"
    assert len(optuna.load_study(study_name="kan", storage=storage).trials) == 2


def test_pruning_reporter_stops_a_trial_that_trails_the_median():
    s = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    first = s.ask()
    for epoch, value in enumerate([2.0, 1.0]):
        first.report(value, epoch)
    s.tell(first, 1.0)
    ctx = TrialContext(s.ask(), data=None, run_dir=Path("."), metric="rmse", mode="min")
    trainer = SimpleNamespace(
        sanity_checking=False,
        current_epoch=0,
        should_stop=False,
        callback_metrics={"val/rmse": torch.tensor(1.5)},
    )
    reporter = PruningReporter(ctx)
    reporter.on_validation_end(trainer, None)
    assert not trainer.should_stop and not ctx.pruned  # ahead of the median (2.0): carries on
    # Its best so far (1.2) trails the median at epoch 1 (1.0): pruned, training stops.
    trainer.current_epoch, trainer.callback_metrics = 1, {"val/rmse": torch.tensor(1.2)}
    reporter.on_validation_end(trainer, None)
    assert trainer.should_stop and ctx.pruned and ctx.pruned_at == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--trials", "0"], "--trials must be >= 1, got 0"),
        (
            ["tune.space=[{key: model.colour, low: 1, high: 2}]"],
            "tune.space[0]: unknown config key 'model.colour'",
        ),
        (["tune.space=[{key: train.lr, lo: 1, high: 2}]"], "unknown config key"),
        (
            ["tune.space=[{key: dataset.split, type: categorical, choices: [random]}]"],
            "cannot be tuned",
        ),
        (["tune.space=[{key: train.lr, low: 0.1, high: 0.01}]"], "needs low <= high"),
        (
            ["tune.space=[{key: model.dropout, low: 0.0, high: 0.5, models: [mlp]}]"],
            "must list kan",
        ),
        (
            ["tune.space=[{key: model.dropout, low: 0.0, high: 0.5, models: [kan, gnn]}]"],
            "unknown model(s) gnn",
        ),
        (["--models", "kan", "transformer"], "unknown model(s) to tune: transformer"),
        (
            ["tune.space=[{key: model.mlp_hidden_channels, type: int, low: 8, high: 64}]"],
            "width is matched",
        ),
    ],
)
def test_bad_input_is_a_one_line_error(study, capsys, extra, message):
    args = ["tune", str(_config(study.tmp)), "--out", str(study.tmp / "bad"), "--trials", "1"]
    assert main([*args, f"--data-root={study.root}", "dataset.split=random", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (study.tmp / "bad").exists()  # nothing half-written


def test_a_study_folder_refuses_another_config(study, capsys):
    args = [*study.args, f"--data-root={study.root}", *TINY, "model.hidden_channels=16"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "model.hidden_channels 8 there, 16 now" in err and len(err.strip().splitlines()) == 1


def _open_at_barrier(cfg, model: str, folder, barrier, results) -> None:
    from kangnn.train.tune import _open_studies, search_space

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    barrier.wait()
    try:
        _open_studies(cfg, {model: search_space(cfg, model)}, folder, "min")
        results.put("ok")
    except Exception as err:  # the race shows as sqlalchemy/sqlite errors
        results.put(f"{model}: {type(err).__name__}: {str(err).splitlines()[0]}")


def test_two_processes_opening_a_new_study_folder_at_once(tmp_path):
    """experiments/verdict.sh starts `kangnn tune --models kan` and `--models mlp` together on
    a new folder; unguarded, Optuna's schema creation races in about 4 rounds of 10."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    cfg = load_config(_config(tmp_path), TINY)
    for round_ in range(8):
        folder = tmp_path / f"round{round_}"
        folder.mkdir()
        storage = f"sqlite:///{(folder / 'optuna.db').absolute()}"
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(target=_open_at_barrier, args=(cfg, m, folder, barrier, results))
            for m in ("kan", "mlp")
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        failures = [r for r in (results.get(timeout=5) for _ in procs) if r != "ok"]
        assert not failures, (round_, failures)
        assert set(optuna.get_all_study_names(storage)) == {"kan", "mlp"}
