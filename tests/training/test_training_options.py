"""Training options of the loop, checked against independent plain-torch computations: label
smoothing, gradient clipping, Nesterov momentum (with gradient accumulation), and the epochs at
which ``--eval-every`` writes metrics rows."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn.functional as F

from crossover_sgd.algorithms import build_algorithm
from crossover_sgd.config import TrainConfig
from crossover_sgd.runtime.process_group import DistContext
from crossover_sgd.training.data import build_datasets
from crossover_sgd.training.models import build_model
from crossover_sgd.training.trainer import Trainer
from support import cli, read_metrics

Batch = Tuple[torch.Tensor, torch.Tensor]
ONE_RANK = DistContext(rank=0, world_size=1, local_rank=0, local_size=1, node_id=0, device=torch.device("cpu"),
                       backend="gloo", launcher="single", timeout_s=60.0)
BASE = dict(batch_size=16, local_itr=2, epochs=1, lr=0.1, momentum=0.9, weight_decay=1e-3, lr_schedule="constant",
            seed=5)
STEPS = 3
CLIP = 0.25  # below the gradient norm of every step here (checked): clipping acts on each step


@lru_cache(maxsize=1)
def micro_batches() -> List[List[Batch]]:
    """STEPS optimizer steps of ``local_itr`` consecutive digits micro-batches."""
    x, y = build_datasets(TrainConfig()).train.tensors
    b, k = BASE["batch_size"], BASE["local_itr"]
    return [[(x[(s * k + i) * b:(s * k + i + 1) * b], y[(s * k + i) * b:(s * k + i + 1) * b]) for i in range(k)]
            for s in range(STEPS)]


def trainer_run(tmp_path: Path, **options) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """(initial, final) parameters of the real Trainer after STEPS ``train_step`` calls."""
    config = TrainConfig(**BASE, **options).validate()
    trainer = Trainer(config, ONE_RANK, build_datasets(config), build_algorithm(ONE_RANK, config), tmp_path)
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for batches in micro_batches():
        trainer.train_step(batches)
    assert trainer.step == STEPS
    return initial, {k: v.clone() for k, v in trainer.model.state_dict().items()}


def reference_run(initial: Dict[str, torch.Tensor], label_smoothing: float = 0.0, clip_grad_norm: float = 0.0,
                  nesterov: bool = False) -> Tuple[Dict[str, torch.Tensor], List[float]]:
    """The same STEPS in plain torch: mean loss over the micro-batches, optional clipping by the
    global norm, torch.optim.SGD. Returns the final parameters and each step's gradient norm."""
    model = build_model("small_cnn", 10, in_channels=1, image_size=8)
    model.load_state_dict(initial)
    optimizer = torch.optim.SGD(model.parameters(), lr=BASE["lr"], momentum=BASE["momentum"], nesterov=nesterov,
                                weight_decay=BASE["weight_decay"])
    norms = []
    for batches in micro_batches():
        optimizer.zero_grad()
        for x, y in batches:
            (F.cross_entropy(model(x), y, label_smoothing=label_smoothing) / len(batches)).backward()
        norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))))
        if clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()
    return model.state_dict(), norms


def max_difference(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("options", [
    {"label_smoothing": 0.2},
    {"clip_grad_norm": CLIP},
    {"nesterov": True},
    {"label_smoothing": 0.2, "clip_grad_norm": CLIP, "nesterov": True},
], ids=["label-smoothing", "clip-grad-norm", "nesterov", "all-three"])
def test_option_matches_plain_torch_reference(tmp_path, options):
    initial, got = trainer_run(tmp_path, **options)
    expected, norms = reference_run(initial, **options)
    for name, tensor in got.items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-6, msg=f"{name} differs")
    # each option matters here: leaving any one out moves parameters by far more than the tolerance
    for left_out in options:
        without = {k: v for k, v in options.items() if k != left_out}
        assert max_difference(got, reference_run(initial, **without)[0]) > 1e-4, f"{left_out} has no effect"
    if "clip_grad_norm" in options:
        assert min(norms) > 2 * CLIP  # clipping triggered on every step


@pytest.mark.slow
def test_eval_every_writes_rows_at_multiples_and_the_last_epoch(tmp_path):
    """--eval-every 2 over 5 epochs: rows at epochs 2, 4 and 5 (the last), with the same
    validation results as evaluating every epoch and the training loss averaged since the last row."""
    common = ["--epochs", "5", "--batch-size", "128", "--lr", "0.05", "--seed", "2"]
    every_2, every_1 = tmp_path / "every2", tmp_path / "every1"
    for out, n in ((every_2, "2"), (every_1, "1")):
        result = cli("train", *common, "--eval-every", n, "--out", str(out), timeout=240)
        assert result.returncode == 0, result.stderr
    rows = read_metrics(every_2 / "metrics_rank0.csv")
    full = {int(r["epoch"]): r for r in read_metrics(every_1 / "metrics_rank0.csv")}
    assert [int(r["epoch"]) for r in rows] == [2, 4, 5]
    assert sorted(full) == [1, 2, 3, 4, 5]
    steps_per_epoch = 1438 // 128
    for row in rows:
        epoch = int(row["epoch"])
        assert int(row["step"]) == int(full[epoch]["step"]) == epoch * steps_per_epoch
        for key in ("val_loss", "val_acc", "lr"):
            assert float(row[key]) == pytest.approx(float(full[epoch][key]), rel=1e-6), key
    # the training loss of a row is the mean over the steps since the previous row
    since = {2: (1, 2), 4: (3, 4), 5: (5,)}
    for row in rows:
        epochs = since[int(row["epoch"])]
        mean = sum(float(full[e]["train_loss"]) for e in epochs) / len(epochs)
        assert float(row["train_loss"]) == pytest.approx(mean, rel=1e-5)
