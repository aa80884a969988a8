"""Smoke test of the layer benchmark: it runs, writes JSON and reports finite ratios."""

from __future__ import annotations

import json
import math

from kangnn.bench import layer


def test_layer_benchmark_writes_ratios(tmp_path, capsys):
    out = tmp_path / "layer.json"
    payload = layer.main(
        [
            "--batch",
            "256",
            "300",
            "--width",
            "8",
            "--threads",
            "1",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--out",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    assert saved["rows"] == payload["rows"]
    models = {r["model"] for r in saved["rows"]}
    assert models == {
        "kan-bspline",
        "kan-bspline-eager",
        "kan-rbf",
        "kan-chebyshev",
        "kan-fourier",
        "mlp",
        "kan-recursion",
    }
    assert {r["batch"] for r in saved["rows"]} == {256, 300}
    mlp = next(r for r in saved["rows"] if r["model"] == "mlp")
    kan = next(r for r in saved["rows"] if r["model"] == "kan-bspline")
    # The baseline is parameter-matched within 5%.
    assert abs(mlp["params"] - kan["params"]) <= 0.05 * kan["params"]
    for r in saved["rows"]:
        assert math.isfinite(r["time_vs_mlp"]) and r["time_vs_mlp"] > 0
        assert math.isfinite(r["mem_vs_mlp"]) and r["peak_mb"] > 0
    assert "time / MLP" in capsys.readouterr().out
