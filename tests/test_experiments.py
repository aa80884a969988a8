"""Committed experiment configs that are derived from committed results."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from kangnn.config import for_model, load_config

ROOT = Path(__file__).resolve().parents[1]
# The protocol keys HIV sets for itself (its length); every other model and train value must be
# the one BBBP's tuning chose.
HIV_PROTOCOL = {"epochs", "patience", "warmup_epochs"}


def test_hiv_config_trains_what_bbbp_tuning_chose() -> None:
    """experiments/hiv-dmpnn.yaml carries BBBP's tuned KAN and MLP over to HIV: for each model,
    the model and training sections equal those of BBBP's best-<model>.yaml but for HIV's
    protocol length, so a re-tuning of BBBP cannot leave HIV's rows on stale values unnoticed."""
    hiv = load_config(ROOT / "experiments" / "hiv-dmpnn.yaml")
    tuned = ROOT / "experiments" / "results" / "bbbp" / "tune-dmpnn"
    for model in ("kan", "mlp"):
        bbbp = load_config(tuned / f"best-{model}.yaml")
        ours, theirs = for_model(hiv, model), for_model(bbbp, model)
        assert OmegaConf.to_container(ours.model) == OmegaConf.to_container(theirs.model), model
        train = {k: v for k, v in ours.train.items() if k not in HIV_PROTOCOL}
        assert train == {k: v for k, v in theirs.train.items() if k not in HIV_PROTOCOL}, model
        assert ours.dataset.features == theirs.dataset.features == "chemprop"
        assert (ours.dataset.name, ours.train.epochs, ours.train.patience) == ("hiv", 30, 0)
    assert not hiv.compare.model_overrides.get("chemprop")  # chemprop at its defaults only
