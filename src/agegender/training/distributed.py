"""Data-parallel training under `torchrun --nproc_per_node N` (gloo on CPU, NCCL on GPUs), for every model.

fit() is unchanged for the user: torchrun's RANK / WORLD_SIZE / LOCAL_RANK variables switch this on.
Every epoch each rank takes its rank::world share of a permutation all ranks draw alike, padded to a
multiple of the world size (what DistributedSampler does); cached activations are shared out once.
With `batch_size // world` images per rank and step the global batch stays `train.batch_size`;
DistributedDataParallel averages the gradients, metrics' sums and counts are added across ranks, and
only rank 0 writes files or prints.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.distributed as dist
from rich.console import Console
from torch import nn

from agegender.config import ConfigError
from agegender.data.dataset import LabelledArrays
from agegender.training.loop import RunningMeans


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch_ranks(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) when run directly."""
    environ = os.environ if environ is None else environ
    try:
        return int(environ.get("RANK", 0)), int(environ.get("WORLD_SIZE", 1)), int(environ.get("LOCAL_RANK", 0))
    except ValueError as error:
        raise ConfigError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({error})") from error


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'cpu', 'cuda' (this rank's GPU) or 'cuda:N'; a GPU request without a GPU is one clear error."""
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            found = f"this torch ({torch.__version__}) sees no CUDA GPU"
            raise ConfigError(f"train.device={name}, but {found}; use --device cpu")
        return torch.device(f"cuda:{local_rank}") if name == "cuda" else torch.device(name)
    raise ConfigError(f"unknown train.device '{name}'; choose cpu, cuda or cuda:N")


def init_distributed(device: str, environ: Mapping[str, str] | None = None) -> DistributedContext:
    """Join the torchrun process group when launched by torchrun; a plain single-process context otherwise."""
    rank, world, local_rank = launch_ranks(environ)
    context = DistributedContext(rank, world, local_rank, resolve_device(device, local_rank))
    if context.enabled and not dist.is_initialized():
        if context.device.type == "cuda":
            torch.cuda.set_device(context.device)
        dist.init_process_group("nccl" if context.device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return context


def shutdown_distributed(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_console(context: DistributedContext, console: Console) -> Console:
    """Rank 0 keeps the console; other ranks print nowhere."""
    return console if context.is_main else Console(file=io.StringIO())


def wrap_for_training(model: nn.Module, context: DistributedContext) -> nn.Module:
    if not context.enabled:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def rank_indices(order: torch.Tensor, context: DistributedContext, pad: bool = True) -> torch.Tensor:
    """This rank's rank::world share of `order`, padded by wrapping (training) so every rank steps as often."""
    n, world = len(order), context.world_size
    index = torch.arange(-(-n // world) * world) % max(n, 1) if pad else torch.arange(n)
    return order[index][context.rank :: world]


def epoch_shard(n: int, context: DistributedContext, generator: torch.Generator) -> torch.Tensor:
    """This rank's indices for one epoch: of a permutation identical on every rank (same seed, same draws)."""
    return rank_indices(torch.randperm(n, generator=generator), context)


def take(data: LabelledArrays, index: torch.Tensor) -> LabelledArrays:
    picked = index.numpy()
    ranges = None if data.age_range is None else data.age_range[picked]
    samples = [data.samples[i] for i in picked]
    weight = None if data.weight is None else data.weight[picked]
    return LabelledArrays(data.images[picked], data.age[picked], data.gender[picked], samples, ranges, weight)


def rank_epoch(batch_size: int, seed: int, epoch: int, context: DistributedContext) -> tuple[int, torch.Generator]:
    """This rank's batch size (the global batch stays `batch_size`) and its generator for the epoch's order
    within the shard, augmentation and mixup: different per rank, reproducible on --resume."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 1_009 + context.rank)
    return max(2, batch_size // context.world_size), generator


def reduce_running_means(means: RunningMeans, context: DistributedContext) -> None:
    """Add every rank's sums and counts, in place: each rank then holds the totals over all shares."""
    if not context.enabled:
        return
    keys_sum, keys_count = list(means.sums), list(means.counts)
    values = [means.sums[k] for k in keys_sum] + [means.counts[k] for k in keys_count]
    totals = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(totals)
    means.sums = {k: float(v) for k, v in zip(keys_sum, totals[: len(keys_sum)])}
    means.counts = {k: int(v) for k, v in zip(keys_count, totals[len(keys_sum) :])}


def broadcast_buffers(model: nn.Module, context: DistributedContext) -> None:
    """Rank 0's BatchNorm running statistics everywhere: each rank's last training step updated its own
    (DDP only broadcasts them before a forward), and rank 0's are the ones its checkpoint holds."""
    if context.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def barrier(context: DistributedContext) -> None:
    """Wait for every rank (e.g. for rank 0's best.safetensors before a new phase starts from it)."""
    if context.enabled:
        dist.barrier()
