"""The peer-to-peer family's model settings: ResNets with GroupNorm (``--norm group``,
``--group-channels``), dropouts (``--drop-rate``, ``--last-drop-rate``) that keep every
parameter's name (the gossip segments are cut along them), and ``--model logistic``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from crossover_sgd.algorithms.gossip.segments import split_model
from crossover_sgd.config import TrainConfig
from crossover_sgd.errors import ConfigError
from crossover_sgd.flags import train_config
from crossover_sgd.training.models import LogisticRegression, build_model, initial_model


def _norms(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]


@pytest.mark.parametrize("name, group_channels", [("resnet18", 32), ("resnet50", 32), ("resnet18", 16),
                                                  ("resnext50_32x4d", 64)])
def test_group_norm_replaces_every_batch_norm(name, group_channels):
    gn = build_model(name, 10, 3, 32, norm="group", group_channels=group_channels)
    bn = build_model(name, 10, 3, 32)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gn.modules())
    assert len(_norms(gn)) == len(_norms(bn))
    for g, b in zip(_norms(gn), _norms(bn)):
        assert g.num_channels == b.num_features
        assert g.num_groups == math.ceil(g.num_channels / group_channels)
    assert gn.bn1.num_groups == math.ceil(64 / group_channels)
    assert [n for n, _ in gn.named_parameters()] == [n for n, _ in bn.named_parameters()]


def test_dropout_placement_and_names():
    plain = build_model("resnet18", 10, 3, 32)
    model = build_model("resnet18", 10, 3, 32, norm="group", drop_rate=0.1, last_drop_rate=0.5)
    assert isinstance(model.maxpool[-1], nn.Dropout2d) and model.maxpool[-1].p == 0.1  # after the stem
    for stage in (model.layer1, model.layer2, model.layer3):  # after each stage but the last
        assert isinstance(stage[-1], nn.Dropout2d) and stage[-1].p == 0.1
        assert len(stage) == 3
    assert not any(isinstance(m, (nn.Dropout, nn.Dropout2d)) for m in model.layer4.modules())
    assert isinstance(model.avgpool[-1], nn.Dropout) and model.avgpool[-1].p == 0.5  # before fc
    assert sum(isinstance(m, nn.Dropout2d) for m in model.modules()) == 4
    assert sum(type(m) is nn.Dropout for m in model.modules()) == 1
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in plain.named_parameters()]
    assert [s.name for s in split_model(model, "coarse")] == ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert len(split_model(model, "fine")) == 2 + 8
    assert not any(isinstance(m, nn.Dropout) for m in build_model("resnet18", 10, 3, 32).modules())


def test_dropouts_change_nothing_in_eval_mode():
    torch.manual_seed(0)
    plain = build_model("resnet18", 10, 3, 32, norm="group").eval()
    torch.manual_seed(0)  # the dropouts draw nothing: the same weights
    dropped = build_model("resnet18", 10, 3, 32, norm="group", drop_rate=0.3, last_drop_rate=0.5).eval()
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(plain(x), dropped(x))
        dropped.train()
        assert not torch.equal(plain(x), dropped(x))


@pytest.mark.parametrize("size, channels", [(8, 1), (32, 3)])
def test_group_norm_resnet_forward_and_backward(size, channels):
    model = build_model("resnet18", 7, channels, size, norm="group", drop_rate=0.1, last_drop_rate=0.5).train()
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert model.bn1.weight.grad is not None


def test_small_cnn_dropouts():
    plain = build_model("small_cnn", 10, 1, 8)
    model = build_model("small_cnn", 10, 1, 8, drop_rate=0.2, last_drop_rate=0.5)
    assert isinstance(model.features[1][-1], nn.Dropout2d) and model.features[1][-1].p == 0.2
    assert type(model.features[-1][-1]) is nn.Dropout and model.features[-1][-1].p == 0.5
    assert plain.state_dict().keys() == model.state_dict().keys()
    model.load_state_dict(plain.state_dict())
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), model.eval()(x))


@pytest.mark.parametrize("size, channels", [(8, 1), (32, 3)])
def test_logistic_is_softmax_regression(size, channels):
    model = build_model("logistic", 10, channels, size)
    assert isinstance(model, LogisticRegression)
    assert [n for n, _ in model.named_parameters()] == ["fc.weight", "fc.bias"]
    assert model.fc.weight.shape == (10, channels * size * size)
    x = torch.randn(4, channels, size, size)
    with torch.no_grad():
        expected = x.reshape(4, -1) @ model.fc.weight.T + model.fc.bias
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_initial_model_reads_the_settings():
    config = TrainConfig(model="resnet18", norm="group", group_channels=16, drop_rate=0.1, last_drop_rate=0.2)
    model = initial_model(config, 10, 3, 32, torch.device("cpu"))
    assert model.bn1.num_groups == 4 and isinstance(model.layer1[-1], nn.Dropout2d)
    assert isinstance(initial_model(TrainConfig(model="logistic"), 10, 1, 8, torch.device("cpu")), LogisticRegression)


def test_model_flags_and_their_checks():
    config = train_config(["--model", "resnet50", "--norm", "group", "--group_channels", "16", "--drop_rate", "0.1",
                           "--last_drop_rate", "0.5", "--l2_lambda", "0.01"])
    assert (config.norm, config.group_channels, config.drop_rate, config.last_drop_rate, config.l2_lambda) == \
        ("group", 16, 0.1, 0.5, 0.01)
    d = TrainConfig()
    assert (d.norm, d.group_channels, d.drop_rate, d.last_drop_rate, d.l2_lambda) == ("batch", 32, 0.0, 0.0, 0.0)
    cases = [
        (dict(norm="layer"), "--norm 'layer' is unknown: choose one of batch, group"),
        (dict(norm="group"), "--norm group needs a ResNet: --model small_cnn"),
        (dict(model="resnet18", norm="group", group_channels=24), "--group-channels 24 is invalid"),
        (dict(group_channels=0), "--group-channels 0 is invalid"),
        (dict(drop_rate=1.0), "--drop-rate 1.0 is invalid: use 0 <= value < 1"),
        (dict(last_drop_rate=-0.1), "--last-drop-rate -0.1 is invalid"),
        (dict(model="logistic", last_drop_rate=0.5), "--last-drop-rate 0.5 is invalid with --model logistic"),
        (dict(l2_lambda=-1.0), "--l2-lambda -1.0 is invalid"),
    ]
    for values, words in cases:
        with pytest.raises(ConfigError) as info:
            TrainConfig(**values).validate()
        assert words in info.value.render() and "\n" not in info.value.render()
    assert TrainConfig(model="resnet18", norm="group", group_channels=4096).validate().group_channels == 4096
    assert TrainConfig(group_channels=16).validate().ineffective_options() == [
        "--group-channels 16 (only --norm group uses it, not batch)"]
