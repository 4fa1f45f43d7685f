"""An ensemble of trained models that behaves like one model (one input, one ModelOutput).

Members may take different input sizes (Model A 64 px, Model B 160 px): the ensemble takes the
largest and shrinks it for each smaller member with an exact area average written as two matrix
products, so it runs unchanged on PyTorch and in an exported ONNX graph. Members' P(female) and
ages are averaged, with equal weights or with one weight per member and task (members differ in what
they are good at: a face-recognition backbone at gender, an age network at age); the gender logit
returned is the logit of the mean probability.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from agegender.models.heads import ModelOutput

PROBABILITY_EPSILON = 1e-6  # keeps the logit of an averaged probability finite


def area_resize_matrix(source: int, target: int) -> torch.Tensor:
    """(target, source) weights: row i averages the source pixels under output pixel i, counting
    partly covered pixels by the covered fraction (cv2.INTER_AREA; Pillow's BOX for whole pixels)."""
    if not 0 < target <= source:
        raise ValueError(f"area resize shrinks only: {source} -> {target}")
    scale = source / target
    edges = torch.arange(target + 1, dtype=torch.float64) * scale  # output pixel i spans [edges[i], edges[i+1])
    pixel = torch.arange(source, dtype=torch.float64)
    overlap = (torch.minimum(edges[1:, None], pixel[None, :] + 1) - torch.maximum(edges[:-1, None], pixel[None, :])).clamp(min=0)
    return (overlap / scale).float()


class AreaResize(nn.Module):
    """(B, C, S, S) -> (B, C, s, s) by an area average; the identity when s == S."""

    def __init__(self, source: int, target: int):
        super().__init__()
        self.register_buffer("rows", area_resize_matrix(source, target), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows @ x @ self.rows.T


def normalised_weights(weights: list[float] | None, n: int) -> torch.Tensor:
    """(n,) weights summing to 1; None -> equal weights."""
    if weights is None:
        return torch.full((n,), 1.0 / n)
    if len(weights) != n or not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"need {n} finite non-negative member weights with a positive sum, got {weights}")
    tensor = torch.tensor(weights, dtype=torch.float32)
    return tensor / tensor.sum()


def weighted_mean(values: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """sum_i weights[i] * values[i] over the members (each value (B, ...))."""
    stacked = torch.stack(values)  # (M, B, ...)
    return (weights.view(-1, *[1] * (stacked.dim() - 1)) * stacked).sum(0)


class EnsembleNet(nn.Module):
    """Weighted average of `members`' outputs; each member sees the input at its own `sizes[i]`.

    `gender_weights` / `age_weights`: one non-negative weight per member for P(female) / for age and the
    age distribution (normalised to sum to 1); None: equal weights.
    """

    def __init__(
        self,
        members: list[nn.Module],
        sizes: list[int],
        gender_weights: list[float] | None = None,
        age_weights: list[float] | None = None,
    ):
        super().__init__()
        if len(members) < 2 or len(members) != len(sizes):
            raise ValueError("an ensemble needs two or more members, each with its input size")
        self.input_size = max(sizes)
        self.members = nn.ModuleList(members)
        self.resizers = nn.ModuleList(
            nn.Identity() if size == self.input_size else AreaResize(self.input_size, size) for size in sizes
        )
        # Not persistent: the weights live in the checkpoint's metadata, the tensors file stays the members'.
        self.register_buffer("gender_weights", normalised_weights(gender_weights, len(members)), persistent=False)
        self.register_buffer("age_weights", normalised_weights(age_weights, len(members)), persistent=False)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        outputs = [member(resize(x)) for member, resize in zip(self.members, self.resizers)]
        p_female = weighted_mean([torch.sigmoid(o.gender_logit) for o in outputs], self.gender_weights)
        p_female = p_female.clamp(PROBABILITY_EPSILON, 1 - PROBABILITY_EPSILON)
        age = weighted_mean([o.age for o in outputs], self.age_weights)
        age_logits = None  # the members' mean age distribution (as log-probabilities), when all have one
        if all(o.age_logits is not None for o in outputs):
            distributions = [o.age_logits.softmax(dim=1) for o in outputs]
            age_logits = weighted_mean(distributions, self.age_weights).clamp_min(1e-12).log()
        return ModelOutput(torch.log(p_female) - torch.log1p(-p_female), age, age_logits)
