from __future__ import annotations

import pytest
import torch

from agegender.config import ModelConfig
from agegender.models import create_model
from agegender.models.registry import is_pretrained


def test_levi_hassner_has_the_papers_layers():
    model = create_model(ModelConfig(name="levi_hassner"))
    convs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [(96, 7, 4), (256, 5, 1), (384, 3, 1)]
    assert sum(isinstance(m, torch.nn.LocalResponseNorm) for m in model.backbone.modules()) == 2
    fcs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Linear)]
    assert [f.out_features for f in fcs] == [512, 512]
    assert not is_pretrained("levi_hassner")  # from scratch: one training phase, like custom


@pytest.mark.parametrize("size", [32, 64, 227])
def test_levi_hassner_takes_any_input_size_with_the_same_weights(size):
    model = create_model(ModelConfig(name="levi_hassner")).eval()
    # conv1 14,208 + conv2 614,656 + conv3 885,120 + fc6 (384*3*3 -> 512) 1,769,984 + fc7 262,656
    assert sum(p.numel() for p in model.backbone.parameters()) == 3_546_624
    with torch.no_grad():
        output = model(torch.rand(2, 3, size, size))
    assert output.age.shape == (2,) and output.age_logits.shape == (2, 117)


def test_levi_hassner_trains_in_one_phase(make_config, utkface, cache_dir, tmp_path):
    import io
    from dataclasses import replace

    from rich.console import Console

    from agegender.training.fit import fit

    config = make_config(utkface.path, cache_dir)
    config = replace(config, model=replace(config.model, name="levi_hassner"))
    result = fit(config, tmp_path / "run", console=Console(file=io.StringIO()))
    assert result.metrics.model.name == "levi_hassner"
    assert "ms_per_step_by_phase" not in result.metrics.timing
