"""Batch sources: what a training phase steps over. Each yields (x, age (B, 2), gender (B,)) batches on
the model's device, a shuffled pass for training and a fixed-order pass for evaluation.

    ImageBatches   decoded uint8 images, augmented on the fly (Model A; Model B's end-to-end phase)
    CachedBatches  activations of the frozen part of a pretrained backbone, computed once (Model B)

Caching is exact because frozen layers, BatchNorm included, run in eval mode. Augmentation becomes a
fixed pool of `train.feature_views` views per training image (original, mirrored, then randomly
augmented ones); each epoch draws one view per image. Under torchrun each rank caches its share once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np
import torch
from torch import nn

from agegender.config import AugmentConfig, RunConfig
from agegender.data.dataset import LabelledArrays, PreparedData
from agegender.data.transforms import augment_batch, to_model_input
from agegender.errors import UserInputError
from agegender.training.distributed import DistributedContext, epoch_shard, rank_indices, take
from agegender.training.loop import batch_indices, batch_labels

MAX_CACHE_BYTES = 4 * 2**30  # activations kept in memory; beyond this, ask for fewer views or blocks
EVAL_BATCH = 256
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x, age (B, 2) [low, high], gender (B,)


class FinetuneError(UserInputError):
    """A fine-tuning setting cannot work with this model or data."""


@dataclass(frozen=True)
class ImageBatches:
    data: LabelledArrays
    augment: AugmentConfig | None  # None: evaluation data
    channels_last: bool
    device: torch.device

    def __len__(self) -> int:
        return len(self.data)

    def epoch_shard(self, generator: torch.Generator, context: DistributedContext) -> ImageBatches:
        """Under torchrun: this rank's part of a permutation drawn anew each epoch, the same on every rank."""
        return replace(self, data=take(self.data, epoch_shard(len(self.data), context, generator)))

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        for index in batch_indices(len(self.data), batch_size, generator, self.data.weight):
            if len(index) < 2:  # BatchNorm cannot train on a single image
                continue
            x = to_model_input(self.data.images[index.numpy()], self.channels_last)  # (B, 3, S, S)
            age, gender = batch_labels(self.data, index)
            if self.augment is not None:
                x = augment_batch(x, self.augment, generator)  # on the CPU, where the generator lives
            yield x.to(self.device), age.to(self.device), gender.to(self.device)

    def eval_batches(self) -> Iterator[Batch]:
        for index in batch_indices(len(self.data), EVAL_BATCH, None):
            x = to_model_input(self.data.images[index.numpy()], self.channels_last).to(self.device)
            yield x, *batch_labels(self.data, index, self.device)


@dataclass(frozen=True)
class CachedBatches:
    cache: torch.Tensor  # (views, N, C) pooled features or (views, N, C, h, w) activations, on the CPU
    labels: LabelledArrays  # the N cached images' labels
    channels_last: bool
    device: torch.device

    def __len__(self) -> int:
        return self.cache.shape[1]

    def epoch_shard(self, generator: torch.Generator, context: DistributedContext) -> CachedBatches:
        return self  # each rank cached its own share once

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """One pass over the images, each seen through one randomly drawn cached view."""
        view_of = torch.randint(self.cache.shape[0], (len(self),), generator=generator)  # (N,)
        for index in batch_indices(len(self), batch_size, generator, self.labels.weight):
            if len(index) < 2:
                continue
            yield self._batch(view_of[index], index), *batch_labels(self.labels, index, self.device)

    def eval_batches(self) -> Iterator[Batch]:
        for index in batch_indices(len(self), EVAL_BATCH, None):
            yield self._batch(torch.zeros_like(index), index), *batch_labels(self.labels, index, self.device)  # view 0

    def _batch(self, views: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        x = self.cache[views, index].to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and self.channels_last else x


class FromBlock(nn.Module):
    """What a pretrained model's phase runs: the backbone blocks from `first_trained_block` on, pooling
    and the heads, on cached activations (None: the whole model, on images, for the end-to-end phase).
    In train mode only the heads' dropout trains: every BatchNorm keeps its running statistics (the
    usual advice for fine-tuning with small batches), so the cache stays valid; dlib's affine layers
    are BatchNorms whose statistics hold its scale and shift, which batch statistics would replace."""

    def __init__(self, model: nn.Module, first_trained_block: int | None):
        super().__init__()
        self.model, self.first_trained_block = model, first_trained_block

    def forward(self, activations: torch.Tensor):
        model = self.model
        if self.first_trained_block is None:
            return model(activations)  # (B, 3, S, S) images
        if self.first_trained_block == len(model.backbone):
            return model.heads(activations)  # (B, C) already pooled
        return model.heads(model.pool(model.backbone[self.first_trained_block :](activations)).flatten(1))  # (B, C)

    def train(self, mode: bool = True) -> FromBlock:
        self.training = mode
        self.model.eval()
        if mode:
            self.model.gender_head.train()
            self.model.age_head.train()
        return self


def make_view(x: torch.Tensor, view: int, augment: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """View 0: the image; view 1: mirrored; later views: random training augmentation."""
    if view == 0:
        return x
    if view == 1:
        return x.flip(-1)
    return augment_batch(x, augment, generator)


@torch.no_grad()
def frozen_prefix(model: nn.Module, x: torch.Tensor, split_points: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """Activations entering each block index in `split_points`, from one pass through the backbone;
    at index len(backbone) (every block frozen) the pooled (B, C) features."""
    outputs, activations, done = {}, model.normalize(x), 0
    for point in sorted(split_points):
        activations = model.backbone[done:point](activations)  # (B, C, h, w)
        done = point
        outputs[point] = model.pool(activations).flatten(1) if point == len(model.backbone) else activations
    return outputs


@torch.no_grad()
def cache_activations(model: nn.Module, images: np.ndarray, split_points: tuple[int, ...], views: int,
                      augment: AugmentConfig, generator: torch.Generator, channels_last: bool,
                      batch_size: int = 128) -> dict[int, torch.Tensor]:  # fmt: skip
    """split point -> (views, N, ...) frozen-prefix activations of uint8 (N, S, S, 3) images, computed once."""
    model.eval()
    caches: dict[int, torch.Tensor] = {}
    device = next(model.parameters()).device
    for begin in range(0, len(images), batch_size):
        x = to_model_input(images[begin : begin + batch_size], channels_last)
        for view in range(views):  # views are made on the CPU (the generator's), the cache lives there too
            outputs = frozen_prefix(model, make_view(x, view, augment, generator).to(device), split_points)
            for point, out in outputs.items():
                if point not in caches:
                    caches[point] = allocate_cache(views, len(images), out.shape[1:])
                caches[point][view, begin : begin + len(out)] = out.cpu()
    return caches


def allocate_cache(views: int, n: int, shape: torch.Size) -> torch.Tensor:
    nbytes = views * n * int(np.prod(shape)) * 4
    if nbytes > MAX_CACHE_BYTES:
        raise FinetuneError(
            f"caching {views} views x {n} images of {tuple(shape)} activations needs {nbytes / 2**30:.1f} GiB; "
            "lower train.feature_views, model.unfreeze_blocks or data.image_size"
        )
    return torch.empty(views, n, *shape)


def rank_share(data: LabelledArrays, context: DistributedContext, pad: bool) -> LabelledArrays:
    """This rank's fixed share, padded for training (see rank_indices)."""
    return take(data, rank_indices(torch.arange(len(data)), context, pad)) if context.enabled else data


def build_cached_sources(model: nn.Module, split_points: tuple[int, ...], data: PreparedData, config: RunConfig,
                         context: DistributedContext) -> dict[int, tuple[CachedBatches, CachedBatches]]:  # fmt: skip
    """(train, val) sources for every split point in one pass: phase 1 also prepares phase 2's (its prefix
    stays frozen)."""
    views_generator = torch.Generator().manual_seed(config.data.seed + context.rank)  # same views on resume
    train, val = rank_share(data.train, context, pad=True), rank_share(data.val, context, pad=False)
    views, augment, cl = config.train.feature_views, config.augment, config.train.channels_last
    train_caches = cache_activations(model, train.images, split_points, views, augment, views_generator, cl)
    val_caches = cache_activations(model, val.images, split_points, 1, augment, views_generator, cl)
    if not train_caches or not val_caches:
        raise FinetuneError("no training or validation images to cache")

    def source(cache: torch.Tensor, labels: LabelledArrays) -> CachedBatches:
        return CachedBatches(cache, labels, config.train.channels_last, context.device)

    return {p: (source(train_caches[p], train), source(val_caches[p], val)) for p in split_points}


def image_sources(data: PreparedData, config: RunConfig, context: DistributedContext) -> tuple[ImageBatches, ...]:
    """(augmented training images, this rank's validation images)."""
    cl, device = config.train.channels_last, context.device
    train = ImageBatches(data.train, config.augment, cl, device)
    return train, ImageBatches(rank_share(data.val, context, pad=False), None, cl, device)

