"""Bad input is refused with one clear line, exit code 2, and nothing written.

Most cases call the real entry points (``crossover_sgd.cli.main`` / ``crossover_sgd.legacy.main``)
in this process, which is what the console script and ``imagenet_test.py`` run; a handful go
through a real subprocess for the exit-code path, the local launcher and the worker's own checks.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch


from support import ROOT, child_env, cli, run

LEGACY = str(ROOT / "imagenet_test.py")
FAST = ["--dataset", "digits", "--model", "small_cnn"]  # legacy defaults are imagenet/resnet50
#: In-process calls start from settings that would train for seconds, not hours, should a case
#: ever be accepted by mistake (the case's own flags come later and win).
SHORT_TRAIN = ["--epochs", "1", "--workers", "0"]
SHORT_LEGACY = [*FAST, "--maxepoch", "1", "--warmup_epoch", "0", "--workers", "0"]


# ----------------------------------------------------------------------------- helpers
def assert_refused(code: int, stderr: str, *names: str, expected_code: int = 2) -> str:
    """Exit ``expected_code``, no traceback, exactly one line mentioning an error, and it is
    the last line, starts the message with ``error:`` and names every string in ``names``."""
    assert code == expected_code, f"exit code {code}, stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    last = lines[-1]
    assert "error:" in last, stderr
    for name in names:
        assert name in last, f"{name!r} not named in {last!r}"
    assert sum("error" in line.lower() for line in lines) == 1, stderr
    return last


def snapshot(root: Path) -> Dict[str, Tuple[int, int, bytes]]:
    """Every path below ``root`` (and ``root`` itself) with its mtime, size and bytes."""
    state = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.stat()
        data = path.read_bytes() if path.is_file() else b""
        state[str(path.relative_to(root))] = (st.st_mtime_ns, st.st_size, data)
    return state


@pytest.fixture
def dirs(tmp_path) -> Dict[str, Path]:
    """Data directories that hold no usable data."""
    empty_splits = tmp_path / "empty_splits"  # train/ and val/ without anything inside
    for split in ("train", "val"):
        (empty_splits / split).mkdir(parents=True)
    empty_classes = tmp_path / "empty_classes"  # class folders without images
    for split in ("train", "val"):
        (empty_classes / split / "cat").mkdir(parents=True)
        (empty_classes / split / "cat" / "notes.txt").write_text("not an image\n")
    only_train = tmp_path / "only_train"
    (only_train / "train" / "cat").mkdir(parents=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    return {"missing": tmp_path / "no_such_dir", "empty": empty, "empty_splits": empty_splits,
            "empty_classes": empty_classes, "only_train": only_train}


# ----------------------------------------------------------------------------- crossover-sgd train
TRAIN_CASES: List[Tuple[List[str], List[str]]] = [
    (["--algorithm", "adamw"], ["--algorithm", "adamw"]),
    (["--model", "vgg16"], ["--model", "vgg16"]),
    (["--dataset", "imagenette"], ["--dataset", "imagenette"]),
    (["--lr-schedule", "exp"], ["--lr-schedule", "exp"]),
    (["--batch-size", "0"], ["--batch-size 0"]),
    (["--batch_size", "-4"], ["--batch-size -4"]),
    (["--local-itr", "0"], ["--local-itr 0"]),
    (["--local_itr", "-1"], ["--local-itr -1"]),
    (["--epochs", "0"], ["--epochs 0"]),
    (["--nesterov", "maybe"], ["--nesterov", "maybe"]),
    (["--sync-grad", "Ture"], ["--sync-grad", "Ture"]),
    (["--batch-size", "many"], ["--batch-size", "many"]),
    (["--world-size", "4"], ["--world_size 4", "1 rank"]),        # the worker detects one rank
    (["--world_size", "0", "--nproc", "1"], ["--world_size 0"]),
    (["--gpu-per-node", "2"], ["--gpu_per_node 2", "world size 1"]),  # 1 % 2 != 0, found by the worker
    (["--nproc", "2", "--world-size", "3"], ["--world_size 3", "--nproc 2"]),
    (["--nproc", "3", "--gpu_per_node", "2"], ["--gpu_per_node 2", "3"]),
    (["--nproc", "0"], ["--nproc 0"]),
    (["--dataset", "imagenet"], ["--dataset imagenet", "--data-dir"]),
    (["--dataset", "cifar10"], ["--dataset cifar10", "--data-dir"]),
    (["--algorithm", "crossover", "--chromosome", "medium"], ["--chromosome", "medium"]),
    (["--algorithm", "hierarchical-crossover", "--nproc", "4", "--groupnum", "3"], ["--groupnum 3"]),
    (["--algorithm", "sgp", "--sgp-peers", "0"], ["--sgp-peers 0"]),
    (["--algorithm", "allreduce", "--gossip-overlap", "True"], ["--gossip-overlap", "allreduce"]),
    (["--algorithm", "hierarchical-crossover", "--sgp-overlap", "True"], ["--gossip-overlap", "hierarchical"]),
    (["--log-level", "bogus"], ["--log-level", "'bogus'", "DEBUG, INFO, WARNING, ERROR, CRITICAL"]),
    (["--log_level", "verbose"], ["--log_level", "'verbose'", "WARNING"]),
    (["--dtype", "float16"], ["--dtype", "'float16'", "float32, float64"]),
    (["--dtype", "float64", "--amp", "bf16"], ["--amp bf16", "--dtype float64"]),
]


@pytest.mark.parametrize("argv,names", TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES])
def test_train_refuses_bad_flag(call, tmp_path, argv, names):
    out = tmp_path / "out"
    code, err = call("cli", ["train", *SHORT_TRAIN, "--out", str(out), *argv])
    assert_refused(code, err, *names)
    assert not out.exists()


DATA_CASES = ([(name, which) for name in ("imagefolder", "imagenet")
               for which in ("missing", "empty", "empty_splits", "empty_classes", "only_train")]
              + [(name, which) for name in ("cifar10", "mnist") for which in ("missing", "empty", "empty_splits")])


@pytest.mark.parametrize("dataset,which", DATA_CASES)
def test_train_refuses_data_dir_without_data(call, tmp_path, dirs, dataset, which):
    out = tmp_path / "out"
    data = dirs[which]
    code, err = call("cli", ["train", *SHORT_TRAIN, "--dataset", dataset, "--data-dir", str(data),
                             "--image-size", "16", "--out", str(out)])
    last = assert_refused(code, err, str(data))
    if dataset == "cifar10" and which != "missing":
        assert "cifar-10-batches-py" in last and "never downloads" in last
    if dataset == "mnist" and which != "missing":
        assert "MNIST/raw" in last and "never downloads" in last
    assert not out.exists()
    if data.exists():
        assert not any(p.name in ("cifar-10-batches-py", "MNIST") for p in data.iterdir()), "downloaded?"


def test_train_refuses_out_dir_holding_another_run(call, tmp_path):
    out = tmp_path / "previous"
    out.mkdir()
    (out / "config.json").write_text('{"algorithm": "allreduce"}\n')
    (out / "metrics_rank0.csv").write_text("epoch,step\n1,44\n")
    before = snapshot(out)
    code, err = call("cli", ["train", "--epochs", "1", "--out", str(out)])
    assert_refused(code, err, str(out), "already holds a run", "--resume")
    assert snapshot(out) == before


def test_train_refuses_out_path_that_is_a_file(call, tmp_path):
    out = tmp_path / "a_file"
    out.write_text("keep me\n")
    code, err = call("cli", ["train", "--epochs", "1", "--out", str(out)])
    assert_refused(code, err, str(out), "not a directory")
    assert out.read_text() == "keep me\n"


@pytest.mark.parametrize("make", ["missing", "empty", "run_without_checkpoint"])
def test_resume_refuses_dir_without_checkpoint(call, tmp_path, make):
    out = tmp_path / "run"
    if make != "missing":
        out.mkdir()
    if make == "run_without_checkpoint":
        (out / "config.json").write_text("{}\n")
    before = snapshot(out) if out.exists() else None
    code, err = call("cli", ["train", "--epochs", "1", "--out", str(out), "--resume"])
    assert_refused(code, err, str(out), "no checkpoint")
    assert (snapshot(out) if out.exists() else None) == before


def test_resume_without_out_is_refused(call):
    code, err = call("cli", ["train", "--epochs", "1", "--resume"])
    assert_refused(code, err, "--resume", "--out")


# ----------------------------------------------------------------------------- imagenet_test.py
LEGACY_CASES: List[Tuple[List[str], List[str]]] = [
    (["--allreduce", "True", "--crossover", "True"], ["--crossover True", "--allreduce True"]),
    (["--allreduce", "Yes please"], ["--allreduce", "Yes please"]),
    (["--clip_grad", "Flase", "--allreduce", "True"], ["--clip_grad", "Flase"]),
    (["--allreduce", "True", "--batch_size", "0"], ["--batch_size 0"]),
    (["--allreduce", "True", "--local_itr", "0"], ["--local_itr 0"]),
    (["--allreduce", "True", "--lrdecay", "exponential"], ["--lrdecay", "exponential"]),
    (["--allreduce", "True", "--model", "alexnet"], ["alexnet"]),
    (["--allreduce", "True", "--world_size", "32"], ["--world_size 32", "1 rank"]),
    (["--allreduce", "True", "--nproc", "2", "--world_size", "32"], ["--world_size 32", "--nproc 2"]),
    (["--allreduce", "True", "--nproc", "3", "--gpu_per_node", "2"], ["--gpu_per_node 2"]),
    (["--allreduce", "True", "--gpu_per_node", "2"], ["--gpu_per_node 2"]),
    (["--allreduce", "True", "--warmup_epoch", "95", "--maxepoch", "90"], ["--warmup_epoch 95"]),
    (["--allreduce", "True", "--groupnum", "2"], ["--groupnum 2", "--crossover True"]),
    (["--crossover", "True", "--chromosome", "medium"], ["--chromosome", "medium"]),
]


@pytest.mark.parametrize("argv,names", LEGACY_CASES, ids=[" ".join(c[0]) for c in LEGACY_CASES])
def test_legacy_refuses_bad_flag(call, tmp_path, argv, names):
    out = tmp_path / "out"
    code, err = call("legacy", [*SHORT_LEGACY, "--out", str(out), *argv])
    assert assert_refused(code, err, *names).startswith("imagenet_test.py: error:")
    assert not out.exists()


def test_legacy_imagenet_needs_data_dir(call, tmp_path, dirs):
    out = tmp_path / "out"
    short = ["--allreduce", "True", "--maxepoch", "1", "--warmup_epoch", "0", "--workers", "0"]
    code, err = call("legacy", [*short, "--out", str(out)])
    assert_refused(code, err, "--data ")  # the legacy script's own name for the flag
    code, err = call("legacy", [*short, "--data", str(dirs["empty_splits"]), "--out", str(out)])
    assert_refused(code, err, str(dirs["empty_splits"]))
    assert not out.exists()


# ----------------------------------------------------------------------------- real subprocesses
def test_subprocess_unknown_algorithm_exits_2(tmp_path):
    out = tmp_path / "out"
    result = cli("train", "--algorithm", "adamw", "--out", str(out))
    assert_refused(result.returncode, result.stderr, "adamw")
    assert result.stderr.strip().startswith("crossover-sgd: error:")
    assert result.stdout == ""
    assert not out.exists()


def test_subprocess_legacy_string_boolean_exits_2(tmp_path):
    out = tmp_path / "out"
    result = run([sys.executable, LEGACY, "--allreduce", "maybe", "--out", str(out)])
    assert_refused(result.returncode, result.stderr, "maybe")
    assert result.stderr.strip().startswith("imagenet_test.py: error:")
    assert not out.exists()


@pytest.mark.parametrize("argv,names", [
    (["--nproc", "2", "--world_size", "3"], ["--world_size 3", "--nproc 2"]),   # disagrees with launcher
    (["--nproc", "3", "--gpu_per_node", "2"], ["--gpu_per_node 2", "3"]),     # does not divide
    (["--gpu_per_node", "2"], ["--gpu_per_node 2", "world size 1"]),           # single process: 1 % 2
], ids=["nproc-world_size", "nproc-gpu_per_node", "single-gpu_per_node"])
def test_subprocess_world_size_and_gpu_per_node(tmp_path, argv, names):
    out = tmp_path / "out"
    result = cli("train", "--epochs", "1", "--out", str(out), *argv)
    assert_refused(result.returncode, result.stderr, *names)
    assert not out.exists()


def test_subprocess_legacy_world_size_disagrees_with_single_process(tmp_path):
    """No launcher at all: the worker itself finds one rank and refuses ``--world_size 4``."""
    out = tmp_path / "out"
    result = run([sys.executable, LEGACY, "--allreduce", "True", *FAST, "--world_size", "4", "--out", str(out)])
    assert_refused(result.returncode, result.stderr, "--world_size 4", "single", "1 rank")
    assert not out.exists()


def test_subprocess_log_level_is_checked_by_the_parser(tmp_path):
    """An unknown level used to end in logging's ValueError traceback (exit 1) once training began."""
    out = tmp_path / "out"
    result = cli("train", "--log-level", "bogus", "--out", str(out), cwd=tmp_path)
    assert_refused(result.returncode, result.stderr, "--log-level", "'bogus'", "DEBUG", "CRITICAL")
    assert len(result.stderr.splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("level", ["debug", "Warning", "ERROR"])
def test_log_level_in_any_case(level):
    from crossover_sgd.cli import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["train", "--log-level", level]))
    assert config.log_level == level.upper()
    config.validate()


#: A task of an ``srun`` step as Slurm describes it, without MASTER_ADDR (the node list gives it).
SLURM_TASK = {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
              "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": "node[01-02]",
              "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}


@pytest.mark.parametrize("variable,value", [
    ("SLURM_STEP_NODELIST", "node[1-"),        # unbalanced
    ("SLURM_STEP_NODELIST", "node[3-1]"),      # a range going down
    ("SLURM_STEP_NODELIST", "node]1["),        # closed before opened
    ("SLURM_JOB_NODELIST", "gpu[01-x]"),       # the job's list, when the step's is not set
    ("SLURM_STEP_TASKS_PER_NODE", "2(x"),
])
@pytest.mark.parametrize("command", ["train", "launch-info"])
def test_subprocess_malformed_slurm_variable(tmp_path, variable, value, command):
    """A malformed node list (or tasks-per-node spec) from Slurm used to end in a ValueError traceback."""
    env = dict(SLURM_TASK)
    if variable == "SLURM_JOB_NODELIST":
        del env["SLURM_STEP_NODELIST"]
    env[variable] = value
    out = tmp_path / "out"
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    args = ["train", "--out", str(out)] if command == "train" else ["launch-info"]
    result = cli(*args, env=child_env(env), cwd=workdir, timeout=120)
    last = assert_refused(result.returncode, result.stderr, f"{variable}={value!r}")
    assert "malformed" in last and "expected" in last, last
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert not out.exists() and list(workdir.iterdir()) == []


@pytest.mark.parametrize("dataset,which", [("imagefolder", "missing"), ("imagefolder", "empty_splits"),
                                           ("mnist", "empty"), ("cifar10", "missing")])
def test_subprocess_data_dir_checked_before_ranks_start(tmp_path, dirs, dataset, which):
    """With --nproc the launcher checks the data once, so the user sees one line, not one per rank."""
    out = tmp_path / "out"
    result = cli("train", "--nproc", "2", "--dataset", dataset, "--data-dir", str(dirs[which]),
                 "--out", str(out))
    assert_refused(result.returncode, result.stderr, str(dirs[which]))
    assert "local ranks" not in result.stdout + result.stderr  # refused before any rank was started
    assert not out.exists()


def test_subprocess_image_folders_with_different_classes(tmp_path, image_folder):
    """A class folder missing from val/ is found before the ranks start (one line, not one per rank)."""
    shutil.rmtree(image_folder / "val" / "class2")
    out = tmp_path / "out"
    result = cli("train", "--nproc", "2", "--dataset", "imagefolder", "--data-dir", str(image_folder),
                 "--image-size", "16", "--out", str(out))
    assert_refused(result.returncode, result.stderr, str(image_folder), "class folders")
    assert not out.exists()


# ----------------------------------------------------------------------------- a real finished run
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real single-process run of one epoch (~5 s), with its checkpoint."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = cli("train", "--epochs", "1", "--batch-size", "64", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "checkpoints" / "latest.json").is_file()
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def checkpoint_file(out: Path) -> Path:
    (path,) = list((out / "checkpoints").glob("step*/rank0.pt"))
    return path


@pytest.mark.slow
def test_subprocess_resume_truncated_checkpoint(run_copy):
    path = checkpoint_file(run_copy)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = snapshot(run_copy)
    result = cli("train", "--epochs", "1", "--batch-size", "64", "--out", str(run_copy), "--resume")
    last = assert_refused(result.returncode, result.stderr, str(path))
    assert "truncated" in last
    assert snapshot(run_copy) == before


@pytest.mark.slow
def test_subprocess_out_dir_holding_finished_run(run_copy):
    before = snapshot(run_copy)
    result = cli("train", "--nproc", "2", "--epochs", "1", "--out", str(run_copy))
    assert_refused(result.returncode, result.stderr, str(run_copy), "already holds a run")
    assert snapshot(run_copy) == before


def assert_one_line(result, *names: str) -> str:
    """Refused (exit 2) with exactly one line on stderr, whatever the number of ranks."""
    last = assert_refused(result.returncode, result.stderr, *names)
    assert result.stderr.splitlines() == [last], f"more than one line on stderr:\n{result.stderr}"
    assert last.startswith("crossover-sgd: error:"), last
    return last


@pytest.mark.slow
def test_subprocess_nproc_error_found_by_every_rank_is_one_line(tmp_path):
    """The batch is larger than each rank's shard: found by every rank inside the run (after the
    process group started), reported once, with no launcher notice or 'rank exited' line on stderr."""
    out = tmp_path / "out"
    result = cli("train", "--nproc", "2", "--batch-size", "1000", "--epochs", "1", "--out", str(out), cwd=tmp_path)
    assert_one_line(result, "--batch-size 1000", "2 ranks")
    assert "2 local ranks" in result.stdout  # the notice is on stdout
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


@pytest.fixture(scope="module")
def finished_two_rank_run(tmp_path_factory) -> Path:
    """A real 2-rank run of one epoch with its checkpoints."""
    out = tmp_path_factory.mktemp("finished2") / "run"
    result = cli("train", "--nproc", "2", "--epochs", "1", "--batch-size", "64", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "checkpoints" / "latest.json").is_file()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [(1,), (0, 1)], ids=["rank1", "both"])
def test_subprocess_nproc_resume_truncated_checkpoint_is_one_line(finished_two_rank_run, tmp_path, ranks):
    """Rank 1's file alone (rank 0 then waits at the rendezvous and must be stopped, silently), or
    both files (each rank finds its own): one line, the lowest rank's, exit 2, nothing written."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished_two_rank_run, run_dir)
    (folder,) = list((run_dir / "checkpoints").glob("step*"))
    for rank in ranks:
        path = folder / f"rank{rank}.pt"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = snapshot(run_dir)
    result = cli("train", "--nproc", "2", "--epochs", "1", "--batch-size", "64", "--out", str(run_dir), "--resume",
                 timeout=120)
    last = assert_one_line(result, str(folder / f"rank{ranks[0]}.pt"), "truncated")
    assert "exited with code" not in last
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_torchrun_world_size_mismatch_is_said_by_rank_0_only(tmp_path):
    """Under a real launcher (torchrun, 2 ranks) every rank finds ``--world_size 3`` wrong; rank 0
    alone says so. torchrun adds its own report of the failed workers (a traceback of its own and
    a summary) to stderr: our line must be in it exactly once."""
    out = tmp_path / "out"
    result = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                  "-m", "crossover_sgd", "train", "--world_size", "3", "--out", str(out)], cwd=tmp_path, timeout=180)
    assert result.returncode != 0, result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("crossover-sgd:")]
    assert ours == ["crossover-sgd: error: --world_size 3 disagrees with the launcher: torchrun started 2 rank(s)"], \
        result.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.slow
def test_out_dir_holding_finished_run_in_process(call, run_copy):
    before = snapshot(run_copy)
    code, err = call("cli", ["train", "--epochs", "1", "--batch-size", "64", "--out", str(run_copy)])
    assert_refused(code, err, str(run_copy), "already holds a run")
    assert snapshot(run_copy) == before


@pytest.mark.slow
@pytest.mark.parametrize("foreign", ["dict", "list", "text"])
def test_resume_foreign_checkpoint(call, run_copy, foreign):
    path = checkpoint_file(run_copy)
    if foreign == "dict":
        torch.save({"weights": torch.zeros(3)}, path)
    elif foreign == "list":
        torch.save([torch.ones(2)], path)
    else:
        path.write_text("this is not a checkpoint\n")
    before = snapshot(run_copy)
    code, err = call("cli", ["train", "--epochs", "1", "--batch-size", "64", "--out", str(run_copy), "--resume"])
    last = assert_refused(code, err, str(path))
    assert "not a crossover-sgd checkpoint" in last or "not a torch file" in last
    assert snapshot(run_copy) == before


@pytest.mark.slow
@pytest.mark.parametrize("flag,value,field", [("--batch-size", "32", "batch_size"),
                                               ("--local-itr", "2", "local_itr"),
                                               ("--model", "resnet18", "model")])
def test_resume_with_different_settings(call, run_copy, flag, value, field):
    before = snapshot(run_copy)
    argv = ["train", "--epochs", "1", "--batch-size", "64", "--out", str(run_copy), "--resume", flag, value]
    code, err = call("cli", argv)
    assert_refused(code, err, field, repr(64 if field == "batch_size" else 1 if field == "local_itr"
                                          else "small_cnn"))
    assert snapshot(run_copy) == before


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing_step", "broken_marker"])
def test_resume_with_damaged_marker(call, run_copy, damage):
    marker = run_copy / "checkpoints" / "latest.json"
    if damage == "missing_step":
        marker.write_text('{"step": 999, "world_size": 1}\n')
        expected = "step00000999"
    else:
        marker.write_text('{"step": 4')
        expected = "latest.json"
    before = snapshot(run_copy)
    code, err = call("cli", ["train", "--epochs", "1", "--batch-size", "64", "--out", str(run_copy), "--resume"])
    assert_refused(code, err, expected)
    assert snapshot(run_copy) == before
