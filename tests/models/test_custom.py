from __future__ import annotations

import pytest
import torch

from agegender.config import ConfigError, ModelConfig
from agegender.data.samples import MAX_AGE
from agegender.models.custom import CUSTOM_MEAN, CUSTOM_STD, create_custom_backbone
from agegender.models.heads import AgeBinsHead, AgeRegressionHead
from agegender.models.registry import create_model
from agegender.models.summary import count_layers, count_macs, feature_map_shape, summarize_model

TINY = ModelConfig(widths=(8, 16), head_hidden=16)


def tiny_model(**changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(ModelConfig(**{**TINY.__dict__, **changes}))


@pytest.mark.parametrize("size", [32, 48])
def test_output_shapes(size):
    model = tiny_model().eval()
    with torch.no_grad():
        output = model(torch.rand(5, 3, size, size))
    assert output.gender_logit.shape == (5,)
    assert output.age.shape == (5,)


def test_bins_head_is_bounded_to_0_116():
    model = tiny_model().eval()
    assert isinstance(model.age_head, AgeBinsHead)
    last = model.age_head.mlp[-1]  # Linear(hidden, 117)
    with torch.no_grad():
        output = model(torch.rand(3, 3, 32, 32) * 100)  # wild inputs still give ages in range
        assert ((output.age >= 0) & (output.age <= MAX_AGE)).all()
        last.weight.zero_()
        last.bias.zero_()
        # uniform softmax over bins 0..116: expected value is their mean, 58
        assert model(torch.rand(2, 3, 32, 32)).age.tolist() == pytest.approx([58.0, 58.0])
        last.bias[MAX_AGE] = 1e4
        assert model(torch.rand(2, 3, 32, 32)).age.tolist() == pytest.approx([116.0, 116.0])
        last.bias.zero_()
        last.bias[0] = 1e4
        assert model(torch.rand(2, 3, 32, 32)).age.tolist() == pytest.approx([0.0, 0.0], abs=1e-4)


def test_regression_head():
    model = tiny_model(age_head="regression").eval()
    assert isinstance(model.age_head, AgeRegressionHead)
    last = model.age_head.mlp[-1]  # Linear(hidden, 1)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(0.5)
        # output * scale + offset = 0.5 * 20 + 33
        assert model(torch.rand(2, 3, 32, 32)).age.tolist() == pytest.approx([43.0, 43.0])


@pytest.mark.parametrize("age_head", ["bins", "regression"])
def test_training_step_reaches_every_parameter(age_head):
    model = tiny_model(age_head=age_head).train()
    output = model(torch.rand(4, 3, 32, 32))
    (output.gender_logit.sum() + output.age.sum()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name


def test_unknown_age_head():
    with pytest.raises(ValueError, match="unknown age head 'ordinal'; choose one of bins, regression"):
        tiny_model(age_head="ordinal")


def test_backbone_needs_blocks():
    with pytest.raises(ValueError, match="at least one block"):
        create_custom_backbone((), 2)
    with pytest.raises(ValueError, match="at least one block"):
        create_custom_backbone((8,), 0)


def test_normalisation_lives_in_the_model():
    model = tiny_model().eval()
    assert model.mean == CUSTOM_MEAN and model.std == CUSTOM_STD
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        by_hand = model.pool(model.backbone((x - 0.5) / 0.25)).flatten(1)
        torch.testing.assert_close(model.features(x), by_hand)


def test_summary_numbers():
    model = tiny_model()
    summary = summarize_model(model, "custom", 32)
    assert summary.parameters == sum(p.numel() for p in model.parameters())
    # by hand, widths [8, 16], two bias-free 3x3 convs + BN per block, hidden 16:
    # block 1: 3*8*9 + 16 + 8*8*9 + 16 = 824; block 2: 8*16*9 + 32 + 16*16*9 + 32 = 3520
    # gender head: 16*16+16 + 16+1 = 289; age bins head: 16*16+16 + 16*117+117 = 2261
    assert summary.parameters == 824 + 3520 + 289 + 2261 == 6894
    assert summary.trainable_parameters == 6894
    assert summary.layers == count_layers(model) == 4 + 4  # 4 convs, 4 linears
    assert summary.feature_map == (16, 8, 8)  # two 2x2 poolings of 32 px
    assert summary.input_size == 32
    # convs at 32 px then 16 px (3x3, 8 and 16 channels), then the four linear layers of the heads
    convs = 32 * 32 * 8 * (3 * 9 + 8 * 9) + 16 * 16 * 16 * (8 * 9 + 16 * 9)
    assert summary.macs == count_macs(model, 32) == convs + 16 * 16 + 16 + 16 * 16 + 16 * 117
    assert "feature map 16x8x8" in summary.line() and "8 conv/linear layers" in summary.line()
    assert "0.002 GMAC per face" in summary.line()


def test_summary_counts_frozen_parameters():
    model = tiny_model()
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(False)
    summary = summarize_model(model, "custom", 32)
    assert summary.trainable_parameters == 289 + 2261


def test_feature_map_shape_restores_training_mode():
    model = tiny_model().train()
    assert feature_map_shape(model, 48) == (16, 12, 12)
    assert model.training


def test_a_gender_head_that_sees_the_age_reads_the_age_distribution():
    model = tiny_model(gender_sees_age=True).eval()
    features = torch.rand(4, TINY.widths[-1])
    with torch.no_grad():
        before = model.heads(features)
        model.age_head.mlp[-1].bias[:20] += 5.0  # the same features, the ages moved towards childhood
        after = model.heads(features)
    assert not torch.allclose(before.gender_logit, after.gender_logit)
    assert model.gender_head.mlp[1].in_features == TINY.widths[-1] + MAX_AGE + 1


def test_a_gender_head_that_sees_the_age_does_not_train_the_ages_through_gender():
    model = tiny_model(gender_sees_age=True)
    model(torch.rand(4, 3, 32, 32)).gender_logit.sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in model.age_head.parameters())


def test_a_gender_head_that_sees_the_age_needs_an_age_distribution():
    with pytest.raises(ConfigError, match="gender_sees_age needs model.age_head=bins"):
        tiny_model(gender_sees_age=True, age_head="regression")
