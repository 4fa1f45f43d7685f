"""Cydral ResNet-10 face age backbone (`--model cydral_resnet10`): size, speed, and what its frozen
features are worth on UTKFace before any fine-tuning.

    OMP_NUM_THREADS=1 python benchmarks/bench_cydral.py --data $AGEGENDER_DATA/utkface [--weights age-v1.onnx]

Prints: parameter counts; faces/s at batch 64 on one thread (PyTorch port, and onnxruntime on the
package's graph); the network's own expected age (its 81 probabilities, no training) on the first
1,000 chips of the full-data test split (UTKFace 200 px chips resized to 64 by the project's loader);
and linear read-outs (ridge age, logistic gender) fitted on the 4,000 training chips of the 5k
protocol from the pooled features, the probabilities, and both (what the heads see).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from agegender.config import DataConfig, ModelConfig
from agegender.data.dataset import prepare_data
from agegender.data.transforms import to_model_input
from agegender.models import create_model
from agegender.models.cydral_resnet import AGE_CLASSES, FEATURE_CHANNELS, age_probabilities
from agegender.models.pretrained import load_pretrained_weights, resolve_weights_path

BATCH = 64
TEST_FACES = 1000


def faces_per_second(run, x: torch.Tensor, seconds: float = 5.0) -> str:
    """'W/C': faces per wall second / per CPU second of this process (what one free core would give)."""
    run(x)  # warm-up
    calls, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        run(x)
        calls += 1
    faces = calls * len(x)
    return f"{faces / (time.perf_counter() - start):.0f}/{faces / (time.process_time() - cpu):.0f}"


def onnx_faces_per_second(path: Path, x: torch.Tensor) -> str:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return faces_per_second(lambda batch: session.run(None, {"images": batch.numpy()}), x)


@torch.no_grad()
def backbone_features(model, images: np.ndarray) -> torch.Tensor:
    """(N, 337): pooled features then the 81 age probabilities, on uint8 (N, 64, 64, 3) chips."""
    out = [model.features(to_model_input(images[i : i + 256], False)) for i in range(0, len(images), 256)]
    return torch.cat(out)


def ridge(train_x: torch.Tensor, train_y: torch.Tensor, l2: float = 1e-2) -> torch.Tensor:
    """Least squares with an intercept (standardised features); returns a predictor's weights."""
    x = torch.cat([train_x, torch.ones(len(train_x), 1)], 1).double()
    return torch.linalg.solve(x.T @ x + l2 * len(x) * torch.eye(x.shape[1], dtype=x.dtype), x.T @ train_y.double())


def logistic(train_x: torch.Tensor, train_y: torch.Tensor, l2: float = 1e-3, steps: int = 200) -> torch.nn.Linear:
    layer = torch.nn.Linear(train_x.shape[1], 1)
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(layer(train_x).squeeze(1), train_y)
        loss = loss + l2 * layer.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return layer


def linear_readouts(train: torch.Tensor, test: torch.Tensor, data, n_test: int) -> None:
    mean, std = train.mean(0), train.std(0) + 1e-6
    train, test = (train - mean) / std, (test - mean) / std
    age, gender = torch.from_numpy(data.train.age), torch.from_numpy(data.train.gender)
    test_age, test_gender = data.test.age[:n_test], data.test.gender[:n_test]
    columns = {"pooled 256": slice(0, FEATURE_CHANNELS), "probabilities 81": slice(FEATURE_CHANNELS, None),
               "both 337": slice(None)}  # fmt: skip
    for name, cols in columns.items():
        weights = ridge(train[:, cols], age)
        predicted = (torch.cat([test[:, cols], torch.ones(len(test), 1)], 1).double() @ weights).numpy()
        with torch.no_grad():
            female = (logistic(train[:, cols], gender)(test[:, cols]).squeeze(1) > 0).numpy()
        print(f"  linear read-out of {name:>16}: age MAE {np.abs(predicted - test_age).mean():.2f}, "
              f"gender accuracy {100 * (female == test_gender).mean():.1f}%")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--weights", type=Path, default=None, help="age-v1.onnx (default: the installed package's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = ModelConfig(name="cydral_resnet10", head_hidden=256, weights=str(args.weights) if args.weights else None)
    model = create_model(config).eval()
    weights = load_pretrained_weights(model, config)
    backbone = sum(p.numel() for p in model.backbone.parameters())
    print(f"weights {weights}; parameters: backbone {backbone:,} (81-way classifier {257 * AGE_CLASSES:,} of them), "
          f"with heads (head_hidden 256) {sum(p.numel() for p in model.parameters()):,}")  # fmt: skip

    x = torch.rand(BATCH, 3, 64, 64)
    with torch.no_grad():
        print(f"batch {BATCH}, one thread, faces/s (wall/CPU): PyTorch model {faces_per_second(model, x)}, "
              f"backbone alone {faces_per_second(model.backbone, model.normalize(x))}, onnxruntime age-v1.onnx "
              f"{onnx_faces_per_second(resolve_weights_path(config), model.normalize(x))}")  # fmt: skip

    data = prepare_data(DataConfig(path=str(args.data), image_size=64, limit=5000))
    start = time.perf_counter()
    train, test = backbone_features(model, data.train.images), backbone_features(model, data.test.images[:TEST_FACES])
    print(f"features of {len(train) + len(test)} chips in {time.perf_counter() - start:.1f}s")
    expected = (age_probabilities(test) @ torch.arange(AGE_CLASSES, dtype=torch.float32)).numpy()
    print(
        f"frozen expected age on {len(test)} test chips: MAE {np.abs(expected - data.test.age[:TEST_FACES]).mean():.2f}"
    )
    linear_readouts(train, test, data, TEST_FACES)


if __name__ == "__main__":
    main()
