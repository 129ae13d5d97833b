"""The training loop (crossover_sgd/training/trainer.py) on the GPU, in this process, over the
package's one-rank NCCL process group (``init_distributed`` with ``cuda:0``).

Device choice (``select_device``/``gpu_index``); channels_last parameters, inputs and gradients;
batches from the loader in pinned memory; an fp16 (GradScaler) step poisoned with an inf input is
skipped by SGD and LARS alike and counted; a bf16 LARS step with ``--skip-nonfinite`` (clean or
skipped) makes no host synchronisation; evaluation under autocast; a checkpoint written and
loaded onto the GPU continues like the run that was not interrupted.
"""

from __future__ import annotations

import pytest
import torch

from crossover_sgd.algorithms import Algorithm, build_algorithm, make_config
from crossover_sgd.runtime.launch import LaunchInfo
from crossover_sgd.runtime.process_group import gpu_index, select_backend, select_device
from crossover_sgd.training.checkpoint import load_checkpoint
from crossover_sgd.training.data import build_datasets
from crossover_sgd.training.trainer import Trainer
from gpu_support import GPU_MARKS, assert_unchanged, changed, no_host_sync, one_rank_group, snapshot

pytestmark = GPU_MARKS


@pytest.fixture(scope="module")
def ctx():
    with one_rank_group("nccl") as context:
        yield context


def make_trainer(ctx, out, algorithm: str = "none", **options) -> Trainer:
    """The real Trainer on the digits, with the base algorithm (``none``: no communication) or a
    registered one."""
    values = {"batch_size": 32, "epochs": 2, "lr": 0.05, "seed": 3, **options}
    if algorithm != "none":
        values["algorithm"] = algorithm
    config = make_config(**values)
    config.validate()
    algo = Algorithm(ctx, config) if algorithm == "none" else build_algorithm(ctx, config)
    return Trainer(config, ctx, build_datasets(config), algo, out)


def loader_batches(trainer: Trainer, count: int):
    trainer.sampler.set_epoch(0)
    it = iter(trainer.loader)
    return [next(it) for _ in range(count)]


def poisoned(batch):
    inputs, targets = batch
    inputs = inputs.clone()
    inputs[0] = float("inf")
    return inputs, targets


def test_select_device_takes_the_gpu():
    info = LaunchInfo("single", 0, 1, 0, 1, 0)
    assert select_device(info, "auto") == select_device(info, "cuda") == torch.device("cuda", 0)
    assert select_backend(torch.device("cuda", 0)) == "nccl"
    count = torch.cuda.device_count()
    assert gpu_index(0, 1, count) == 0
    if count > 1:
        assert gpu_index(1, 2, count) == 1


@pytest.mark.parametrize("algorithm", ["none", "allreduce"])
def test_channels_last_step_with_pinned_batches_on_the_gpu(ctx, tmp_path, algorithm):
    trainer = make_trainer(ctx, tmp_path, algorithm, channels_last=True)
    assert ctx.device == torch.device("cuda", 0) and ctx.backend == "nccl"
    four_d = [p for p in trainer.model.parameters() if p.dim() == 4]
    assert four_d and all(p.is_cuda and p.is_contiguous(memory_format=torch.channels_last) for p in four_d)
    assert trainer.loader.pin_memory
    batches = loader_batches(trainer, 3)
    assert all(inputs.is_pinned() for inputs, _ in batches)
    before = snapshot(trainer.model)
    for b in batches:
        trainer.train_step([b])
    assert changed(before, trainer.model)
    assert all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)  # steps kept the layout
    assert all(p.grad.is_cuda for p in four_d)
    assert trainer.loss_sum.is_cuda and trainer.step == 3
    result = trainer.evaluate()
    assert 0.0 <= result["val_acc"] <= 1.0 and result["val_loss"] == pytest.approx(result["val_loss"])


@pytest.mark.parametrize("lars", [False, True], ids=["sgd", "lars"])
def test_fp16_trainer_skips_a_poisoned_step(ctx, tmp_path, lars):
    trainer = make_trainer(ctx, tmp_path, amp="fp16", lars=lars, lr=0.5 if lars else 0.05)
    assert trainer.precision.scaler is not None
    batches = loader_batches(trainer, 8)
    for b in batches[:6]:  # the scaler may back off from 2**16 first
        trainer.train_step([b])
    skipped = int(trainer.precision.skipped)
    scale = trainer.precision.scaler.get_scale()
    before = snapshot(trainer.model, trainer.optimizer)
    trainer.train_step([poisoned(batches[6])])
    assert_unchanged(before, trainer.model, trainer.optimizer)
    assert int(trainer.precision.skipped) == skipped + 1
    assert trainer.precision.scaler.get_scale() == scale / 2
    before = snapshot(trainer.model)
    trainer.train_step([batches[7]])
    assert changed(before, trainer.model)
    result = trainer.evaluate()  # fp16 autocast in evaluation too
    assert torch.isfinite(torch.tensor(result["val_loss"]))


def test_bf16_lars_step_with_skip_nonfinite_makes_no_host_sync(ctx, tmp_path):
    trainer = make_trainer(ctx, tmp_path, amp="bf16", lars=True, lr=0.5, skip_nonfinite=True)
    clean, bad = loader_batches(trainer, 2)
    clean = tuple(t.to(ctx.device) for t in clean)  # on the device already: no copy in the step
    bad = tuple(t.to(ctx.device) for t in poisoned(bad))
    trainer.train_step([clean])  # first step: optimizer state and autocast caches, unchecked
    torch.cuda.synchronize()
    before = snapshot(trainer.model, trainer.optimizer)
    try:
        with no_host_sync():
            trainer.train_step([bad])
            trainer.train_step([clean])
    except RuntimeError as exc:
        pytest.fail(f"a bf16 LARS training step synchronised with the host: {exc}")
    assert int(trainer.precision.skipped) == 1
    assert changed(before, trainer.model)  # the clean step after the skipped one was taken


def test_checkpoint_onto_the_gpu_continues_like_the_uninterrupted_run(ctx, tmp_path):
    torch.backends.cudnn.deterministic, saved = True, torch.backends.cudnn.deterministic
    try:
        options = dict(amp="fp16", lars=True, lr=0.5)
        straight = make_trainer(ctx, tmp_path / "straight", **options)
        batches = loader_batches(straight, 6)
        for b in batches:
            straight.train_step([b])

        first = make_trainer(ctx, tmp_path / "resumed", **options)
        for b in batches[:3]:
            first.train_step([b])
        first.checkpoint()  # the real save + publish (one rank)
        second = make_trainer(ctx, tmp_path / "resumed", **options)
        expected = {"world_size": 1, "algorithm": second.config.algorithm, "model": second.config.model,
                    "dataset": second.config.dataset, "batch_size": second.config.batch_size,
                    "local_itr": second.config.local_itr}
        second.load_state_dict(load_checkpoint(tmp_path / "resumed", 0, expected, ctx.device))
        assert second.step == 3
        assert second.precision.scaler.get_scale() == first.precision.scaler.get_scale()
        assert all(v.is_cuda for s in second.optimizer.state.values() for v in s.values() if torch.is_tensor(v)
                   and v.dim() > 0)
        for b in batches[3:]:
            second.train_step([b])
        for a, b in zip(straight.model.parameters(), second.model.parameters()):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        assert int(second.precision.skipped) == int(straight.precision.skipped)
    finally:
        torch.backends.cudnn.deterministic = saved
