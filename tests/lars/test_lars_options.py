"""Argument validation, the study preset, param_groups(), state_dict and skipped parameters."""

from __future__ import annotations

import math

import pytest
import torch

import lars
from lars import LARS, STUDY_DEFAULTS, param_groups


def _param() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.randn(3, 3))]


@pytest.mark.parametrize("name, value", [
    ("lr", -0.1), ("lr", math.nan), ("lr", "0.1"), ("eta", -1e-3), ("momentum", -0.5),
    ("momentum", 1.0), ("weight_decay", -5e-5), ("eps", -1e-9), ("trust_ratio_max", -1.0),
    ("trust_ratio_max", 0.0), ("trust_ratio_max", math.inf), ("larc", 1), ("momentum_form", "tf"),
    ("nesterov", 1), ("exclude", "bias"),
])
def test_bad_argument_raises_one_line_value_error(name, value):
    kwargs = {"lr": 0.1, name: value}
    with pytest.raises(ValueError) as info:
        LARS(_param(), **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert f"{name}={value!r}" in message
    assert "expected" in message


def test_inconsistent_options_raise():
    with pytest.raises(ValueError, match="momentum_correction"):
        LARS(_param(), lr=0.1, momentum_form="pytorch", momentum_correction=True)
    with pytest.raises(ValueError, match="nesterov"):
        LARS(_param(), lr=0.1, momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match=r"trust_ratio_max=1\.0; expected None with larc=True"):
        LARS(_param(), lr=0.1, larc=True, trust_ratio_max=1.0)


def test_former_trust_clip_option_is_refused_with_its_new_names():
    with pytest.raises(TypeError, match="trust_clip"):
        LARS(_param(), lr=0.1, trust_clip=1.0)  # type: ignore[call-arg]
    with pytest.raises(ValueError) as info:
        LARS([{"params": _param(), "trust_clip": 1.0}], lr=0.1)
    message = str(info.value)
    assert "trust_clip=1.0" in message and "trust_ratio_max=c" in message and "larc=True" in message


def test_state_dict_saved_with_trust_clip_loads_as_trust_ratio_max():
    """A state saved before the rename: its trust_clip was the ratio cap and stays that."""
    opt = LARS(_param(), lr=0.1, trust_ratio_max=0.5)
    old = opt.state_dict()
    old_group = old["param_groups"][0]
    old_group["trust_clip"] = old_group.pop("trust_ratio_max")
    del old_group["larc"]
    fresh = LARS(_param(), lr=0.1)
    fresh.load_state_dict(old)
    group = fresh.param_groups[0]
    assert group["trust_ratio_max"] == 0.5 and group["larc"] is False and "trust_clip" not in group
    assert "trust_clip" in old_group  # the caller's dict is left as it was
    fresh.param_groups[0]["params"][0].grad = torch.ones(3, 3)
    fresh.step()


def test_bad_group_option_is_rejected_and_not_added():
    opt = LARS(_param(), lr=0.1)
    with pytest.raises(ValueError, match=r"weight_decay=-1"):
        opt.add_param_group({"params": _param(), "weight_decay": -1})
    assert len(opt.param_groups) == 1


def test_bad_option_set_after_construction_is_caught_at_step():
    opt = LARS(_param(), lr=0.1)
    opt.param_groups[0]["params"][0].grad = torch.ones(3, 3)
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"lr=-1.0"):
        opt.step()


def test_bad_norm_hook_raises():
    with pytest.raises(ValueError, match="norm hook"):
        LARS(_param(), lr=0.1).set_norm_hook(42)  # type: ignore[arg-type]


def test_study_preset():
    assert dict(STUDY_DEFAULTS) == {"eta": 0.0025, "momentum": 0.96, "weight_decay": 5e-5,
                                    "eps": 1e-9, "momentum_form": "mxnet"}
    opt = LARS.study_preset(_param(), lr=3.0, nesterov=True)
    group = opt.param_groups[0]
    assert {k: group[k] for k in STUDY_DEFAULTS} == dict(STUDY_DEFAULTS)
    assert group["lr"] == 3.0 and group["nesterov"] is True
    with pytest.raises(TypeError):
        STUDY_DEFAULTS["eta"] = 1.0  # type: ignore[index]


def test_param_groups_split(make_cnn):
    model = make_cnn()
    groups = param_groups(model, weight_decay=1e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    lars_names = [names[id(p)] for p in groups[0]["params"]]
    excluded_names = [names[id(p)] for p in groups[1]["params"]]
    assert lars_names == ["0.weight", "3.weight", "6.weight"]
    assert excluded_names == ["0.bias", "1.weight", "1.bias", "6.bias"]
    assert [g["exclude"] for g in groups] == [False, True]
    assert all(g["weight_decay"] == 1e-4 for g in groups)

    only_linear = param_groups(model, exclude=lambda name, p: not name.startswith("6."))
    assert [names[id(p)] for p in only_linear[0]["params"]] == ["6.weight", "6.bias"]
    assert len(param_groups(torch.nn.Linear(2, 2, bias=False))) == 1  # empty group dropped


def test_lars_parameters_lists_non_excluded_with_grads(make_cnn):
    model = make_cnn()
    opt = LARS(model.parameters(), lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    model[3].weight.grad = None
    assert opt.lars_parameters() == [model[0].weight, model[6].weight]


def test_params_without_grad_are_untouched(make_cnn):
    model = make_cnn()
    opt = LARS(model.parameters(), lr=0.1, weight_decay=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    for i, p in enumerate(model.parameters()):
        p.grad = torch.randn_like(p) if i % 2 == 0 else None
    opt.step()
    for i, (p, b) in enumerate(zip(model.parameters(), before)):
        assert torch.equal(p, b) == (i % 2 == 1)
        assert (p in opt.state) == (i % 2 == 0)


def test_state_dict_round_trip(make_cnn, set_random_grads, lr_at, param_diff):
    """Save after 5 steps, load into a fresh optimizer, continue: same as never stopping."""
    options = dict(momentum=0.9, weight_decay=1e-2, eta=0.02, momentum_correction=True)

    def run(model, opt, gen, steps):
        for t in steps:
            opt.param_groups[0]["lr"] = lr_at(t)
            set_random_grads([model], gen, 0.05)
            opt.step()

    resumed, straight = make_cnn(), make_cnn()
    gen = torch.Generator().manual_seed(5)
    first = LARS(resumed.parameters(), lr=lr_at(0), **options)
    run(resumed, first, gen, range(5))
    second = LARS(resumed.parameters(), lr=lr_at(0), **options)
    second.load_state_dict(first.state_dict())
    assert second.state[next(resumed.parameters())]["step"].item() == 5
    run(resumed, second, gen, range(5, 20))

    run(straight, LARS(straight.parameters(), lr=lr_at(0), **options),
        torch.Generator().manual_seed(5), range(20))
    assert param_diff(resumed, straight) < 1e-7


def test_last_lr_stays_float32_through_state_dict_with_bf16_params():
    layer = torch.nn.Linear(4, 4).to(torch.bfloat16)
    opt = LARS(layer.parameters(), lr=0.1, momentum_correction=True)
    for p in layer.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    opt.load_state_dict(opt.state_dict())
    for state in opt.state.values():
        assert state["last_lr"].dtype == torch.float32
        assert state["last_lr"].item() == torch.tensor(0.1, dtype=torch.float32).item()


def test_public_api():
    assert set(lars.__all__) >= {"LARS", "param_groups", "trust_ratio", "larc_ratio", "STUDY_DEFAULTS"}
    assert LARS._step_supports_amp_scaling is True
