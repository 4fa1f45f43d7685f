"""Check that our ResNet-18/34/50, VGG16 and MobileNetV2 ports compute what torchvision's models do
when given torchvision's weight files: a one-off verification, not a test (the project does not
depend on torchvision, which does not import on the CPU torch build as installed from PyPI).

    pip download --no-deps torchvision==0.28.0 -d /tmp/tv
    python -m zipfile -e /tmp/tv/torchvision-0.28.0-*.whl /tmp/tvsite
    PYTHONPATH=/tmp/tvsite python tools/check_backbones_against_torchvision.py

Each torchvision model gets random weights and random BatchNorm statistics (so a misplaced tensor
shows), is saved as a .pth file like torchvision's own, loaded through our --weights path, and both
backbones run on the same random batch; the script prints the largest difference and fails above 1e-4.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from agegender.models.pretrained import load_backbone_state
from agegender.models.registry import model_spec


def import_torchvision():
    """torchvision's CUDA build registers kernels for ops this CPU torch lacks; declaring their
    schemas first lets the pure-Python models import (we use nothing else from it)."""
    try:
        import torchvision
    except RuntimeError:
        library = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define(
            "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
            "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor"
        )
        import torchvision
    return torchvision


def randomise(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in name else torch.randn_like(tensor) * 0.1)


def torchvision_backbone(torchvision, name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(whole torchvision model, the part our backbone replaces)."""
    model = getattr(torchvision.models, name)(weights=None)
    if name.startswith("resnet"):
        return model, torch.nn.Sequential(*list(model.children())[:-2])  # without avgpool and fc
    return model, model.features


def check(torchvision, name: str, size: int, folder: Path) -> float:
    torch.manual_seed(0)
    model, reference = torchvision_backbone(torchvision, name)
    randomise(model)
    path = folder / f"{name}.pth"
    torch.save(model.state_dict(), path)
    ours, _ = model_spec(name).create()
    state, _ = load_backbone_state(name, path)
    ours.load_state_dict(state)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return float((ours.eval()(x) - reference.eval()(x)).abs().max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet34", "resnet50", "vgg16", "mobilenet_v2"])
    parser.add_argument("--size", type=int, default=160)
    args = parser.parse_args()
    torchvision = import_torchvision()
    print(f"torchvision {torchvision.__version__}, torch {torch.__version__}, input {args.size}x{args.size}")
    failed = False
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            difference = check(torchvision, name, args.size, Path(folder))
            failed |= difference > 1e-4
            print(f"{name:14s} max |ours - torchvision| = {difference:.2e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
