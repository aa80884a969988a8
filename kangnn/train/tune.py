"""``kangnn tune``: equal-budget hyperparameter search for the KAN model and its MLP twin (Optuna).

Each model gets the same number of trials over the same search space of the hyperparameters
they share (``tune.space`` entries whose ``models`` list both); options only a KAN has (grid
size, spline learning rate, ...) are searched inside the KAN's own trials, so neither side gets
more. Every trial trains on the same split (made once) and is scored on the validation metric
only (the config's primary metric at its best-validation epoch); the test part is never looked
at. Hopeless trials are pruned (Optuna's ``MedianPruner`` on the per-epoch validation metric).

The study lives in ``<out>/optuna.db`` (Optuna's SQLite storage, one study per model), so a
rerun with the same config continues it: with ``--trials N`` only the trials still missing are
run. Trials that finished (complete, pruned, or failed on a model that cannot be built) count
towards ``N``; a trial cut short by an interruption (a session's end) does not. A kangnn
trial cut short is continued by the next rerun from its last finished epoch, to the value an
uninterrupted trial gets (a new trial with the same values, ``continues`` in ``trials.csv``
naming the one it takes over; its ``seconds`` count the continued part); one that cannot be
continued, and a chemprop trial, is drawn anew.

Parameter matching stays as in ``train``: an MLP trial's function width is matched to the KAN
built from that trial's own config (its widths, layers, the base grid size). So each tuned MLP
twin is parameter-matched to "its" KAN, not to the tuned KAN, whose shared values may differ;
``compare`` on a tuned file reports both models' parameter counts. ``model.mlp_hidden_channels``
and ``model.match_tolerance`` (which would undo the matching) cannot be searched, and a spec for
``mlp`` must list ``kan`` too.

Outputs in ``<out>``: ``best-<model>.yaml`` per model (the config with that model's best values;
``compare.model_overrides`` carries every tuned model's values, so ``kangnn compare
best-kan.yaml`` trains the tuned KAN against the tuned MLP twin), ``trials.csv``,
``summary.json``, ``summary.md`` and ``trials/<model>/<number>/`` (each trial's run directory
without its checkpoints).

Extending: another model registers a :class:`Tunable` in :data:`OBJECTIVES` (see
:func:`register`); ``kangnn.train.chemprop`` is imported on first use, if present, so it can
register itself there.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import importlib.util
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from kangnn.config import (
    FUNCTIONS,
    ConfigError,
    apply_overrides,
    for_model,
    primary_metric,
    save_config,
    validate_config,
)
from kangnn.models import ParameterMatchError
from kangnn.train.rundir import experiment_name, resumable_epochs, staging_dir

__all__ = [
    "OBJECTIVES",
    "PruningReporter",
    "TrialContext",
    "TuneResult",
    "Tunable",
    "register",
    "search_space",
    "tune",
]

DB_FILE = "optuna.db"
#: Config keys that do not change what a trial computes: left out of the study's fingerprint.
_NOT_FINGERPRINTED = (
    "name",
    "output_dir",
    "quick",
    "dataset.root",
    "train.progress_bar",
    "train.resume",
    "train.num_workers",
    "compare.seeds",
    "compare.isolate",
    "tune.trials",
)


@dataclass
class TrialContext:
    """What an objective gets besides its config: the data, where to write, how to report.

    Attributes
    ----------
    trial:
        The Optuna trial.
    data:
        The :class:`~kangnn.train.data.PreparedData` every trial uses (one split for all).
    run_dir:
        Where this trial's run directory goes (it must not exist yet).
    metric, mode:
        The validation metric (``rmse``/``roc_auc``) and its direction (``min``/``max``).
    pruned:
        Set by :meth:`report` once the pruner has given up on the trial.
    resume:
        For an objective that continues cut-off trials (:attr:`Tunable.continues`): the
        interrupted run to continue (``staging_dir(run_dir)``, with its ``last.ckpt``), else
        ``None``.
    """

    trial: Any
    data: Any
    run_dir: Path
    metric: str
    mode: str
    pruned: bool = False
    pruned_at: int | None = None
    resume: Path | None = None

    def report(self, epoch: int, value: float) -> bool:
        """Report the validation metric after ``epoch`` (0-based); ``True`` = stop (pruned)."""
        if value is None or not math.isfinite(value):
            return self.pruned
        self.trial.report(float(value), step=int(epoch))
        if not self.pruned and self.trial.should_prune():
            self.pruned, self.pruned_at = True, int(epoch)
        return self.pruned

    def callback(self) -> L.Callback:
        """A Lightning callback that reports ``val/<metric>`` after each validation epoch and
        stops training when the trial is pruned (for objectives that train with Lightning)."""
        return PruningReporter(self)


class PruningReporter(L.Callback):
    """Report ``val/<metric>`` to a :class:`TrialContext` after every validation epoch; stop the
    fit (``trainer.should_stop``) when the pruner gives up on the trial."""

    def __init__(self, context: TrialContext) -> None:
        self.context = context

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(f"val/{self.context.metric}")
        if value is not None and self.context.report(trainer.current_epoch, float(value)):
            trainer.should_stop = True


@dataclass(frozen=True)
class Tunable:
    """How ``kangnn tune`` tunes one model.

    Attributes
    ----------
    objective:
        ``objective(cfg, context) -> float``: train the model ``cfg`` describes (the trial's
        values applied) and return its validation metric; report per-epoch values through
        ``context.report`` or ``context.callback()`` so that pruning works.
    function:
        The ``model.function`` this model sets (``"kan"``, ``"mlp"``), ``None`` for a model
        outside :class:`~kangnn.models.MoleculeGNN` (its best config keeps the base one's).
    check_key:
        ``check_key(key) -> reason or None``: why ``key`` cannot be searched for this model.
    continues:
        Whether the objective continues a trial cut off mid-training from ``context.resume``
        (a kangnn run directory left in ``.partial``); the others start such trials anew.
    """

    objective: Callable[[DictConfig, TrialContext], float]
    function: str | None = None
    check_key: Callable[[str], str | None] | None = None
    continues: bool = False


#: The models ``kangnn tune`` knows, by name.
OBJECTIVES: dict[str, Tunable] = {}

#: Errors of a sampled combination (a model that cannot be built or matched): the trial fails,
#: counts towards the budget, and the search goes on.
_TRIAL_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ParameterMatchError)


def register(name: str, tunable: Tunable) -> None:
    """Make ``name`` tunable (``kangnn tune --models NAME``)."""
    OBJECTIVES[name] = tunable


def _train_objective(cfg: DictConfig, ctx: TrialContext) -> float:
    """Train a :class:`MoleculeGNN` run on the shared data; its best validation metric."""
    from kangnn.train.run import train

    if ctx.resume is not None:  # the trial's own config.yaml and split, from its last epoch
        result = train(cfg, resume=ctx.resume, callbacks=[ctx.callback()])
    else:
        result = train(cfg, run_dir=ctx.run_dir, data=ctx.data, callbacks=[ctx.callback()])
    assert result is not None
    shutil.rmtree(result.run_dir / "checkpoints", ignore_errors=True)  # the configs suffice
    value = result.metrics["val"].get(ctx.metric)
    return float("nan") if value is None else float(value)


def _gnn_key(key: str) -> str | None:
    if key in ("model.mlp_hidden_channels", "model.match_tolerance"):
        return "the MLP twin's width is matched to its KAN's parameter count"
    if not key.startswith(("model.", "train.")):
        return "only model.* and train.* keys change a kangnn model or its training"
    return None


for _function in FUNCTIONS:
    register(
        _function,
        Tunable(_train_objective, function=_function, check_key=_gnn_key, continues=True),
    )


def _load_plugins() -> None:
    """Import modules that register further tunable models (chemprop), when present."""
    for module in ("kangnn.train.chemprop",):
        try:
            if importlib.util.find_spec(module) is not None:
                importlib.import_module(module)
        except ImportError:
            pass


def search_space(cfg: DictConfig, model: str) -> list[dict[str, Any]]:
    """The ``tune.space`` entries ``model`` searches, as plain dicts, in config order.

    Raises
    ------
    ConfigError
        A spec for the MLP twin that the KAN does not search too (the twin shares the KAN's
        space), or a key this model cannot search.
    """
    tunable = OBJECTIVES[model]
    specs = []
    for i, spec in enumerate(cfg.tune.space):
        where = f"tune.space[{i}] ({spec.key})"
        unknown = sorted(set(spec.models) - set(OBJECTIVES))
        if unknown:
            raise ConfigError(
                f"{where}: unknown model(s) {', '.join(unknown)} in models; valid: "
                f"{', '.join(OBJECTIVES)}"
            )
        if "mlp" in spec.models and "kan" not in spec.models:
            raise ConfigError(
                f"{where}: the MLP twin searches the KAN's space, so a spec for mlp must list kan"
            )
        if model not in spec.models:
            continue
        reason = tunable.check_key(spec.key) if tunable.check_key else None
        if reason:
            raise ConfigError(f"{where}: cannot be tuned for {model}: {reason}")
        specs.append(OmegaConf.to_container(spec, resolve=True))
    return specs


def _suggest(trial: Any, spec: dict[str, Any]) -> Any:
    key, kind = spec["key"], spec["type"]
    if kind == "categorical":
        return trial.suggest_categorical(key, list(spec["choices"]))
    if kind == "int":
        step = int(spec["step"]) if spec["step"] else 1
        return trial.suggest_int(
            key, int(spec["low"]), int(spec["high"]), step=step, log=bool(spec["log"])
        )
    return trial.suggest_float(
        key, float(spec["low"]), float(spec["high"]), step=spec["step"], log=bool(spec["log"])
    )


def _dotlist(params: dict[str, Any]) -> list[str]:
    return [f"{k}={json.dumps(v)}" for k, v in params.items()]


def _fingerprint(cfg: DictConfig, specs: list[dict[str, Any]]) -> dict[str, str]:
    """Every value of ``cfg`` that changes what a trial of a model with search space ``specs``
    computes, by dotted key (as JSON); of ``tune.space`` only that model's own ``specs``."""
    flat: dict[str, str] = {"tune.space": json.dumps(specs, sort_keys=True)}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif prefix != "tune.space" and not any(
            prefix == k or prefix.startswith(f"{k}.") for k in _NOT_FINGERPRINTED
        ):
            flat[prefix] = json.dumps(node, sort_keys=True)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def _counted(trial: Any) -> bool:
    """Whether a stored trial used up one of the budget's trials."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "error" in trial.user_attrs


def _enqueue_cut_off(study: Any, folder: Path, room: int) -> None:
    """Queue a continuation of each trial cut off mid-training whose run can be continued
    exactly (at most ``room``): a trial with the same values that takes over its run directory
    (:func:`_run_trial`). A trial already taken over, by a finished or a queued trial, is not."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    taken = {t.user_attrs["continues"] for t in trials if "continues" in t.user_attrs}
    room -= sum(t.state == TrialState.WAITING for t in trials)  # queued by an earlier session
    for t in trials:
        if room <= 0:
            return
        if t.state != TrialState.FAIL or _counted(t) or t.number in taken:
            continue
        if resumable_epochs(staging_dir(folder / f"{t.number:03d}")) is not None:
            study.enqueue_trial(t.params, user_attrs={"continues": t.number})
            room -= 1


def _take_over(study: Any, trial: Any, ctx: TrialContext) -> int | None:
    """Make ``trial`` continue the cut-off trial it was queued for: move that trial's run into
    ``trial``'s staging folder and report its epochs again; the epochs done, or ``None``."""
    number = trial.user_attrs.get("continues")
    if number is None:
        return None
    src = staging_dir(ctx.run_dir.parent / f"{number:03d}")
    done = resumable_epochs(src)
    if done is None:  # gone since it was queued: the same values, trained anew
        return None
    dst = staging_dir(ctx.run_dir)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(src, dst)
    [old] = (t for t in study.get_trials(deepcopy=False) if t.number == number)
    for step, value in sorted(old.intermediate_values.items()):
        if step < done:  # the pruner sees the whole curve; later epochs are trained again
            trial.report(value, step)
    ctx.resume = dst
    return done


def _same_config(study: Any, fingerprint: dict[str, str]) -> list[str]:
    """The keys whose values differ between ``fingerprint`` and the study's config (keys only
    one of them has, e.g. from a newer schema, are not compared)."""
    known = json.loads(study.user_attrs.get("config", "{}"))
    return sorted(k for k in known.keys() & fingerprint.keys() if known[k] != fingerprint[k])


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``folder`` (POSIX ``flock``) for the ``with`` block;
    a no-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _open_studies(
    cfg: DictConfig, spaces: dict[str, list[dict[str, Any]]], out: Path, mode: str
) -> dict[str, Any]:
    """The study of each model in ``spaces``, created or loaded from ``out``'s SQLite storage."""
    # One process per model may open a new optuna.db at the same moment (experiments/verdict.sh
    # does): Optuna's schema creation races ("table studies already exists"), so take turns.
    storage = f"sqlite:///{(out / DB_FILE).absolute()}"
    with _folder_lock(out):
        return {
            m: _open_study(cfg, m, storage, mode, _fingerprint(cfg, s)) for m, s in spaces.items()
        }


def _open_study(
    cfg: DictConfig, model: str, storage: str, mode: str, fingerprint: dict[str, str]
) -> Any:
    import optuna

    study = optuna.create_study(
        study_name=model,
        storage=storage,
        direction="minimize" if mode == "min" else "maximize",
        load_if_exists=True,
    )
    if "config" not in study.user_attrs:
        study.set_user_attr("config", json.dumps(fingerprint, sort_keys=True))
    differ = _same_config(study, fingerprint)
    if differ:
        known = json.loads(study.user_attrs["config"])
        short = lambda v: v if len(v) <= 40 else v[:37] + "..."  # noqa: E731
        shown = ", ".join(
            f"{k} {short(known[k])} there, {short(fingerprint[k])} now" for k in differ[:3]
        )
        raise ConfigError(
            f"{storage.removeprefix('sqlite:///')}: the '{model}' study there was made with "
            f"another config ({shown}{', ...' if len(differ) > 3 else ''}); use another --out "
            "or the same config"
        )
    # Trials left running by an interrupted earlier session: close them (not counted).
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.RUNNING:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    # A seed per session, so a resumed study does not replay the first session's draws.
    seed = int(cfg.seed) * 100_003 + len(study.trials)
    if cfg.tune.sampler == "random":
        study.sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        study.sampler = optuna.samplers.TPESampler(seed=seed)
    if cfg.tune.pruner == "median":
        study.pruner = optuna.pruners.MedianPruner(
            n_startup_trials=cfg.tune.prune_startup_trials,
            n_warmup_steps=cfg.tune.prune_warmup_epochs,
        )
    else:
        study.pruner = optuna.pruners.NopPruner()
    return study


def _trial_config(base: DictConfig, params: dict[str, Any], epochs: int | None) -> DictConfig:
    c = apply_overrides(base, _dotlist(params), source="tune trial")
    if epochs is not None:
        c.train.epochs = int(epochs)
    c.train.progress_bar = False
    c.train.resume = False
    validate_config(c)
    return c


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _run_trial(
    study: Any,
    model: str,
    base: DictConfig,
    specs: list[dict[str, Any]],
    data: Any,
    out: Path,
    metric: str,
    mode: str,
    epochs: int | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Ask for a trial (a queued continuation first), train it, tell the study; a record of
    what happened."""
    from optuna.trial import TrialState

    trial = study.ask()
    params = {spec["key"]: _suggest(trial, spec) for spec in specs}
    ctx = TrialContext(trial, data, out / "trials" / model / f"{trial.number:03d}", metric, mode)
    record: dict[str, Any] = {"model": model, "number": trial.number, "params": params}
    t0 = time.perf_counter()
    try:
        if OBJECTIVES[model].continues and (done := _take_over(study, trial, ctx)) is not None:
            log(
                f"  {model} trial {trial.number}: continuing cut-off trial "
                f"{trial.user_attrs['continues']} after epoch {done}"
            )
        cfg = _trial_config(base, params, epochs)
        value = OBJECTIVES[model].objective(cfg, ctx)
    except _TRIAL_ERRORS as err:
        trial.set_user_attr("error", str(err))
        study.tell(trial, state=TrialState.FAIL)
        return {**record, "state": "fail", "value": None, "error": str(err)}
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)  # interrupted or a bug: not counted
        raise
    record["seconds"] = time.perf_counter() - t0
    if ctx.pruned:
        study.tell(trial, state=TrialState.PRUNED)
        return {**record, "state": "pruned", "value": value, "pruned_at": ctx.pruned_at}
    if not math.isfinite(value):
        trial.set_user_attr("error", f"non-finite validation {metric}")
        study.tell(trial, state=TrialState.FAIL)
        return {**record, "state": "fail", "value": None, "error": f"validation {metric} {value}"}
    study.tell(trial, value)
    return {**record, "state": "complete", "value": value}


def _best(study: Any) -> Any:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not done:
        return None
    sign = 1.0 if study.direction.name == "MINIMIZE" else -1.0
    return min(done, key=lambda t: (sign * t.value, t.number))  # ties: the earlier trial


def _merged_overrides(cfg: DictConfig, tuned: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Per-model overrides: the base config's own (keys not tuned now) then the tuned values."""
    out: dict[str, list[str]] = {}
    old = OmegaConf.to_container(cfg.compare.model_overrides, resolve=True)
    for model in sorted(set(old) | set(tuned)):
        params = tuned.get(model, {})
        kept = [o for o in old.get(model, []) if o.split("=", 1)[0].strip() not in params]
        out[model] = kept + _dotlist(params)
    return out


def _held_values(cfg: DictConfig, model: str) -> dict[str, Any]:
    """The values ``model``'s trials held fixed for keys another kangnn model searches.

    The MLP twin's trials run at the config's grid size (its width is matched to a KAN of its
    own architecture at that grid); the KAN's tuned grid must not replace it when ``kangnn
    compare best-kan.yaml`` trains the twin, or the twin compared is not the twin tuned. Written
    into the model's overrides beside its tuned values."""
    function = OBJECTIVES[model].function
    if function is None:  # chemprop reads none of the kangnn models' keys
        return {}
    own = {s["key"] for s in search_space(cfg, model)}
    others = {
        s["key"]
        for m, t in OBJECTIVES.items()
        if m != model and t.function is not None
        for s in search_space(cfg, m)
    }
    base = for_model(cfg, function)
    return {key: OmegaConf.select(base, key) for key in sorted(others - own)}


def best_config(cfg: DictConfig, model: str, tuned: dict[str, dict[str, Any]]) -> DictConfig:
    """The config of ``model`` with its tuned values, carrying every tuned model's values in
    ``compare.model_overrides`` (so ``kangnn compare`` on it trains the tuned pair)."""
    c = cfg.copy()
    c.compare.model_overrides = _merged_overrides(cfg, tuned)
    function = OBJECTIVES[model].function
    c = for_model(c, function) if function else c
    validate_config(c)
    return c


@dataclass
class TuneResult:
    """A finished (or continued) search: its folder, the best trial of each model, all trials."""

    out_dir: Path
    best: dict[str, dict[str, Any]]
    trials: list[dict[str, Any]] = field(default_factory=list)
    table: str = ""


def _summary(
    out: Path,
    studies: dict[str, Any],
    best: dict[str, dict[str, Any]],
    spaces: dict[str, list[dict[str, Any]]],
    metric: str,
    mode: str,
    n_trials: int,
) -> tuple[list[dict[str, Any]], str]:
    from kangnn.reports import markdown_table

    rows = []
    for model, study in studies.items():
        for t in study.get_trials(deepcopy=False):
            dur = t.duration.total_seconds() if t.duration is not None else None
            error = t.user_attrs.get("error", "")
            if t.state.name == "FAIL" and not error:
                # Interrupted (closed when its study resumed, maybe a session later): its
                # start-to-close time is not a training time.
                error, dur = "interrupted", None
            steps = sorted(t.intermediate_values)
            rows.append(
                {
                    "model": model,
                    "number": t.number,
                    "state": t.state.name.lower(),
                    "counted": _counted(t),
                    f"val_{metric}": t.value,
                    "epochs": (steps[-1] + 1) if steps else None,
                    "seconds": dur,
                    "error": error,
                    "continues": t.user_attrs.get("continues"),
                    "params": json.dumps(t.params, sort_keys=True),
                }
            )
    tmp = out / ".trials.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["model"])
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    os.replace(tmp, out / "trials.csv")
    header = ["model", "trials", "complete", "pruned", "failed", f"best val {metric}", "trial"]
    body = []
    for model in studies:
        mine = [r for r in rows if r["model"] == model and r["counted"]]
        b = best.get(model)
        body.append(
            [
                model.upper(),
                f"{len(mine)}/{n_trials}",
                sum(r["state"] == "complete" for r in mine),
                sum(r["state"] == "pruned" for r in mine),
                sum(r["state"] == "fail" for r in mine),
                "n/a" if b is None else f"{b['value']:.4g}",
                "n/a" if b is None else b["number"],
            ]
        )
    table = markdown_table(header, body)
    better = "lower" if mode == "min" else "higher"
    lines = [
        "# kangnn tune",
        "",
        f"Selection on validation {metric} only ({better} is better); one split for every "
        f"trial; {n_trials} trials per model.",
        "",
        table,
        "",
    ]
    for model, b in best.items():
        values = ", ".join(f"{k}={_fmt(v)}" for k, v in b["params"].items())
        lines.append(f"- {model.upper()} best: {values}")
    lines.append("")
    for model, specs in spaces.items():
        lines.append(f"- {model.upper()} search space: " + ", ".join(s["key"] for s in specs))
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(
        json.dumps(
            {"metric": metric, "mode": mode, "trials": n_trials, "best": best, "space": spaces},
            indent=2,
        )
    )
    return rows, table


def tune(
    cfg: DictConfig,
    trials: int | None = None,
    models: Sequence[str] = ("kan", "mlp"),
    out_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> TuneResult:
    """Tune each of ``models`` with the same number of trials; write the best configs.

    Parameters
    ----------
    cfg:
        The experiment config, with its ``tune`` section (search space, pruner, sampler).
    trials:
        Trials per model (default ``tune.trials``); a rerun runs only the missing ones.
    models:
        Names in :data:`OBJECTIVES` (``kan``, ``mlp``, and what plugins register).
    out_dir:
        The study folder (default ``<output_dir>/tune-<name>-<conv>``); reused if it exists.
    log:
        Where progress lines go (one per trial).

    Returns
    -------
    TuneResult

    Raises
    ------
    ConfigError
        Bad trial count, unknown model, bad search space, or a study folder made with another
        config.
    """
    import optuna

    from kangnn.train.data import prepare_data
    from kangnn.train.run import quiet_lightning

    quiet_lightning()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    log = log or (lambda s: None)
    validate_config(cfg)
    n_trials = int(cfg.tune.trials if trials is None else trials)
    if n_trials < 1:
        raise ConfigError(f"the number of trials must be >= 1, got {n_trials}")
    _load_plugins()
    models = list(dict.fromkeys(models))
    unknown = [m for m in models if m not in OBJECTIVES]
    if not models or unknown:
        raise ConfigError(
            f"unknown model(s) to tune: {', '.join(unknown) or '(none)'}; valid: "
            f"{', '.join(OBJECTIVES)}"
        )
    spaces = {m: search_space(cfg, m) for m in models}
    bases = {}
    for m in models:
        function = OBJECTIVES[m].function
        base = for_model(cfg, function) if function else cfg.copy()
        base.compare.model_overrides = {}  # the trial's values are the last word
        bases[m] = base
    name = experiment_name(cfg)
    default_out = Path(cfg.output_dir) / f"tune-{name}-{cfg.model.conv}"
    out = Path(out_dir) if out_dir is not None else default_out

    data = prepare_data(cfg)  # one split for every trial of every model
    metric, mode = primary_metric(data.task)
    out.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(out / DB_FILE).absolute()}"
    studies = _open_studies(cfg, spaces, out, mode)
    log(
        f"{name}: tuning {', '.join(models)} with {n_trials} trials each on validation {metric} "
        f"({len(data.split['train'])}/{len(data.split['val'])} train/val molecules); {out}"
    )
    records = []
    for m in models:
        study = studies[m]
        done = sum(_counted(t) for t in study.get_trials(deepcopy=False))
        if OBJECTIVES[m].continues:
            _enqueue_cut_off(study, out / "trials" / m, n_trials - done)
        if done >= n_trials:
            log(f"  {m}: {done} trials already done")
        while done < n_trials:
            rec = _run_trial(
                study, m, bases[m], spaces[m], data, out, metric, mode, cfg.tune.epochs, log
            )
            done += 1
            records.append(rec)
            b = _best(study)
            best_note = "" if b is None else f" (best {b.value:.4g}, trial {b.number})"
            params = " ".join(f"{k}={_fmt(v)}" for k, v in rec["params"].items())
            if rec["state"] == "complete":
                what = f"val {metric} {rec['value']:.4g}"
            elif rec["state"] == "pruned":
                what = f"pruned after epoch {rec['pruned_at'] + 1}"
            else:
                what = f"failed: {rec['error']}"
            secs = f", {rec['seconds']:.0f} s" if "seconds" in rec else ""
            log(f"  {m} trial {done}/{n_trials}: {what}{best_note}{secs}; {params}")

    # Best configs from every study in the folder made with this config (a model tuned in an
    # earlier session keeps its values in the pair's overrides).
    for other in optuna.get_all_study_names(storage):
        if other in OBJECTIVES and other not in studies:
            s = optuna.load_study(study_name=other, storage=storage)
            fingerprint = _fingerprint(cfg, search_space(cfg, other))
            if "config" in s.user_attrs and not _same_config(s, fingerprint):
                studies[other] = s
    best: dict[str, dict[str, Any]] = {}
    for m, study in studies.items():
        b = _best(study)
        if b is not None:
            best[m] = {"value": b.value, "number": b.number, "params": dict(b.params)}
    tuned = {m: {**_held_values(cfg, m), **b["params"]} for m, b in best.items()}
    for m in best:
        path = out / f"best-{m}.yaml"
        save_config(best_config(cfg, m, tuned), path)
        best[m]["config"] = str(path)
    trials_rows, table = _summary(out, studies, best, spaces, metric, mode, n_trials)
    return TuneResult(out_dir=out, best=best, trials=trials_rows, table=table)
