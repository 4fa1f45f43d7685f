"""dlib's face recognition ResNet: architecture, .dat conversion, bad files, and parity with dlib itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from agegender.models.dlib_format import DlibFormatError
from agegender.models.dlib_resnet import (
    MEAN,
    MIN_INPUT_SIZE,
    STD,
    add_zero_padded,
    convert_dlib_weights,
    create_dlib_resnet_backbone,
    dlib_layers,
    layer_kinds,
)
from agegender.models.pretrained import default_weights_path
from agegender.models.registry import model_spec
from tests.models.test_dlib_format import (
    INPUT_150,
    METRIC_LOSS,
    dlib_alias,
    dlib_float,
    dlib_int,
    dlib_name,
    dlib_network,
    dlib_tensor,
)

ASTRONAUT = Path(__file__).resolve().parents[2] / "examples" / "astronaut.jpg"
SETTING_ORDER = ("filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")


# ----------------------------------------------------------------------------- a stand-in .dat


def _details(name: str, settings: dict, module: nn.Module | None) -> bytes:
    """One layer's details as dlib writes them (dlib/dnn/layers.h), parameters from `module`."""
    multipliers = b"".join(dlib_float(m) for m in (1, 1, 1, 0))
    if name == "con_4":
        params = torch.cat([module.weight.flatten(), module.bias]).detach().numpy()
        ints = b"".join(dlib_int(settings[key]) for key in SETTING_ORDER)
        shapes = dlib_alias(tuple(module.weight.shape)) + dlib_alias((1, module.out_channels, 1, 1))
        return dlib_name(name) + dlib_tensor(params) + ints + shapes + multipliers
    if name == "affine_":
        params = torch.cat([module.weight, module.bias]).detach().numpy()
        shape = (1, len(module.weight), 1, 1)
        return dlib_name(name) + dlib_tensor(params) + dlib_alias(shape) * 2 + dlib_int(0)
    if name in ("max_pool_2", "avg_pool_2"):
        return dlib_name(name) + b"".join(dlib_int(settings[key]) for key in SETTING_ORDER[1:])
    if name == "fc_2":  # weights stored (inputs, outputs)
        params = module.weight.detach().T.contiguous().numpy()
        head = dlib_int(module.out_features) + dlib_int(module.in_features)
        body = dlib_tensor(params, (module.in_features, module.out_features, 1, 1))
        shapes = dlib_alias((module.in_features, module.out_features, 1, 1)) + dlib_alias((0, 0, 0, 0))
        return dlib_name(name) + head + body + shapes + dlib_int(1) + multipliers
    return dlib_name(name)  # relu_, add_prev_


def random_dlib_backbone(seed: int = 0) -> nn.Sequential:
    """Random weights, affine scales and shifts included (BatchNorm's default 1 and 0 would hide swaps)."""
    torch.manual_seed(seed)
    backbone, _ = create_dlib_resnet_backbone()
    with torch.no_grad():
        for module in backbone.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    return backbone


def write_dlib_resnet_dat(path: Path, backbone: nn.Sequential | None = None) -> nn.Sequential:
    """A .dat laid out like dlib_face_recognition_resnet_model_v1.dat, holding `backbone`'s weights."""
    backbone = backbone if backbone is not None else random_dlib_backbone()
    details = [_details(*layer) for layer in dlib_layers(backbone)]
    path.write_bytes(dlib_network(METRIC_LOSS, layer_kinds(), INPUT_150, details))
    return backbone


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> tuple[Path, nn.Sequential]:
    path = tmp_path_factory.mktemp("dlib") / "stand_in.dat"
    return path, write_dlib_resnet_dat(path)


# ----------------------------------------------------------------------------- architecture


def test_backbone_is_16_blocks_ending_in_the_128_d_embedding():
    backbone, channels = create_dlib_resnet_backbone()
    assert len(backbone) == 16 and channels == 128
    assert sum(p.numel() for p in backbone.parameters()) == 5_614_592  # every tensor of the real .dat
    with torch.no_grad():
        shapes = [tuple(x.shape[1:]) for x in _activations(backbone.eval(), torch.rand(1, 3, 150, 150))]
    assert shapes[0] == (32, 35, 35) and shapes[7] == (64, 17, 17) and shapes[10] == (128, 8, 8)
    assert shapes[13] == (256, 4, 4) and shapes[14] == (256, 2, 2) and shapes[15] == (128, 1, 1)


def _activations(backbone: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    outputs = []
    for block in backbone:
        x = block(x)
        outputs.append(x)
    return outputs


def test_min_input_size_is_the_smallest_that_fits():
    backbone, _ = create_dlib_resnet_backbone()
    with torch.no_grad():
        assert backbone.eval()(torch.rand(1, 3, MIN_INPUT_SIZE, MIN_INPUT_SIZE)).shape == (1, 128, 1, 1)
        with pytest.raises(RuntimeError):
            backbone(torch.rand(1, 3, MIN_INPUT_SIZE - 1, MIN_INPUT_SIZE - 1))


def test_residual_sums_zero_pad_the_smaller_operand_like_dlib_add_prev():
    block_output = torch.ones(1, 4, 3, 3)  # e.g. a stride-2 convolution's 3x3
    shortcut = torch.full((1, 2, 4, 4), 10.0)  # the 2x2 average pool's 4x4, fewer channels
    total = add_zero_padded(block_output, shortcut)
    assert total.shape == (1, 4, 4, 4)
    assert total[0, 0, 0, 0] == 11 and total[0, 0, 3, 3] == 10 and total[0, 3, 0, 0] == 1 and total[0, 3, 3, 3] == 0


def test_input_normalisation_is_dlibs_minus_mean_over_256():
    pixels = torch.tensor([0.0, 128.0, 255.0])
    for channel, dlib_mean in enumerate((122.782, 117.001, 104.298)):
        ours = (pixels / 255 - MEAN[channel]) / STD[channel]
        assert torch.allclose(ours, (pixels - dlib_mean) / 256, atol=1e-6)


def test_the_frozen_affine_is_exactly_scale_and_shift():
    backbone = random_dlib_backbone().eval()
    affine = backbone[0][1]
    x = torch.randn(2, 32, 5, 5)
    with torch.no_grad():
        expected = x * affine.weight.view(1, -1, 1, 1) + affine.bias.view(1, -1, 1, 1)
        assert torch.allclose(affine(x), expected, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- conversion


def test_conversion_recovers_every_weight_of_the_stand_in(stand_in):
    path, backbone = stand_in
    state = convert_dlib_weights(path)
    assert list(state) == list(backbone.state_dict())
    for key, tensor in backbone.state_dict().items():
        assert torch.equal(state[key], tensor), key


def test_conversion_leaves_the_callers_rng_alone(stand_in):
    torch.manual_seed(3)
    convert_dlib_weights(stand_in[0])
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(1))


def test_a_truncated_dat_is_one_clear_error(stand_in, tmp_path):
    cut = tmp_path / "cut.dat"
    cut.write_bytes(stand_in[0].read_bytes()[:5_000_000])
    with pytest.raises(DlibFormatError, match=r"cut.dat: file ends inside .*; is it truncated\?"):
        convert_dlib_weights(cut)


def test_a_non_dlib_file_is_one_clear_error(tmp_path):
    path = tmp_path / "photo.dat"
    path.write_bytes(ASTRONAUT.read_bytes())  # a JPEG: FF D8 ...
    with pytest.raises(DlibFormatError, match=r"photo.dat: not dlib's serialisation: byte 0xff"):
        convert_dlib_weights(path)


def test_a_resnet_of_other_widths_is_another_network(tmp_path):
    backbone = random_dlib_backbone()
    backbone[1].conv1 = nn.Conv2d(32, 16, 3, 1, 1)  # one convolution of 16 filters, not 32
    write_dlib_resnet_dat(tmp_path / "narrow.dat", backbone)
    with pytest.raises(DlibFormatError, match=r"narrow.dat: layer 4 is 'con_4' \{'filters': 16.*not dlib's face"):
        convert_dlib_weights(tmp_path / "narrow.dat")


# ----------------------------------------------------------------------------- the real files (optional)


def _package_file(name: str) -> Path:
    path = default_weights_path("dlib_resnet")
    if path is None:
        pytest.skip(f"{model_spec('dlib_resnet').weights_package} is not installed")
    return path.with_name(name)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("shape_predictor_5_face_landmarks.dat", "not a dlib network file: expected loss layer"),
        ("mmod_human_face_detector.dat", "its loss layer is dlib's 'loss_mmod_'"),
    ],
)
def test_other_dlib_models_of_the_package_are_refused(name, problem):
    with pytest.raises(DlibFormatError, match=problem):
        convert_dlib_weights(_package_file(name))


def _chips() -> np.ndarray:
    """Two 150x150 RGB chips: a photo and noise (parity must hold on any input, not just faces)."""
    photo = np.asarray(Image.open(ASTRONAUT).convert("RGB").resize((150, 150), Image.Resampling.BILINEAR))
    noise = np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    return np.stack([photo, noise])  # (2, 150, 150, 3) uint8


def test_descriptors_match_dlib_on_the_same_chip():
    dlib = pytest.importorskip("dlib")
    path = _package_file("dlib_face_recognition_resnet_model_v1.dat")
    chips = _chips()
    reference = np.array([dlib.face_recognition_model_v1(str(path)).compute_face_descriptor(c) for c in chips])
    backbone, _ = create_dlib_resnet_backbone()
    backbone.load_state_dict(convert_dlib_weights(path))
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).float() / 255  # (2, 3, 150, 150) in [0, 1]
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = backbone.eval()(x).flatten(1).numpy()  # (2, 128)
    assert np.abs(ours - reference).max() < 1e-5  # measured 3e-7 (descriptor values up to ~0.35)
