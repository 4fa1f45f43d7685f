"""An ensemble of trained models that behaves like one model (one input, one ModelOutput).

Members may take different input sizes (Model A 64 px, Model B 160 px): the ensemble takes the
largest and shrinks it for each smaller member with an exact area average written as two matrix
products, so it runs unchanged on PyTorch and in an exported ONNX graph. Members' P(female) and
ages are averaged; the gender logit returned is the logit of the mean probability.
"""

from __future__ import annotations

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


class EnsembleNet(nn.Module):
    """Average of `members`' outputs; each member sees the input at its own `sizes[i]`."""

    def __init__(self, members: list[nn.Module], sizes: list[int]):
        super().__init__()
        if len(members) < 2 or len(members) != len(sizes):
            raise ValueError("an ensemble needs two or more members, each with its input size")
        self.input_size = max(sizes)
        self.members = nn.ModuleList(members)
        self.resizers = nn.ModuleList(
            nn.Identity() if size == self.input_size else AreaResize(self.input_size, size) for size in sizes
        )

    def forward(self, x: torch.Tensor) -> ModelOutput:
        outputs = [member(resize(x)) for member, resize in zip(self.members, self.resizers)]
        p_female = torch.stack([torch.sigmoid(o.gender_logit) for o in outputs]).mean(0)
        p_female = p_female.clamp(PROBABILITY_EPSILON, 1 - PROBABILITY_EPSILON)
        age = torch.stack([o.age for o in outputs]).mean(0)
        age_logits = None  # the members' mean age distribution (as log-probabilities), when all have one
        if all(o.age_logits is not None for o in outputs):
            age_logits = torch.stack([o.age_logits.softmax(dim=1) for o in outputs]).mean(0).clamp_min(1e-12).log()
        return ModelOutput(torch.log(p_female) - torch.log1p(-p_female), age, age_logits)
