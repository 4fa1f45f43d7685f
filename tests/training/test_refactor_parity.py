"""Seeded 1-epoch tiny runs of Model A and Model B (two phases) give the weights the training code
gave at commit 77dbc71, before the training paths became one phase runner.

The reference (data/refactor_parity.json) holds, per tensor, float64 sums (plain, absolute and
position-weighted, so a permutation shows) rather than the weights: Model B's backbone is a few MB.
Compared at rtol 1e-5, not bitwise: another CPU's SIMD kernels round differently (an AVX2-only
machine differs from the AVX-512 one that wrote the reference by up to 3e-6 relative, 8e-9 absolute,
after one epoch); a change of the training code moves these sums by far more. On the machine that
wrote the reference the runs were also checked bitwise equal.
Regenerate (only when a change of results is intended): AGEGENDER_WRITE_PARITY=1 pytest this file.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from agegender.config import ModelConfig
from agegender.training.callbacks import HistoryCSV
from tests.conftest import make_utkface, tiny_config
from tests.models.test_pretrained import write_random_weights

REFERENCE = Path(__file__).parent / "data" / "refactor_parity.json"
HISTORY_KEYS = ("train_loss", "val_loss", "val_age_mae")


def tensor_sums(tensor: torch.Tensor) -> list[float]:
    flat = tensor.detach().double().flatten()
    position = torch.arange(1, len(flat) + 1, dtype=torch.float64) / max(len(flat), 1)
    return [float(flat.sum()), float(flat.abs().sum()), float((flat * position).sum())]


def run_summary(run_dir: Path) -> dict:
    weights = {name: {k: tensor_sums(v) for k, v in load_file(str(run_dir / name)).items()}
               for name in ("last.safetensors", "best.safetensors")}  # fmt: skip
    rows = HistoryCSV(run_dir / "history.csv").rows()
    return {"weights": weights, "history": [[r["phase"], *(float(r[k]) for k in HISTORY_KEYS)] for r in rows]}


def model_a_config(root: Path):
    data = make_utkface(root / "utkface")
    return tiny_config(data.path, root / "cache", epochs=1, ema_decay=0.9, mixup_alpha=0.2, warmup_steps=2)


def model_b_config(root: Path):
    weights = root / "lite0.pth"
    write_random_weights("efficientnet_lite0", weights)
    config = replace(model_a_config(root), train=replace(model_a_config(root).train, feature_views=2))
    return replace(config, model=ModelConfig(name="efficientnet_lite0", head_hidden=8, weights=str(weights), unfreeze_blocks=2))


def train(config, run_dir: Path) -> dict:
    from agegender.training.fit import fit

    fit(config, run_dir, console=Console(file=io.StringIO()))
    return run_summary(run_dir)


def assert_matches(measured: dict, expected: dict) -> None:
    assert [row[0] for row in measured["history"]] == [row[0] for row in expected["history"]]
    for got, want in zip(measured["history"], expected["history"]):
        assert got[1:] == pytest.approx(want[1:], rel=1e-5, nan_ok=True)
    for name, tensors in expected["weights"].items():
        assert measured["weights"][name].keys() == tensors.keys(), name
        for key, sums in tensors.items():
            # tolerance scaled by the tensor's magnitude (its |w| sum): a signed sum that nearly cancels
            # differs relatively more between CPUs' float kernels (AVX2 vs AVX-512) than the weights do
            scale = 1e-5 * sums[1] + 1e-8
            assert measured["weights"][name][key] == pytest.approx(sums, rel=1e-5, abs=scale), f"{name}: {key}"


@pytest.mark.parametrize("model", ["model_a", "model_b"])
def test_seeded_tiny_runs_give_the_reference_weights(model, tmp_path):
    torch.set_num_threads(1)
    config = {"model_a": model_a_config, "model_b": model_b_config}[model](tmp_path)
    measured = train(config, tmp_path / "run")
    if os.environ.get("AGEGENDER_WRITE_PARITY"):
        reference = json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {}
        REFERENCE.write_text(json.dumps({**reference, model: measured}, sort_keys=True, separators=(",", ":")) + "\n")
    assert_matches(measured, json.loads(REFERENCE.read_text())[model])
