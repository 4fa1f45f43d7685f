"""Training speed of Model A (or another from-scratch model, --model) on this machine: images/second
and seconds/epoch per input size.

    python benchmarks/bench_training.py --sizes 64 96 128 --steps 12
    python benchmarks/bench_training.py --model levi_hassner --sizes 64 --steps 12

Measures the median time of full training steps (uint8 -> float, augmentation, forward,
backward, optimizer) on random images, with and without channels_last, optionally torch.compile.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from agegender.config import AugmentConfig, ModelConfig, TrainConfig
from agegender.data.transforms import augment_batch, to_model_input
from agegender.models import create_model
from agegender.training.losses import MultiTaskLoss
from agegender.training.schedule import create_optimizer


def time_steps(size: int, batch: int, steps: int, channels_last: bool, compile_model: bool, name: str = "custom") -> float:
    """Median seconds per training step."""
    model = create_model(ModelConfig(name=name))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(model.parameters(), TrainConfig())
    forward = torch.compile(model) if compile_model else model
    loss_fn, augment = MultiTaskLoss.from_config(TrainConfig()), AugmentConfig()
    generator = torch.Generator().manual_seed(0)
    images = np.random.default_rng(0).integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
    age, gender = torch.rand(batch) * 80, (torch.rand(batch) > 0.5).float()
    times = []
    for step in range(steps + 2):  # first two steps warm up allocators (and compile)
        start = time.perf_counter()
        x = augment_batch(to_model_input(images, channels_last), augment, generator)
        parts = loss_fn(forward(x), age, gender)
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        optimizer.step()
        if step >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument("--epoch-images", type=int, nargs="+", default=[4000, 17588])
    parser.add_argument("--model", default="custom", help="a from-scratch model: custom | levi_hassner")
    args = parser.parse_args()
    print(f"{args.model}: torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}")
    print("| size | channels_last | compile | ms/step | images/s | " + " | ".join(f"s/epoch ({n})" for n in args.epoch_images) + " |")
    print("|---" * (5 + len(args.epoch_images)) + "|")
    variants = [(True, False), (False, False)] + ([(True, True)] if args.compile else [])
    for size in args.sizes:
        for channels_last, compile_model in variants:
            seconds = time_steps(size, args.batch, args.steps, channels_last, compile_model, args.model)
            rate = args.batch / seconds
            epochs = " | ".join(f"{n / rate:.0f}" for n in args.epoch_images)
            print(f"| {size} | {channels_last} | {compile_model} | {1000 * seconds:.0f} | {rate:.0f} | {epochs} |")


if __name__ == "__main__":
    main()
