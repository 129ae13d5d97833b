"""Model segments ("chromosomes") for Crossover-SGD."""

from __future__ import annotations

import pytest
import torch
import torchvision

from crossover_sgd.algorithms.gossip.segments import attach_momentum, split_model
from crossover_sgd.algorithms import make_config
from crossover_sgd.errors import ConfigError
from crossover_sgd.training.models import SmallCNN


@pytest.fixture(scope="module")
def resnet50():
    return torchvision.models.resnet50(weights=None)


def test_resnet50_coarse_is_stages_and_fine_is_blocks(resnet50):
    coarse = split_model(resnet50, "coarse")
    assert [s.name for s in coarse] == ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
    fine = split_model(resnet50, "fine")
    assert len(fine) == 18 and fine[0].name == "stem" and fine[-1].name == "fc"
    assert [s.name for s in fine[1:4]] == ["layer1.0", "layer1.1", "layer1.2"]
    assert [s.name for s in fine[-4:-1]] == ["layer4.0", "layer4.1", "layer4.2"]


def test_segments_cover_every_parameter_once_in_order(resnet50):
    names = [n for n, _ in resnet50.named_parameters()]
    for segments in (split_model(resnet50, "fine"), split_model(resnet50, num_segments=7)):
        assert [n for s in segments for n in s.names] == names
        assert sum(s.nbytes for s in segments) == sum(p.numel() * 4 for p in resnet50.parameters())


def test_equal_byte_segments_are_balanced_and_bounded(resnet50):
    segments = split_model(resnet50, num_segments=4)
    sizes = [s.nbytes for s in segments]
    assert len(sizes) == 4 and min(sizes) > 0.5 * max(sizes)
    n_tensors = len(list(resnet50.parameters()))
    assert len(split_model(resnet50, num_segments=n_tensors)) == n_tensors
    with pytest.raises(ConfigError, match=f"use 1 to {n_tensors}"):
        split_model(resnet50, num_segments=n_tensors + 1)


def test_buffers_join_the_segment_of_their_module(resnet50):
    segments = split_model(resnet50, "fine", buffers=True)
    stem = segments[0]
    assert "bn1.running_mean" in stem.names and "bn1.running_var" in stem.names
    assert all("num_batches_tracked" not in n for s in segments for n in s.names)  # integer: not mixed
    assert "layer1.0.bn1.running_mean" in segments[1].names


def test_unknown_chromosome_is_refused():
    with pytest.raises(ConfigError, match="coarse or fine"):
        split_model(SmallCNN(), "medium")
    with pytest.raises(ConfigError, match="--chromosome 'medium'"):
        make_config(chromosome="medium").validate()


def test_small_models_get_generic_segments():
    assert [s.name for s in split_model(SmallCNN(), "coarse")] == ["features", "classifier"]
    assert [s.name for s in split_model(SmallCNN(), "fine")] == ["features.0", "features.2", "classifier"]


def test_momentum_buffers_attach_to_their_parameter_segment():
    model = SmallCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    optimizer.step()
    features, classifier = split_model(model, "coarse")
    attach_momentum([features, classifier], model, optimizer)
    assert "features.0.weight:momentum" in features.names and "classifier.bias:momentum" in classifier.names
    assert any(t is optimizer.state[model.classifier.bias]["momentum_buffer"] for t in classifier.tensors)
