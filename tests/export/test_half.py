"""float16 copies of a checkpoint (export.half)."""

from __future__ import annotations

import torch

from agegender.export.half import save_half_checkpoint
from agegender.models.checkpoint import load_checkpoint, read_meta
from tests.models.test_checkpoint import save_trained_looking


def test_half_checkpoint_is_smaller_and_loads_into_a_float32_model(tmp_path):
    path, model = save_trained_looking(tmp_path / "model.safetensors")
    half = save_half_checkpoint(path, tmp_path / "half.safetensors")
    assert half.stat().st_size < 0.6 * path.stat().st_size
    loaded = load_checkpoint(half)
    assert read_meta(half)["weights_dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected, got = model(x), loaded.model(x)
    torch.testing.assert_close(got.gender_logit, expected.gender_logit, rtol=0, atol=1e-2)  # float16 rounding only
    assert not torch.equal(got.gender_logit, expected.gender_logit)  # the weights really were rounded
