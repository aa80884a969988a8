"""Experiment configuration: a structured OmegaConf schema, YAML loading and dotlist overrides.

A config is the YAML file of an experiment (``experiments/esol.yaml``) merged onto the schema
below, then the command-line overrides (``train.epochs=5 seed=3``) merged on top. Because the
schema is structured, an unknown key or a value of the wrong type fails; every such failure is a
:class:`ConfigError` with a one-line message naming the key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# The models and the function kinds are named where they are defined; the config only checks
# against those names. (``import kangnn`` loads both modules already, so this costs nothing.)
from kangnn.data.descriptors import DESCRIPTOR_SETS
from kangnn.models.gnn import CONV_REGISTRY
from kangnn.nn.functions import FUNCTIONS

__all__ = [
    "CONVS",
    "ChempropConfig",
    "ConfigError",
    "CompareConfig",
    "DatasetConfig",
    "ExperimentConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "default_config",
    "for_model",
    "load_config",
    "primary_metric",
    "save_config",
    "validate_config",
]

CONVS = tuple(CONV_REGISTRY)
READOUTS = ("sum", "mean", "max")
NORMS = ("batch", "layer", "none")
SPLITS = ("scaffold", "balanced_scaffold", "random", "column")
TASKS = ("regression", "classification")
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
AGGRS = ("sum", "mean", "max", "min")
OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = ("none", "cosine", "exponential")
DECAY_EXCLUDE = ("bias", "norm", "embedding", "spline")
#: Config sections and keys `compare.model_overrides` and `tune.space` may not set: they would
#: change the data, the pairing or the bookkeeping rather than the model or its training.
FIXED_KEYS = ("name", "seed", "output_dir", "dataset", "compare", "tune", "quick", "model.function")


class ConfigError(ValueError):
    """A bad configuration: unknown key, wrong type, bad value or unreadable file (one line)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


@dataclass
class DatasetConfig:
    """Which molecules, which targets and how they are split."""

    name: str | None = None  # a built-in MoleculeNet name (see `kangnn datasets`)
    root: str | None = None  # data root; null = $KANGNN_DATA or the repository's data/
    path: str | None = None  # a CSV of your own instead of a built-in dataset
    smiles_column: str | None = None
    target_columns: list[str] | None = None
    task: str | None = None  # regression | classification; null = the dataset's own
    skip_invalid: bool = False  # drop SMILES RDKit cannot parse instead of failing
    features: str = "ogb"  # ogb | rich | chemprop (see kangnn.data.featurize)
    # null | rdkit2d: whole-molecule descriptors fed to the model head and to chemprop
    # (see kangnn.data.descriptors)
    descriptors: str | None = None
    split: str = "scaffold"  # scaffold | balanced_scaffold | random | column | path/splits.json
    split_sizes: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    split_seed: int | None = None  # null = the run's seed (matters for random/balanced splits)
    split_column: str | None = None  # for split=column: a column holding train/val/test


@dataclass
class ModelConfig:
    """The molecule GNN; the same architecture serves the KAN model and its MLP baseline."""

    conv: str = "gin"  # gin | gine | mpnn | gated | dmpnn (depth = num_layers)
    # kan | mlp: the kind of learnable function inside message, update and head (the key names
    # the kind; the modules that implement them are kangnn.nn.KANFunction and MLPFunction)
    function: str = "kan"
    hidden_channels: int = 64  # node embedding width
    num_layers: int = 3  # message-passing layers
    readout: str = "sum"  # sum | mean | max
    dropout: float = 0.0
    norm: str = "batch"  # batch | layer | none
    aggr: str = "sum"  # neighbourhood aggregation of the mpnn conv
    # KAN functions
    grid_size: int = 5
    spline_order: int = 3
    basis: str = "bspline"
    function_hidden_channels: int | None = (
        None  # hidden width inside each KAN function; null = hidden_channels
    )
    function_layers: int = 2  # layers in each message/update/head function
    grid_init: str = "data"  # data: fit KAN grids to training molecules before training | fixed
    grid_range: list[float] = field(default_factory=lambda: [-1.0, 1.0])  # initial KAN grid
    kan_layer_norm: bool = True  # LayerNorm on each KAN layer's input after the first (ablation)
    grid_fit_sample: str = "random"  # random: a seeded random sample of train | first: file order
    grid_fit_molecules: int = 512  # training molecules the grids are fitted on
    grid_refresh_every: int = 0  # refit the grids every N epochs during training; 0 = never
    grid_refresh_until: int | None = None  # no refresh from this epoch on; null = to the end
    # MLP baseline
    mlp_hidden_channels: int | None = (
        None  # hidden width inside each MLP function; null = match params
    )
    match_tolerance: float = 0.05  # max relative parameter difference MLP vs KAN
    # torch.compile the whole model (dynamic shapes; one-off compile time; KAN and MLP alike)
    compile: bool = False


@dataclass
class TrainConfig:
    """Optimisation, stopping and hardware."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 20  # early stopping on the validation metric; 0 = off
    kan_reg_weight: float = 0.0  # weight of KAN's spline regularisation loss
    grad_clip: float | None = None  # clip gradients (Lightning's gradient_clip_val); null = off
    grad_clip_algorithm: str = "norm"  # norm (total 2-norm) | value
    optimizer: str = "adamw"  # adam (L2 penalty in the gradient) | adamw (decoupled decay)
    # parameter kinds trained without weight decay: bias | norm | embedding | spline
    decay_exclude: list[str] = field(default_factory=lambda: ["bias", "norm", "embedding"])
    spline_lr_scale: float = 3.0  # KAN spline coefficients' learning rate, times lr (ablation)
    scheduler: str = "cosine"  # after the warm-up: none (constant) | cosine | exponential
    warmup_epochs: float = 2.0  # linear warm-up from min_lr_ratio * lr to lr
    min_lr_ratio: float = 0.01  # start of the warm-up and end of the decay, times lr
    # exponential moving average of the weights after every optimiser step (Lightning's
    # EMAWeightAveraging); the average is what is validated, checkpointed and tested; null = off
    ema_decay: float | None = None
    accelerator: str = "auto"  # auto (a GPU when there is one) | cpu | gpu
    devices: Any = 1  # Lightning's devices: 1, 2, "auto", [0, 1]
    strategy: str = "auto"  # Lightning's strategy: auto | ddp | ddp_spawn
    num_workers: int = 0
    threads: int | None = None  # intra-op CPU threads (torch.set_num_threads); null = default
    deterministic: bool = True
    precision: str = "32"  # Lightning's: 32 | bf16-mixed | 16-mixed (KAN layers autocast-aware)
    progress_bar: bool = True
    resume: bool = False  # continue the latest run of this experiment from its last.ckpt


@dataclass
class CompareConfig:
    """The KAN-vs-MLP comparison."""

    seeds: int = 3  # seeds seed, seed+1, ..., seed+seeds-1
    isolate: bool = True  # each training run in its own process (clean time and memory figures)
    # Dotlist overrides per model (kan, mlp, ...), applied last whenever a run's model is fixed
    # (`train`, `compare`); `kangnn tune` writes each model's tuned values here.
    model_overrides: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ParamSpec:
    """One dimension of the `kangnn tune` search space."""

    key: str = ""  # the config key sampled, e.g. train.lr
    type: str = "float"  # float | int | categorical
    low: float | None = None  # float/int: bounds (inclusive)
    high: float | None = None
    log: bool = False  # float/int: sample on a log scale
    step: float | None = None  # float/int: grid step
    choices: list[Any] | None = None  # categorical: the values
    models: list[str] = field(default_factory=lambda: ["kan", "mlp"])  # who searches it


def _default_space() -> list[ParamSpec]:
    shared = [
        ParamSpec("train.lr", "float", 1e-4, 3e-3, log=True),
        ParamSpec("train.weight_decay", "categorical", choices=[0.0, 1e-5, 1e-4, 1e-3, 1e-2]),
        ParamSpec("model.dropout", "float", 0.0, 0.3, step=0.05),
        ParamSpec("model.num_layers", "int", 2, 5),
        ParamSpec("model.hidden_channels", "categorical", choices=[64, 128, 256]),
        ParamSpec("train.batch_size", "categorical", choices=[32, 64, 128]),
    ]
    kan_only = [
        ParamSpec("model.grid_size", "int", 3, 10, models=["kan"]),
        ParamSpec("train.spline_lr_scale", "categorical", choices=[0.3, 1.0, 3.0], models=["kan"]),
    ]
    # chemprop's own "basic" hpopt parameters and its max_lr (chemprop/cli/hpopt.py ranges;
    # widths capped at 1200 instead of 2400 to fit CPU budgets).
    chemprop = [
        ParamSpec("chemprop.depth", "int", 2, 6, models=["chemprop"]),
        ParamSpec("chemprop.message_hidden_dim", "int", 300, 1200, step=100, models=["chemprop"]),
        ParamSpec("chemprop.ffn_hidden_dim", "int", 300, 1200, step=100, models=["chemprop"]),
        ParamSpec("chemprop.ffn_num_layers", "int", 1, 2, models=["chemprop"]),
        ParamSpec("chemprop.dropout", "float", 0.0, 0.4, step=0.05, models=["chemprop"]),
        ParamSpec("chemprop.max_lr", "float", 1e-4, 1e-2, log=True, models=["chemprop"]),
    ]
    return shared + kan_only + chemprop


@dataclass
class TuneConfig:
    """`kangnn tune`: the same trial budget and shared search space for the KAN and its twin."""

    trials: int = 20  # trials per model (the default of --trials)
    epochs: int | None = None  # epochs per trial; null = train.epochs
    sampler: str = "tpe"  # tpe | random (Optuna samplers, seeded with `seed`)
    pruner: str = "median"  # median | none: stop a trial whose val metric trails the median
    prune_startup_trials: int = 3  # trials run to the end before pruning starts
    prune_warmup_epochs: int = 10  # epochs of a trial before it may be pruned
    space: list[ParamSpec] = field(default_factory=_default_space)


@dataclass
class ChempropConfig:
    """chemprop v2 (D-MPNN) as the external baseline of `compare --with chemprop`.

    The defaults are those of `chemprop train` 2.3.1; `compare.model_overrides.chemprop` (written
    by `kangnn tune --models chemprop`) gives the `chemprop-tuned` row. See kangnn.train.chemprop.
    """

    depth: int = 3  # message-passing steps
    message_hidden_dim: int = 300
    ffn_hidden_dim: int = 300
    ffn_num_layers: int = 1  # hidden layers of the FFN head (chemprop v2 semantics)
    dropout: float = 0.0
    activation: str = "relu"
    aggregation: str = "norm"  # norm | mean | sum
    aggregation_norm: float = 100.0
    batch_norm: bool = False
    atom_features: str = "v2"  # chemprop's multi-hot atom featurizer: v1 | v2 | organic | rigr
    epochs: int = 50
    batch_size: int = 64
    warmup_epochs: int = 2  # Noam-like schedule: init_lr -> max_lr, then decay to final_lr
    init_lr: float = 1e-4
    max_lr: float = 1e-3
    final_lr: float = 1e-4
    tracking_metric: str = "val_loss"  # checkpoint selection on validation: val_loss or a metric


@dataclass
class ExperimentConfig:
    """A whole experiment: data, model, training, comparison."""

    name: str | None = None  # used in run directory names; null = the dataset name
    seed: int = 0
    output_dir: str = "runs"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    chemprop: ChempropConfig = field(default_factory=ChempropConfig)
    quick: list[str] = field(default_factory=list)  # overrides applied by --quick


def default_config() -> DictConfig:
    """The schema with its defaults, as a structured (type-checked) ``DictConfig``."""
    return OmegaConf.structured(ExperimentConfig)


def _describe(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    msg = str(getattr(err, "msg", None) or err).splitlines()[0].strip()
    name = type(err).__name__
    if name == "ConfigKeyError" or "not in" in msg:
        return f"unknown config key '{key}'" if key else f"unknown config key ({msg})"
    if key:
        return f"bad value for config key '{key}': {msg}"
    return f"bad config: {msg}"


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        merged = OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}: {_describe(err)}") from None
    assert isinstance(merged, DictConfig)
    return merged


def apply_overrides(
    cfg: DictConfig, overrides: Sequence[str], source: str = "override"
) -> DictConfig:
    """Merge dotlist overrides (``["train.epochs=5", "seed=3"]``) onto ``cfg``.

    Raises
    ------
    ConfigError
        An override that is not ``key=value``, names an unknown key or has a wrong type.
    """
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"{source} '{item}' must look like key=value (e.g. train.epochs=5)")
    import yaml

    try:
        dot = OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}: {_describe(err)}") from None
    except yaml.YAMLError as err:  # a value OmegaConf parses as YAML, e.g. `k={a:[b]}`
        bad = next((o for o in overrides if _yaml_error(o)), " ".join(overrides))
        first = str(err).splitlines()[0]
        raise ConfigError(f"{source} '{bad}': the value is not valid YAML ({first})") from None
    return _merge(cfg, dot, source)


def _yaml_error(item: str) -> bool:
    try:
        OmegaConf.from_dotlist([item])
    except Exception:
        return True
    return False


def load_config(
    path: str | Path | None,
    overrides: Sequence[str] = (),
    quick: bool = False,
) -> DictConfig:
    """Load an experiment config: schema defaults ← YAML file ← (quick preset) ← overrides.

    Parameters
    ----------
    path:
        The YAML file, or ``None`` for the defaults alone.
    overrides:
        Dotlist overrides, applied last.
    quick:
        Apply the config's ``quick`` list of overrides (the fast preset) before ``overrides``.

    Returns
    -------
    DictConfig
        A structured config, validated with :func:`validate_config`.
    """
    cfg = default_config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = OmegaConf.load(p)
        except Exception as err:  # yaml.YAMLError and friends: report the first line only
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(f"{p}: cannot read YAML: {first}") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{p}: a config must be a mapping of keys to values")
        cfg = _merge(cfg, loaded, str(p))
    if quick:
        if not cfg.quick:
            raise ConfigError(f"{path}: --quick given but the config has no 'quick' overrides")
        cfg = apply_overrides(cfg, list(cfg.quick), source="quick preset")
    cfg = apply_overrides(cfg, overrides)
    validate_config(cfg)
    return cfg


def _choice(value: Any, key: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(
            f"bad value for config key '{key}': {value!r} is not one of {', '.join(choices)}"
        )


def _positive(value: Any, key: str, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"bad value for config key '{key}': {value!r} must be {bound}")


def validate_config(cfg: DictConfig) -> None:
    """Check the values the schema's types cannot (choices, ranges, required combinations).

    Raises
    ------
    ConfigError
        Naming the offending key.
    """
    d, m, t = cfg.dataset, cfg.model, cfg.train
    if d.name is None and d.path is None:
        raise ConfigError("config needs dataset.name (a built-in dataset) or dataset.path (a CSV)")
    if not str(d.split).endswith(".json"):  # a method, or a saved splits.json to reuse
        _choice(d.split, "dataset.split", SPLITS)
    if d.task is not None:
        _choice(d.task, "dataset.task", TASKS)
    if d.get("descriptors") is not None:
        _choice(d.descriptors, "dataset.descriptors", DESCRIPTOR_SETS)
    if d.split == "column" and not d.split_column:
        raise ConfigError("dataset.split=column needs dataset.split_column")
    sizes = list(d.split_sizes)
    if len(sizes) != 3 or any(s < 0 for s in sizes) or abs(sum(sizes) - 1.0) > 1e-6:
        raise ConfigError(
            f"bad value for config key 'dataset.split_sizes': {sizes} must be 3 fractions "
            "summing to 1"
        )
    _choice(m.conv, "model.conv", CONVS)
    _choice(m.function, "model.function", FUNCTIONS)
    _choice(m.readout, "model.readout", READOUTS)
    _choice(m.norm, "model.norm", NORMS)
    _choice(m.grid_init, "model.grid_init", ("data", "fixed"))
    _choice(m.aggr, "model.aggr", AGGRS)
    if m.conv == "dmpnn" and m.aggr != "sum":
        raise ConfigError(
            f"bad value for config key 'model.aggr': {m.aggr!r} with model.conv=dmpnn, whose "
            "bond messages are sums (use model.aggr=sum)"
        )
    from kangnn.kan import BASES

    _choice(m.basis, "model.basis", tuple(BASES))
    _choice(m.grid_fit_sample, "model.grid_fit_sample", ("random", "first"))
    _positive(m.grid_fit_molecules, "model.grid_fit_molecules")
    _positive(m.grid_refresh_every, "model.grid_refresh_every", allow_zero=True)
    _positive(m.grid_refresh_until, "model.grid_refresh_until", allow_zero=True)
    lo_hi = list(m.grid_range)
    if len(lo_hi) != 2 or not all(map(math.isfinite, lo_hi)) or not lo_hi[0] < lo_hi[1]:
        raise ConfigError(
            f"bad value for config key 'model.grid_range': {lo_hi} must be [low, high] with "
            "finite low < high"
        )
    for key in ("hidden_channels", "num_layers", "grid_size", "function_layers"):
        _positive(m[key], f"model.{key}")
    _positive(m.spline_order, "model.spline_order")  # a B-spline of order 0 has no derivative
    _positive(m.function_hidden_channels, "model.function_hidden_channels")
    _positive(m.mlp_hidden_channels, "model.mlp_hidden_channels")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(
            f"bad value for config key 'model.dropout': {m.dropout} must be in [0, 1)"
        )
    if not 0.0 < m.match_tolerance < 1.0:
        raise ConfigError(
            f"bad value for config key 'model.match_tolerance': {m.match_tolerance} must be "
            "in (0, 1)"
        )
    for key in ("epochs", "batch_size"):
        _positive(t[key], f"train.{key}")
    _positive(t.lr, "train.lr")
    _positive(t.threads, "train.threads")
    for key in ("weight_decay", "patience", "kan_reg_weight", "num_workers"):
        _positive(t[key], f"train.{key}", allow_zero=True)
    _positive(t.grad_clip, "train.grad_clip")
    _choice(t.grad_clip_algorithm, "train.grad_clip_algorithm", ("norm", "value"))
    _choice(t.optimizer, "train.optimizer", OPTIMIZERS)
    _choice(t.scheduler, "train.scheduler", SCHEDULERS)
    for i, kind in enumerate(t.decay_exclude):
        _choice(kind, f"train.decay_exclude[{i}]", DECAY_EXCLUDE)
    _positive(t.spline_lr_scale, "train.spline_lr_scale")
    _positive(t.warmup_epochs, "train.warmup_epochs", allow_zero=True)
    if not 0.0 < t.min_lr_ratio <= 1.0:
        raise ConfigError(
            f"bad value for config key 'train.min_lr_ratio': {t.min_lr_ratio} must be in (0, 1]"
        )
    if t.ema_decay is not None:
        if not 0.0 < t.ema_decay < 1.0:
            raise ConfigError(
                f"bad value for config key 'train.ema_decay': {t.ema_decay} must be in (0, 1) "
                "or null"
            )
        if m.grid_refresh_every > 0:
            # a refreshed grid re-expresses the coefficients; an average across it is meaningless
            raise ConfigError(
                "config key 'train.ema_decay' cannot be combined with "
                f"model.grid_refresh_every={m.grid_refresh_every}: set one of them off"
            )
    _validate_model_overrides(cfg)
    _validate_tune(cfg)
    _validate_chemprop(cfg)
    _choice(t.accelerator, "train.accelerator", ("cpu", "gpu", "cuda", "auto", "mps"))
    _choice(str(t.precision), "train.precision", PRECISIONS)
    _positive(cfg.compare.seeds, "compare.seeds")
    if isinstance(t.devices, (DictConfig,)):
        raise ConfigError("bad value for config key 'train.devices': expected int, str or list")
    if isinstance(t.devices, ListConfig) and not all(isinstance(v, int) for v in t.devices):
        raise ConfigError("bad value for config key 'train.devices': a list must hold device ids")


def primary_metric(task: str) -> tuple[str, str]:
    """The model-selection metric of a task and its direction.

    ``("rmse", "min")`` for regression, ``("roc_auc", "max")`` for classification.
    """
    return ("rmse", "min") if task == "regression" else ("roc_auc", "max")


def fixed_key(key: str) -> bool:
    """Whether ``key`` lies in :data:`FIXED_KEYS` (not settable per model or by tuning)."""
    return any(key == k or key.startswith(f"{k}.") or key.startswith(f"{k}[") for k in FIXED_KEYS)


def config_leaf(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` (dotted) names a value of ``cfg``, not a section or an unknown key."""
    missing = object()
    try:
        value = OmegaConf.select(cfg, key, default=missing)
    except OmegaConfBaseException:
        return False
    return value is not missing and not isinstance(value, DictConfig)


def _validate_model_overrides(cfg: DictConfig) -> None:
    for model, items in cfg.compare.model_overrides.items():
        where = f"compare.model_overrides.{model}"
        if model not in (*FUNCTIONS, "chemprop"):
            raise ConfigError(
                f"unknown model '{model}' in compare.model_overrides; valid: "
                f"{', '.join((*FUNCTIONS, 'chemprop'))}"
            )
        for item in items:
            key = str(item).split("=", 1)[0].strip()
            if "=" not in str(item) or not config_leaf(cfg, key):
                raise ConfigError(f"{where}: '{item}' must be key=value with a known config key")
            if fixed_key(key):
                raise ConfigError(f"{where}: '{key}' cannot be set per model")


def _validate_tune(cfg: DictConfig) -> None:
    tn = cfg.tune
    _positive(tn.trials, "tune.trials")
    _positive(tn.epochs, "tune.epochs")
    _choice(tn.sampler, "tune.sampler", ("tpe", "random"))
    _choice(tn.pruner, "tune.pruner", ("median", "none"))
    _positive(tn.prune_startup_trials, "tune.prune_startup_trials", allow_zero=True)
    _positive(tn.prune_warmup_epochs, "tune.prune_warmup_epochs", allow_zero=True)
    for i, spec in enumerate(tn.space):
        where = f"tune.space[{i}]"
        if not spec.key or not config_leaf(cfg, spec.key):
            raise ConfigError(f"{where}: unknown config key '{spec.key}' in the search space")
        if fixed_key(spec.key):
            raise ConfigError(f"{where}: '{spec.key}' cannot be tuned")
        _choice(spec.type, f"{where}.type", ("float", "int", "categorical"))
        if spec.type == "categorical":
            if not spec.choices:
                raise ConfigError(f"{where} ({spec.key}): a categorical needs choices")
            continue
        if spec.low is None or spec.high is None or not spec.low <= spec.high:
            raise ConfigError(
                f"{where} ({spec.key}): needs low <= high, got {spec.low}, {spec.high}"
            )
        if spec.log and spec.low <= 0:
            raise ConfigError(f"{where} ({spec.key}): a log scale needs low > 0")
        if spec.log and spec.step is not None:
            raise ConfigError(f"{where} ({spec.key}): step and log cannot be combined")


def _validate_chemprop(cfg: DictConfig) -> None:
    c = cfg.chemprop
    for key in ("depth", "message_hidden_dim", "ffn_hidden_dim", "ffn_num_layers", "epochs"):
        _positive(c[key], f"chemprop.{key}")
    for key in ("batch_size", "init_lr", "max_lr", "final_lr", "aggregation_norm"):
        _positive(c[key], f"chemprop.{key}")
    _positive(c.warmup_epochs, "chemprop.warmup_epochs", allow_zero=True)
    if not 0.0 <= c.dropout < 1.0:
        raise ConfigError(
            f"bad value for config key 'chemprop.dropout': {c.dropout} must be in [0, 1)"
        )
    _choice(c.aggregation, "chemprop.aggregation", ("norm", "mean", "sum"))
    _choice(c.atom_features, "chemprop.atom_features", ("v1", "v2", "organic", "rigr"))
    acts = ("relu", "leakyrelu", "prelu", "tanh", "elu")  # chemprop.nn.Activation
    _choice(c.activation, "chemprop.activation", acts)


def for_model(cfg: DictConfig, function: str | None = None) -> DictConfig:
    """A copy of ``cfg`` for one model: ``model.function`` set (if given), then that model's
    ``compare.model_overrides`` applied (idempotent: applying it again changes nothing)."""
    out = cfg.copy()
    if function is not None:
        out.model.function = function
    items = out.compare.model_overrides.get(out.model.function)
    if items:
        source = f"compare.model_overrides.{out.model.function}"
        out = apply_overrides(out, list(items), source=source)
    return out


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the fully resolved config as YAML."""
    Path(path).write_text(OmegaConf.to_yaml(cfg, resolve=True))
