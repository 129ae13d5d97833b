"""The job scripts compute the right sbatch and launch commands for every algorithm, launcher and
container (``DRY_RUN=1`` prints them instead of running them; the real runs are in
test_hpc_slurm.py), and every shell script parses."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from crossover_sgd.cli import build_parser, config_from_args
from crossover_sgd.legacy import build_legacy_parser, legacy_config
from support import ROOT

pytestmark = pytest.mark.slow

SLURM = ROOT / "scripts" / "slurm"
EXAMPLES = SLURM / "examples"
ALGORITHMS = ("allreduce", "sgp", "crossover", "hierarchical-crossover")
#: An 8-node x 4-GPU job as Slurm describes it to the batch script.
JOB_ENV = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "32", "SLURM_JOB_NUM_NODES": "8",
           "SLURM_NTASKS_PER_NODE": "4", "SLURM_JOB_NODELIST": "node[01-08]"}


def dry_run(script: Path, *args: str, env: Dict[str, str], cwd: Path) -> List[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    clean.pop("SLURM_CONF", None)
    result = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=30, cwd=cwd,
                            env={**clean, "DRY_RUN": "1", **env})
    assert result.returncode == 0, result.stderr
    return shlex.split(result.stdout)


def after(words: List[str], marker: str) -> List[str]:
    return words[words.index(marker) + 1:]


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "scripts").rglob("*") if p.suffix in (".sh", ".sbatch")),
                         ids=lambda p: str(p.relative_to(ROOT / "scripts")))
def test_shell_scripts_parse_and_are_executable(path):
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert os.access(path, os.X_OK), f"{path} is not executable"
    assert path.read_text().startswith("#!/")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_example_submits_the_study_recipe_for_its_algorithm(algorithm, tmp_path):
    words = dry_run(EXAMPLES / f"{algorithm}.sh", "--maxepoch", "45", env={}, cwd=tmp_path)
    assert words[:2] == [f"ALGORITHM={algorithm}", f"SCRIPT={ROOT / 'imagenet_test.py'}"]
    sbatch = after(words, "sbatch")
    assert sbatch[:4] == ["--nodes=8", "--ntasks-per-node=4", "--cpus-per-task=8", "--gpus-per-node=4"]
    assert Path(sbatch[4]).resolve() == SLURM / "train.sbatch"
    flags = sbatch[5:]
    assert flags[-2:] == ["--maxepoch", "45"]  # the caller's flags come last: they win
    args = build_legacy_parser().parse_args(flags)  # every flag of the recipe exists
    assert (args.batch_size, args.local_itr, args.lrdecay, args.lars, args.amp) == (128, 21, "poly", True, "fp16")
    assert args.maxepoch == 45 and args.workers == 7


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_the_job_runs_the_study_script_with_the_algorithm_it_names(algorithm, tmp_path):
    words = dry_run(SLURM / "train.sbatch", "--maxepoch", "3", "--gpu_per_node", "2", cwd=tmp_path,
                    env={**JOB_ENV, "ALGORITHM": algorithm, "SCRIPT": str(ROOT / "imagenet_test.py"),
                         "DATA": "/data/imagenet"})
    assert words[:4] == ["srun", "--kill-on-bad-exit=1", "--ntasks=32", "--ntasks-per-node=4"]
    assert words[4:6] == ["python3", str(ROOT / "imagenet_test.py")]
    config = legacy_config(build_legacy_parser().parse_args(words[6:]))
    assert config.algorithm == algorithm
    assert (config.world_size, config.tag, config.data_dir, config.device) == (32, "4242", "/data/imagenet", "cuda")
    assert config.out == "runs/" + algorithm + "-4242" and not config.resume
    if algorithm == "hierarchical-crossover":
        assert config.groupnum == 8  # one group per node


@pytest.mark.parametrize("launch,expected", [
    ("srun", ["srun", "--kill-on-bad-exit=1", "--ntasks=32", "--ntasks-per-node=4"]),
    ("mpirun", ["mpirun", "-np", "32", "-npernode", "4", "--bind-to", "none", "-x", "MASTER_ADDR", "-x", "MASTER_PORT"]),
    ("mpiexec", ["mpiexec", "-n", "32", "-ppn", "4"]),
])
def test_launchers_and_the_container(launch, expected, tmp_path):
    words = dry_run(SLURM / "train.sbatch", "--epochs", "3", cwd=tmp_path,
                    env={**JOB_ENV, "ALGORITHM": "sgp", "LAUNCH": launch, "CONTAINER": "/images/csgd.sif",
                         "SINGULARITY": "singularity", "DATA": "/data/imagenet"})
    assert words[:len(expected)] == expected
    container = after(words, "singularity")
    assert container[:7] == ["exec", "--nv", "--bind", str(tmp_path / "runs" / "sgp-4242"),
                             "--bind", "/data/imagenet:/data/imagenet:ro", "/images/csgd.sif"]
    train = after(container, "crossover_sgd")
    config = config_from_args(build_parser().parse_args(train))
    assert (config.algorithm, config.world_size, config.epochs, config.dataset, config.data_dir) == \
        ("sgp", 32, 3, "imagenet", "/data/imagenet")


def test_local_launch_is_one_node_only_and_resumes_an_existing_run(tmp_path):
    one_node = {**JOB_ENV, "SLURM_NTASKS": "4", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "node01",
                "LAUNCH": "local", "DEVICE": "cpu", "OUT": "run"}
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "latest.json").write_text('{"step": 3, "world_size": 4}')
    words = dry_run(SLURM / "train.sbatch", cwd=tmp_path, env=one_node)
    assert words[:3] == ["python3", "-m", "crossover_sgd"]
    config = config_from_args(build_parser().parse_args(words[3:]))
    assert (config.nproc, config.world_size, config.device, config.out, config.resume) == (4, 4, "cpu", "run", True)

    result = subprocess.run(["bash", str(SLURM / "train.sbatch")], capture_output=True, text=True, timeout=30,
                            cwd=tmp_path, env={**os.environ, **JOB_ENV, "LAUNCH": "local", "DRY_RUN": "1"})
    assert result.returncode == 2 and "LAUNCH=local runs on one node, this job has 8" in result.stderr


def test_job_script_asks_for_the_warning_signal_and_requeue():
    """The #SBATCH lines the preemption path relies on (the real run in test_hpc_slurm.py sends
    the signal by hand): USR1 to the batch shell ("B:") minutes before the limit, requeue allowed,
    output appended across restarts; and the shell traps USR1 and TERM."""
    text = (SLURM / "train.sbatch").read_text()
    directives = [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("#SBATCH ")]
    signal = [d for d in directives if d.startswith("--signal=")]
    assert len(signal) == 1 and signal[0].startswith("--signal=B:USR1@"), directives
    assert int(signal[0].rsplit("@", 1)[1]) >= 120  # time for a checkpoint before the limit
    assert {"--requeue", "--open-mode=append"} <= set(directives)
    assert "trap 'forward USR1' USR1" in text and "trap 'forward TERM' TERM" in text


def test_every_environment_setting_of_the_job_script_is_explained():
    """Each exported NCCL/OMP/runtime variable has a comment right above it (a block of comment
    lines may explain several consecutive exports)."""
    lines = (SLURM / "train.sbatch").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# ---- environment"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("# ----"))
    exported = [i for i in range(start, end) if lines[i].startswith("export ")]
    assert {lines[i].split("=", 1)[0][len("export "):] for i in exported} >= {
        "OMP_NUM_THREADS", "SRUN_CPUS_PER_TASK", "PYTHONUNBUFFERED", "NCCL_DEBUG", "TORCH_NCCL_ASYNC_ERROR_HANDLING"}
    for i in exported:
        assert lines[i - 1].startswith("#"), f"train.sbatch: {lines[i]!r} has no comment above it"
