"""Does a gender head that sees the age estimate tell children's gender better? (issue "Every face")

A controlled probe on one model's frozen features: two gender heads of the model's own shape are trained
from scratch on the same features of the train split (each face and its mirror image, drawn with the
run's sampling weights), one on the features alone, one on the features and the model's own age
distribution beside them (detached, as a head of the trained network would see it). Both are read on the
val split per dataset and on children 0-12, over several seeds; nothing here is reported as a result of
the bundled model, and no test split is touched.

    python tools/probe_gender_head.py runs/dlib_aaf_e2e/best.safetensors \
        --data ../shared/data/utkface --data runs/aaf --seeds 3 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from agegender.data.dataset import dataset_names, decode_split, make_splits, with_sampling_weights
from agegender.data.readers import as_folders, read_folders
from agegender.data.sampling import parse_sampling
from agegender.data.transforms import to_model_input
from agegender.evaluation.metrics import age_band, gender_accuracy
from agegender.models.checkpoint import load_checkpoint
from agegender.models.heads import GenderHead

CHILDREN = "0-12"  # evaluation.metrics' age band


def embed(model: nn.Module, images: np.ndarray, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2, C) features of each face and its mirror image, and (N, 2, A) the model's age distributions."""
    features, age_probs = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = to_model_input(images[start : start + batch])
            views = torch.cat([x, x.flip(3)])
            f = model.features(views)
            _, logits = model.age_head(f)
            n = len(x)
            features.append(torch.stack([f[:n], f[n:]], 1).numpy())
            age_probs.append(torch.stack([logits[:n], logits[n:]], 1).softmax(-1).numpy())
    return np.concatenate(features), np.concatenate(age_probs)


def train_head(inputs: np.ndarray, gender: np.ndarray, weight: np.ndarray, hidden: int, dropout: float,
               seed: int, epochs: int) -> nn.Module:  # fmt: skip
    """The model's gender head (models/heads.py) trained from scratch with Adam and a cosine rate on (N, 2, D) inputs."""
    torch.manual_seed(seed)
    head = GenderHead(inputs.shape[-1], hidden, dropout)
    labelled = ~np.isnan(gender)
    x, y, w = torch.from_numpy(inputs[labelled]), torch.from_numpy(gender[labelled]), weight[labelled]
    rng = np.random.default_rng(seed)
    steps_per_epoch = len(x) // 256
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    for _ in range(epochs * steps_per_epoch):
        picked = torch.from_numpy(rng.choice(len(x), 256, p=w / w.sum()))
        view = torch.from_numpy(rng.integers(0, 2, 256))
        logit = head(x[picked, view])
        loss = nn.functional.binary_cross_entropy_with_logits(logit, y[picked])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return head.eval()


def p_female(head: nn.Module, inputs: np.ndarray) -> np.ndarray:
    """Mirror-averaged P(female) of a gender head on (N, 2, D) inputs, as the bundled model predicts."""
    with torch.inference_mode():
        return torch.sigmoid(head(torch.from_numpy(inputs)).squeeze(-1)).mean(1).numpy()  # (N, 2, 1) -> (N,)


def scores(p: np.ndarray, gender: np.ndarray, age: np.ndarray, names: np.ndarray) -> dict[str, float]:
    out = {}
    for name in sorted(set(names)):
        part = names == name
        out[f"{name} val"] = gender_accuracy(gender[part], p[part])
        children = part & np.array([age_band(a) == CHILDREN for a in age])
        if children.any():
            out[f"{name} val 0-12"] = gender_accuracy(gender[children], p[children])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_checkpoint(args.model)
    model = loaded.model.eval()
    config = dataclasses.replace(loaded.config.data, path=tuple(map(str, as_folders(args.data))), image_size=loaded.image_size)
    read = read_folders(config.folders())
    splits = make_splits(read, config)
    train, _ = decode_split(splits.train, config)
    train = with_sampling_weights(train, read, config.folders(), parse_sampling(config.sampling, config.folders()))
    val, _ = decode_split(splits.val, config)
    print(f"train {len(train)}, val {len(val)}; sampling {list(config.sampling)}")
    train_f, train_a = embed(model, train.images)
    val_f, val_a = embed(model, val.images)
    names = np.array(dataset_names(val.samples, read) or ["val"] * len(val))
    weight = train.weight if train.weight is not None else np.ones(len(train))
    variants = {"features": (train_f, val_f),
                "features + age distribution": (np.concatenate([train_f, train_a], -1), np.concatenate([val_f, val_a], -1))}  # fmt: skip
    own = p_female(model.gender_head, val_f)
    print("the model's own head: " + ", ".join(f"{k} {100 * v:.2f}" for k, v in scores(own, val.gender, val.age, names).items()))
    hidden, dropout = loaded.config.model.head_hidden, loaded.config.model.dropout
    for name, (train_x, val_x) in variants.items():
        runs = [scores(p_female(train_head(train_x, train.gender, weight, hidden, dropout, seed, args.epochs), val_x),
                       val.gender, val.age, names) for seed in range(args.seeds)]  # fmt: skip
        shown = ", ".join(f"{k} {100 * np.mean([r[k] for r in runs]):.2f} (+-{100 * np.std([r[k] for r in runs]):.2f})"
                          for k in runs[0])  # fmt: skip
        print(f"{name}: {shown}")


if __name__ == "__main__":
    main()
