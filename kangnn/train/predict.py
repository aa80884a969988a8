"""Predictions of a trained run for new molecules."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch_geometric.loader import DataLoader

from kangnn.data import DataError, InvalidSmilesError, smiles_to_graph
from kangnn.data.descriptors import cached_descriptors
from kangnn.data.io import read_csv
from kangnn.files import atomic_write

__all__ = ["predict_csv", "predict_smiles"]


@torch.no_grad()
def predict_smiles(module: torch.nn.Module, graphs: list, batch_size: int = 256) -> torch.Tensor:
    """Predictions ``[N, T]`` (original units, or probabilities) for featurised graphs."""
    module.eval()
    out = [module.predict_batch(b) for b in DataLoader(graphs, batch_size=batch_size)]
    return torch.cat(out) if out else torch.empty(0, module.hparams.num_tasks)


def predict_csv(
    run_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    smiles_column: str | None = None,
    batch_size: int = 256,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Predict every molecule of a CSV with the best checkpoint of ``run_dir``.

    The output holds the input's columns followed by ``<target>_pred`` per target (original units
    for regression, probabilities of class 1 for classification), written atomically. Invalid
    SMILES follow the run's policy: an error naming the line, or, with ``dataset.skip_invalid``,
    the row is left out and counted.

    Parameters
    ----------
    run_dir:
        A finished ``kangnn train`` run.
    input_path:
        CSV with a header and a SMILES column.
    output_path:
        CSV to write.
    smiles_column:
        The SMILES column (default: the run's ``dataset.smiles_column``, else ``smiles``).

    Returns
    -------
    Path
        ``output_path``.
    """
    from kangnn.train.run import load_run

    log = log or (lambda s: None)
    cfg, module, metrics = load_run(run_dir)
    src = Path(input_path)
    if not src.is_file():
        raise DataError(f"input file not found: {src}")
    column = smiles_column or cfg.dataset.smiles_column or "smiles"
    features = cfg.dataset.features
    rows: list[list[str]] = []
    graphs = []
    skipped = 0
    with read_csv(src) as table:
        header = list(table.header)
        s_idx = table.column_index(column, "SMILES")
        for line, fields in table.rows():
            smi = fields[s_idx] if s_idx < len(fields) else ""
            try:
                g = smiles_to_graph(smi, features)
            except InvalidSmilesError as err:
                if cfg.dataset.skip_invalid:
                    skipped += 1
                    continue
                raise InvalidSmilesError(
                    smi,
                    err.reason,
                    path=src,
                    line=line,
                    column=column,
                    hint="the run was trained with dataset.skip_invalid=false",
                ) from None
            graphs.append(g)
            rows.append(fields)
    if not graphs:
        raise DataError(f"{src}: no valid molecules to predict")
    kind = cfg.dataset.get("descriptors")
    if kind:
        x = cached_descriptors([g.smiles for g in graphs], kind)
        for g, row in zip(graphs, x, strict=True):
            g.descriptors = row.unsqueeze(0)
    preds = predict_smiles(module, graphs, batch_size)
    names = metrics["target_names"]

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header + [f"{n}_pred" for n in names])
    for fields, p in zip(rows, preds.tolist(), strict=True):
        w.writerow(list(fields) + [f"{v:.6g}" for v in p])
    out = atomic_write(output_path, lambda f: f.write(buf.getvalue().encode("utf-8")))
    if skipped:
        log(f"skipped {skipped} invalid SMILES (dataset.skip_invalid=true)")
    return out


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `kangnn predict`")
