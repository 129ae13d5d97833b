"""Checkpoint files, run outputs and atomic writes, on real files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Dict

import pytest
import torch

from crossover_sgd.atomic import atomic_write, atomic_write_json, atomic_write_text
from crossover_sgd.errors import ConfigError
from crossover_sgd.training.checkpoint import (FORMAT, MUST_MATCH, VERSION, load_checkpoint, publish_checkpoint,
                                               save_checkpoint)
from crossover_sgd.training.outputs import METRIC_COLUMNS, RUN_MARKERS, MetricsLog, check_out_dir

CPU = torch.device("cpu")
KNOWN = {"world_size": 2, "algorithm": "allreduce", "model": "small_cnn", "dataset": "digits",
         "batch_size": 32, "local_itr": 1}
OTHER = {"world_size": 4, "algorithm": "sgp", "model": "resnet18", "dataset": "cifar10",
         "batch_size": 64, "local_itr": 3}
#: What the saved run was: every field that must match (a field added later gets a placeholder).
RUN = {key: KNOWN.get(key, f"saved-{key}") for key in MUST_MATCH}


def state(step: int, rank: int) -> Dict[str, Any]:
    torch.manual_seed(step * 10 + rank)
    return {**RUN, "rank": rank, "step": step, "epoch": step // 10,
            "model_state": {"weight": torch.randn(4, 3), "bias": torch.randn(4)},
            "rng": torch.get_rng_state(), "metrics": [{"epoch": 1, "val_acc": 0.5}], "elapsed_s": 1.5}


def save_step(out: Path, step: int, ranks=(0, 1)) -> None:
    for rank in ranks:
        save_checkpoint(out, rank, step, state(step, rank))


def leftovers(root: Path):
    return sorted(p.name for p in root.rglob("*.tmp"))


def step_dirs(out: Path):
    return sorted(p.name for p in (out / "checkpoints").glob("step*"))


# ----------------------------------------------------------------------------- checkpoints
def test_save_publish_load_round_trip(tmp_path):
    save_step(tmp_path, 120)
    publish_checkpoint(tmp_path, 120, world_size=2)
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text()) == {"step": 120, "world_size": 2}
    for rank in (0, 1):
        loaded = load_checkpoint(tmp_path, rank, RUN, CPU)
        original = state(120, rank)
        assert loaded["format"] == FORMAT and loaded["version"] == VERSION
        assert loaded["rank"] == rank and loaded["step"] == 120 and loaded["metrics"] == original["metrics"]
        for key in ("weight", "bias"):
            assert torch.equal(loaded["model_state"][key], original["model_state"][key])
        assert torch.equal(loaded["rng"], original["rng"])
    assert not torch.equal(load_checkpoint(tmp_path, 0, RUN, CPU)["model_state"]["weight"],
                           load_checkpoint(tmp_path, 1, RUN, CPU)["model_state"]["weight"])
    assert (tmp_path / "checkpoints" / "step00000120" / "rank1.pt").is_file()
    assert leftovers(tmp_path) == []


def test_latest_points_only_to_a_complete_step(tmp_path):
    save_step(tmp_path, 10)
    publish_checkpoint(tmp_path, 10, world_size=2)
    save_step(tmp_path, 20, ranks=(0,))  # rank 1 has not saved step 20 yet: not published
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["step"] == 10
    assert load_checkpoint(tmp_path, 0, RUN, CPU)["step"] == 10
    assert load_checkpoint(tmp_path, 1, RUN, CPU)["step"] == 10
    assert step_dirs(tmp_path) == ["step00000010", "step00000020"]
    save_step(tmp_path, 20, ranks=(1,))
    publish_checkpoint(tmp_path, 20, world_size=2)
    assert [load_checkpoint(tmp_path, r, RUN, CPU)["step"] for r in (0, 1)] == [20, 20]


def test_publish_removes_older_steps(tmp_path):
    for step in (5, 10, 15):
        save_step(tmp_path, step)
    publish_checkpoint(tmp_path, 15, world_size=2)
    assert step_dirs(tmp_path) == ["step00000015"]
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "step00000015").iterdir()) == ["rank0.pt", "rank1.pt"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest.json", "step00000015"]


def test_save_overwrites_atomically(tmp_path):
    first = save_checkpoint(tmp_path, 0, 7, state(7, 0))
    changed = state(7, 0)
    changed["epoch"] = 99
    second = save_checkpoint(tmp_path, 0, 7, changed)
    assert first == second
    assert torch.load(second, weights_only=True)["epoch"] == 99
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("field", MUST_MATCH)
def test_resume_of_another_run_is_refused_naming_the_field(tmp_path, field):
    save_step(tmp_path, 10)
    publish_checkpoint(tmp_path, 10, world_size=2)
    other = OTHER.get(field, f"other-{field}")
    with pytest.raises(ConfigError) as exc:
        load_checkpoint(tmp_path, 0, {**RUN, field: other}, CPU)
    message = str(exc.value)
    assert f"{field}={RUN[field]!r}" in message and f"{field}={other!r}" in message
    assert load_checkpoint(tmp_path, 0, RUN, CPU)["step"] == 10  # the matching run still loads


@pytest.mark.parametrize("world_size", [1, 3])
def test_other_world_size_is_refused_alike_on_every_rank(tmp_path, world_size):
    save_step(tmp_path, 10)
    publish_checkpoint(tmp_path, 10, world_size=2)
    messages = set()
    for rank in range(world_size):  # rank 2 has no file: it still gets the same message as the others
        with pytest.raises(ConfigError) as exc:
            load_checkpoint(tmp_path, rank, {**RUN, "world_size": world_size}, CPU)
        messages.add(str(exc.value))
    (message,) = messages
    assert "world_size=2" in message and f"world_size={world_size}" in message


def test_missing_rank_file(tmp_path):
    save_step(tmp_path, 10)
    publish_checkpoint(tmp_path, 10, world_size=2)
    (tmp_path / "checkpoints" / "step00000010" / "rank1.pt").unlink()
    for rank in (0, 1):  # every rank (and the --nproc launcher) reports the same incomplete step
        with pytest.raises(ConfigError, match=r"lacks the files of rank\(s\) \[1\]"):
            load_checkpoint(tmp_path, rank, RUN, CPU)


@pytest.mark.parametrize("marker", [None, "", "{}", "[1, 2]", '{"step": "ten"}', '{"step": 1'])
def test_missing_or_unreadable_marker(tmp_path, marker):
    save_step(tmp_path, 10)
    if marker is not None:
        (tmp_path / "checkpoints" / "latest.json").write_text(marker)
    with pytest.raises(ConfigError, match="latest.json is missing or unreadable"):
        load_checkpoint(tmp_path, 0, RUN, CPU)


@pytest.mark.parametrize("content,expected", [
    ("truncated", "truncated or not a torch file"),
    ("empty", "truncated or not a torch file"),
    ("foreign", "is not a crossover-sgd checkpoint"),
    ("tensor", "is not a crossover-sgd checkpoint"),
    ("future", "checkpoint version 2"),
])
def test_broken_or_foreign_checkpoint_file(tmp_path, content, expected):
    save_step(tmp_path, 10)
    publish_checkpoint(tmp_path, 10, world_size=2)
    path = tmp_path / "checkpoints" / "step00000010" / "rank0.pt"
    if content == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        torch.save({**state(10, 0), "format": FORMAT, "version": VERSION + 1}, path)
    with pytest.raises(ConfigError) as exc:
        load_checkpoint(tmp_path, 0, RUN, CPU)
    assert expected in str(exc.value) and str(path) in str(exc.value)
    assert load_checkpoint(tmp_path, 1, RUN, CPU)["rank"] == 1  # the other rank's file is untouched


# ----------------------------------------------------------------------------- outputs
def test_metrics_log_writes_header_and_rows(tmp_path):
    log = MetricsLog(tmp_path, rank=3)
    assert log.path == tmp_path / "metrics_rank3.csv" and not log.path.exists()
    rows = [{c: i * 10 + j for j, c in enumerate(METRIC_COLUMNS)} for i in range(3)]
    log.append({**rows[0], "extra": "ignored"})
    assert log.path.read_text().splitlines() == [",".join(METRIC_COLUMNS), ",".join(str(v) for v in rows[0].values())]
    for row in rows[1:]:
        log.append(row)
    with open(log.path, newline="") as handle:
        read = list(csv.DictReader(handle))
    assert [list(r) for r in read] == [list(METRIC_COLUMNS)] * 3
    assert [[int(v) for v in r.values()] for r in read] == [list(r.values()) for r in rows]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics_rank3.csv"]  # no temp files left


def test_metrics_log_incomplete_row_changes_nothing(tmp_path):
    log = MetricsLog(tmp_path, rank=0)
    log.append({c: 1 for c in METRIC_COLUMNS})
    before = log.path.read_bytes()
    with pytest.raises(KeyError):
        log.append({"epoch": 2})
    assert log.path.read_bytes() == before and len(log.rows) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics_rank0.csv"]


def test_metrics_log_resumed_rows_are_rewritten(tmp_path):
    old = [{c: 1 for c in METRIC_COLUMNS}]
    (tmp_path / "metrics_rank0.csv").write_text("damaged,half a line")
    log = MetricsLog(tmp_path, 0, rows=old)
    log.write()
    log.append({c: 2 for c in METRIC_COLUMNS})
    text = log.path.read_text()
    assert text == ",".join(METRIC_COLUMNS) + "\n" + ",".join(["1"] * len(METRIC_COLUMNS)) + "\n" + \
        ",".join(["2"] * len(METRIC_COLUMNS)) + "\n"
    old[0]["epoch"] = 99
    assert log.rows[0]["epoch"] == 1  # the log keeps its own copy


def test_check_out_dir_accepts_new_empty_and_unrelated(tmp_path):
    missing = tmp_path / "new"
    check_out_dir(missing, resume=False)
    assert not missing.exists()  # checking writes nothing
    check_out_dir(tmp_path, resume=False)  # empty
    (tmp_path / "slurm-1234.out").write_text("job log\n")
    (tmp_path / "notes").mkdir()
    check_out_dir(tmp_path, resume=False)


@pytest.mark.parametrize("marker", [*RUN_MARKERS, "metrics_rank0.csv", "metrics_rank12.csv"])
def test_check_out_dir_refuses_another_run(tmp_path, marker):
    if marker == "checkpoints":
        (tmp_path / marker).mkdir()
    else:
        (tmp_path / marker).write_text("{}\n")
    with pytest.raises(ConfigError) as exc:
        check_out_dir(tmp_path, resume=False)
    assert marker in str(exc.value) and str(tmp_path) in str(exc.value) and "--resume" in str(exc.value)


def test_check_out_dir_resume_needs_a_published_checkpoint(tmp_path):
    for out in (tmp_path / "missing", tmp_path):
        with pytest.raises(ConfigError, match="no checkpoint to resume from"):
            check_out_dir(out, resume=True)
    (tmp_path / "config.json").write_text("{}\n")
    save_step(tmp_path, 10)  # saved but never published
    with pytest.raises(ConfigError, match="no checkpoint to resume from"):
        check_out_dir(tmp_path, resume=True)
    publish_checkpoint(tmp_path, 10, world_size=2)
    check_out_dir(tmp_path, resume=True)
    with pytest.raises(ConfigError, match="already holds a run"):
        check_out_dir(tmp_path, resume=False)


def test_check_out_dir_refuses_a_file(tmp_path):
    path = tmp_path / "out"
    path.write_text("x")
    for resume in (False, True):
        with pytest.raises(ConfigError, match="is not a directory"):
            check_out_dir(path, resume=resume)


# ----------------------------------------------------------------------------- atomic writes
def test_atomic_write_replaces_and_creates_parents(tmp_path):
    path = tmp_path / "a" / "b" / "file.json"
    atomic_write_json(path, {"x": [1, 2]})
    assert json.loads(path.read_text()) == {"x": [1, 2]}
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.json"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_write_keeps_old_file_when_writer_raises(tmp_path, error):
    path = tmp_path / "state.bin"
    path.write_bytes(b"old content")

    def writer(handle: io.BufferedWriter) -> None:
        handle.write(b"half of the new")
        raise error("writer died")

    with pytest.raises(error):
        atomic_write(path, writer)
    assert path.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]  # the temp file is gone


def test_atomic_write_failure_creates_no_file(tmp_path):
    path = tmp_path / "never.pt"

    def writer(handle: io.BufferedWriter) -> None:
        torch.save({"w": torch.zeros(1000)}, handle)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, writer)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary exists
