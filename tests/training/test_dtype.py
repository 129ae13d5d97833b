"""``--dtype float64``: the model's parameters and floating inputs in float64, from the same initial
weights as float32 (drawn in float32, then cast); a checkpoint resumes only in its own dtype."""

from __future__ import annotations

import pytest
import torch

from crossover_sgd.algorithms import build_algorithm
from crossover_sgd.config import TrainConfig
from crossover_sgd.errors import ConfigError
from crossover_sgd.runtime.process_group import DistContext
from crossover_sgd.training.data import build_datasets
from crossover_sgd.training.trainer import Trainer

ONE_RANK = DistContext(rank=0, world_size=1, local_rank=0, local_size=1, node_id=0, device=torch.device("cpu"),
                       backend="gloo", launcher="single", timeout_s=60.0)


def trainer(tmp_path, dtype: str) -> Trainer:
    config = TrainConfig(batch_size=16, epochs=1, lr=0.05, seed=4, dtype=dtype).validate()
    return Trainer(config, ONE_RANK, build_datasets(config), build_algorithm(ONE_RANK, config), tmp_path / dtype)


def test_float64_trains_and_evaluates_in_float64_from_the_float32_initial_weights(tmp_path):
    single, double = trainer(tmp_path, "float32"), trainer(tmp_path, "float64")
    for name, value in double.model.state_dict().items():
        assert value.dtype == torch.float64, name
        assert torch.equal(value, single.model.state_dict()[name].double()), name  # exactly the same start
    x, y = build_datasets(double.config).train.tensors
    seen = []
    double.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    double.train_step([(x[:16], y[:16])])
    single.train_step([(x[:16], y[:16])])
    assert seen == [torch.float64] and double.step == 1
    assert all(p.dtype == torch.float64 and p.grad.dtype == torch.float64 for p in double.model.parameters())
    assert all(s.dtype == torch.float64 for state in double.optimizer.state.values() for s in state.values()
               if torch.is_tensor(s) and s.is_floating_point())
    # the same loss at the same weights, up to float32 rounding (the loss is continuous in the
    # weights, ReLU kinks included: no flip of a ReLU can move it by more than the rounding)
    assert float(double.loss_sum) == pytest.approx(float(single.loss_sum), rel=1e-5)
    result = double.evaluate()
    assert 0.0 <= result["val_acc"] <= 1.0 and torch.isfinite(torch.tensor(result["val_loss"]))


@pytest.mark.parametrize("saved,resumed", [("float32", "float64"), ("float64", "float32")])
def test_resume_in_another_dtype_is_refused(tmp_path, saved, resumed):
    state = trainer(tmp_path, saved).state_dict()
    with pytest.raises(ConfigError) as refused:
        trainer(tmp_path, resumed).load_state_dict(state)
    assert f"--dtype {saved}" in str(refused.value) and f"--dtype {resumed}" in str(refused.value)


def test_checkpoints_from_before_dtype_existed_resume_as_float32(tmp_path):
    state = trainer(tmp_path, "float32").state_dict()
    del state["dtype"]
    trainer(tmp_path, "float32").load_state_dict(state)
    with pytest.raises(ConfigError):
        trainer(tmp_path, "float64").load_state_dict(state)
