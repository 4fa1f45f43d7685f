"""Phase-1 fine-tuning speed: heads trained on cached backbone features vs the naive way.

    python benchmarks/bench_finetune.py --n 4000                       # the README's numbers (30 epochs)
    python benchmarks/bench_finetune.py --n 200 --epochs 2 --naive-epochs 2   # a quick check

Both variants train the same heads for the same epochs on the same N UTKFace images, with the
EfficientNet-Lite0 ImageNet backbone frozen (BatchNorm in eval mode in both):
  cached  training/sources.py: backbone features computed once per view (`--views`: original,
          mirrored, augmented), then every epoch is heads-only work on (N, 1280) features;
  naive   every batch is augmented and sent through the frozen backbone, every epoch.
Wall time includes the one-off caching (about `--views` frozen forward passes), so the speed-up grows
with the number of epochs. Every naive epoch costs the same, so only `--naive-epochs` of them are run
and the rest extrapolated (said so in the output); the cached variant runs all `--epochs`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch

from agegender.config import AugmentConfig, DataConfig, ModelConfig, RunConfig, TrainConfig
from agegender.data.dataset import LabelledArrays, decode_split
from agegender.data.readers import read_folder
from agegender.data.transforms import augment_batch, to_model_input
from agegender.models import create_model
from agegender.models.pretrained import load_pretrained_weights
from agegender.training.averaging import WeightAverage
from agegender.training.callbacks import EarlyStopping
from agegender.training.distributed import DistributedContext
from agegender.training.engine import Phase, PhaseRun, plan_phases, set_trainable, train_epoch
from agegender.training.loop import batch_indices
from agegender.training.losses import MultiTaskLoss
from agegender.training.schedule import EpochScheduler, Warmup, create_optimizer
from agegender.training.sources import FromBlock, build_cached_sources

DATA_ROOT = Path(os.environ.get("AGEGENDER_DATA", "../shared/data"))  # the datasets (docs/data.md)


def load_images(path: Path, n: int, image_size: int) -> LabelledArrays:
    samples = read_folder(path).samples[:n]
    arrays, _ = decode_split(samples, DataConfig(path=str(path), image_size=image_size))
    return arrays


def fresh_model(config: RunConfig, data: LabelledArrays) -> torch.nn.Module:
    model = create_model(config.model).to(memory_format=torch.channels_last)
    load_pretrained_weights(model, config.model)
    set_trainable(model, len(model.backbone))
    with torch.no_grad():  # warm-up: the first passes at a new batch shape pick kernels, time neither variant's
        for size in (config.train.batch_size, 128):
            model.eval()(to_model_input(data.images[:size]))
    return model


def naive_epoch(model, data: LabelledArrays, loss_fn, optimizer, augment: AugmentConfig, batch_size: int, generator) -> None:
    FromBlock(model, len(model.backbone)).train()  # BatchNorm in eval mode, the heads' dropout trains
    for index in batch_indices(len(data), batch_size, generator):
        x = augment_batch(to_model_input(data.images[index.numpy()]), augment, generator)
        output = model(x)
        parts = loss_fn(output, torch.from_numpy(data.age[index.numpy()]), torch.from_numpy(data.gender[index.numpy()]))
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        optimizer.step()


def time_naive(config: RunConfig, data: LabelledArrays, epochs: int) -> list[float]:
    model, loss_fn = fresh_model(config, data), MultiTaskLoss.from_config(config.train)
    optimizer = create_optimizer([p for p in model.parameters() if p.requires_grad], config.train)
    generator, seconds = torch.Generator().manual_seed(0), []
    for _ in range(epochs):
        start = time.perf_counter()
        naive_epoch(model, data, loss_fn, optimizer, config.augment, config.train.batch_size, generator)
        seconds.append(time.perf_counter() - start)
    return seconds


def time_cached(config: RunConfig, data: LabelledArrays, epochs: int) -> tuple[float, list[float]]:
    model, loss_fn = fresh_model(config, data), MultiTaskLoss.from_config(config.train)
    phase: Phase = plan_phases(model, config)[0]
    optimizer = create_optimizer([p for p in model.parameters() if p.requires_grad], config.train)
    few = LabelledArrays(data.images[:8], data.age[:8], data.gender[:8], data.samples[:8])  # val: not timed apart
    prepared = SimpleNamespace(train=data, val=few)  # build_cached_sources reads .train and .val only
    start = time.perf_counter()
    point = phase.first_trained_block
    source, _ = build_cached_sources(model, (point,), prepared, config, DistributedContext())[point]
    cache_seconds = time.perf_counter() - start
    run = PhaseRun(
        phase=phase, optimizer=optimizer, scheduler=EpochScheduler(optimizer, config.train, epochs),
        stopper=EarlyStopping(epochs, 0.0), generator=torch.Generator().manual_seed(0), warmup=Warmup(0),
        average=WeightAverage(model, 0.0), train_module=FromBlock(model, point),
    )  # fmt: skip
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        train_epoch(run, source.train_batches(config.train.batch_size, run.generator), loss_fn, 0.0, run.generator)
        seconds.append(time.perf_counter() - start)
    return cache_seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA_ROOT / "utkface")
    parser.add_argument("--n", type=int, default=4000, help="training images")
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs, help="phase-1 epochs (train.epochs bounds phase 1)")
    parser.add_argument("--naive-epochs", type=int, default=3, help="naive epochs actually run (then extrapolated)")
    parser.add_argument("--views", type=int, default=4, help="cached views per image (train.feature_views)")
    parser.add_argument("--image-size", type=int, default=DataConfig().image_size)
    parser.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = RunConfig(
        data=DataConfig(path=str(args.data), image_size=args.image_size),
        model=ModelConfig(name="efficientnet_lite0"),
        train=replace(TrainConfig(), batch_size=args.batch_size, feature_views=args.views),
    )
    data = load_images(args.data, args.n, args.image_size)
    print(f"efficientnet_lite0 phase 1, {len(data)} images at {args.image_size} px, {args.epochs} epochs, "
          f"batch {args.batch_size}, {args.views} cached views, {torch.get_num_threads()} threads")  # fmt: skip
    cache_seconds, cached = time_cached(config, data, args.epochs)
    run_naive = min(args.epochs, args.naive_epochs)
    naive = time_naive(config, data, run_naive)
    naive_epoch_s, cached_epoch_s = statistics.median(naive), statistics.median(cached)
    cached_total = cache_seconds + sum(cached)
    naive_total = sum(naive) + (args.epochs - run_naive) * naive_epoch_s
    estimated = f" ({run_naive} run, {args.epochs - run_naive} at the median)" if run_naive < args.epochs else ""
    print("| variant | one-off caching s | median epoch s | total s |")
    print("|---|---|---|---|")
    print(f"| cached features | {cache_seconds:.1f} | {cached_epoch_s:.2f} | {cached_total:.1f} |")
    print(f"| naive frozen backbone | - | {naive_epoch_s:.2f} | {naive_total:.1f}{estimated} |")
    print(f"phase-1 speed-up over {args.epochs} epochs: {naive_total / cached_total:.1f}x")
    break_even = cache_seconds / max(naive_epoch_s - cached_epoch_s, 1e-9)
    print(f"caching pays for itself after {break_even:.1f} epochs")


if __name__ == "__main__":
    main()
