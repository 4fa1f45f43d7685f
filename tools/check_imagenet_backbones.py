"""Check the Xception and EfficientNet-B0 ports against the models whose weight files they read:
timm's `legacy_xception` and `efficientnet_b0`, torchvision's `efficientnet_b0`. A one-off verification,
not a test (neither library is a dependency; timm needs torchvision, which needs the shim of
check_backbones_against_torchvision.py on the CPU torch build).

    pip download --no-deps -d /tmp/dl torchvision==0.28.0 timm==1.0.31
    python -m zipfile -e /tmp/dl/torchvision-0.28.0-*.whl /tmp/site
    python -m zipfile -e /tmp/dl/timm-1.0.31-py3-none-any.whl /tmp/site
    PYTHONPATH=/tmp/site:benchmarks python tools/check_imagenet_backbones.py

Each reference model gets random weights and BatchNorm statistics, is saved as a .pth file (for
Xception also in Cadene's variant: 2-D pointwise kernels, no BatchNorm counters), loaded through our
--weights path, and both backbones run on one random batch; fails above a relative 1e-4. A second pass
moves one early BatchNorm mean in our copy and must change the output, or the check could not see
a misplaced early tensor.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from check_backbones_against_torchvision import import_torchvision, randomise

from agegender.models.pretrained import load_backbone_state
from agegender.models.registry import model_spec


def references(torchvision):
    import timm

    xception = timm.create_model("legacy_xception", pretrained=False)
    timm_b0 = timm.create_model("efficientnet_b0", pretrained=False)
    tv_b0 = torchvision.models.efficientnet_b0(weights=None)
    return [
        ("xception", "timm legacy_xception", xception, lambda x: xception.forward_features(x).relu(), 299, False),
        ("xception", "Cadene-style file", xception, lambda x: xception.forward_features(x).relu(), 299, True),
        ("efficientnet_b0", "timm efficientnet_b0", timm_b0, timm_b0.forward_features, 224, False),
        ("efficientnet_b0", "torchvision efficientnet_b0", tv_b0, tv_b0.features, 224, False),
    ]


def calibrate(model: torch.nn.Module, size: int) -> None:
    """BatchNorm statistics of one random batch: with random weights alone, activations shrink layer by
    layer until early blocks no longer reach the output, and a misplaced early tensor would not show."""
    for layer in model.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.randn(4, 3, size, size))


def cadene_style(state: dict) -> dict:
    return {
        k: (v.flatten(1) if "pointwise" in k else v) for k, v in state.items() if not k.endswith("num_batches_tracked")
    }


def main() -> int:
    torchvision = import_torchvision()
    failed = False
    with tempfile.TemporaryDirectory() as folder:
        for name, label, model, features, size, cadene in references(torchvision):
            torch.manual_seed(0)
            randomise(model)
            calibrate(model, size)
            path = Path(folder) / f"{name}.pth"
            state = model.state_dict()
            torch.save(cadene_style(state) if cadene else state, path)
            ours, _ = model_spec(name).create()
            ours.load_state_dict(load_backbone_state(name, path)[0])
            model.eval(), ours.eval()
            x = torch.randn(2, 3, size, size)
            with torch.no_grad():
                expected = features(x)
                difference = float((ours(x) - expected).abs().max()) / float(expected.abs().max())
            whole = sum(p.numel() for p in model.parameters())
            with torch.no_grad():
                next(m for m in ours.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_mean += 1.0
                sensitive = float((ours(x) - expected).abs().max()) / float(expected.abs().max()) > 1e-3
            failed |= difference > 1e-4 or not sensitive
            print(
                f"{name:16s} vs {label:28s} sensitive {sensitive}, max |difference| / max |output| = {difference:.2e}; reference parameters {whole:,}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
