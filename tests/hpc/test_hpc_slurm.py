"""Real Slurm: ``srun`` and ``sbatch`` on a one-node cluster started for the session (see
``conftest.slurm``), running the project's own job script ``scripts/slurm/train.sbatch``.

Launch detection under srun, the batch shell not mistaken for a rank, training under srun and as
a batch job, and preemption: a warned job checkpoints, requeues itself and ends exactly like an
uninterrupted run; a signal that reaches one rank stops all of them at the same step. Every wait
is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from hpc_cluster import wait_for
from support import ROOT, kill_marked, marked_processes, read_metrics

pytestmark = pytest.mark.slow

CPU_TEST_JOB = ROOT / "scripts" / "slurm" / "examples" / "cpu-test.sh"
IGNORED = {"wall_time_s", "comm_seconds"}  # timings differ between runs; nothing else may
JOB_TIMEOUT = 240  # seconds for one 4-rank job (~20-30 s here when the machine is idle)
START_TIMEOUT = 150  # seconds until a submitted job has trained its first epoch
EPOCHS = "12"  # ~3-6 s of training here: long enough to be interrupted well before the end


def submit(slurm, script: Path, *args: str, env: Dict[str, str]) -> str:
    """Run a job script that submits itself; return the job id sbatch printed."""
    result = slurm.run("bash", str(script), *args, env=slurm.env(env), timeout=60)
    found = re.search(r"Submitted batch job (\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    return found.group(1)


def run_job(slurm, script: Path, *args: str, root: Path, env: Dict[str, str]) -> Tuple[Dict[str, str], str, Path]:
    """Submit a job script (OUT and the job's log under ``root``, this Python unless ``env`` says
    otherwise), wait with squeue until it leaves the queue, and require that it completed with
    exit code 0. Returns scontrol's final record, the job's log and OUT."""
    out, log_path = root / "run", root / "job.out"
    job = submit(slurm, script, *args,
                 env={"OUT": str(out), "SBATCH_OUTPUT": str(log_path), "PYTHON": sys.executable, **env})
    info = slurm.wait_left_queue(job, timeout=JOB_TIMEOUT)
    log = log_path.read_text()
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), log
    return info, log, out


def check_training(out: Path, world: int, launcher: str) -> List[List[Dict[str, str]]]:
    """Every rank wrote its metrics, the run finished, and every replica reached 90 %."""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished", summary["status"]
    assert (summary["launcher"], summary["world_size"], summary["backend"]) == (launcher, world, "gloo")
    assert all(acc >= 0.90 for acc in summary["final_val_acc"]), summary["final_val_acc"]
    rows = [read_metrics(out / f"metrics_rank{r}.csv") for r in range(world)]
    assert all(len(r) == summary["epochs_done"] for r in rows)
    assert all(float(r[-1]["val_acc"]) >= 0.90 for r in rows)
    return rows


def wait_for_first_epoch(slurm, job: str, out: Path, log_path: Path) -> None:
    """Training is under way (the ranks' signal handlers are installed) and not over."""
    def trained_an_epoch():
        if slurm.job(job).get("JobState") not in ("PENDING", "RUNNING"):
            raise AssertionError(f"job {job} ended before it could be signalled:\n"
                                 f"{log_path.read_text() if log_path.exists() else ''}")
        metrics = out / "metrics_rank0.csv"
        return metrics.exists() and len(read_metrics(metrics)) >= 1
    wait_for(trained_an_epoch, START_TIMEOUT, f"the first epoch of job {job}", interval=0.1)


# --------------------------------------------------------------------------------------------
# Launch detection
# --------------------------------------------------------------------------------------------

def test_srun_tasks_detect_slurm_and_meet_at_the_first_node(slurm, tmp_path):
    table_path, ids = tmp_path / "table.json", tmp_path / "ids"
    ids.mkdir()
    # each task records the job and step id it runs in, then becomes launch-info (exec: same process)
    result = slurm.run("srun", "-n", "4", "bash", "-c",
                       f'echo "$SLURM_JOB_ID $SLURM_STEP_ID" > {ids}/$SLURM_PROCID; '
                       f'exec {sys.executable} -m crossover_sgd launch-info --json {table_path}', timeout=120)
    table = json.loads(table_path.read_text())
    assert [row["rank"] for row in table] == [0, 1, 2, 3]
    assert len({(ids / str(r)).read_text() for r in range(4)}) == 1  # one job step
    job, step = (ids / "0").read_text().split()
    expected_port = 20000 + (int(job) * 7 + int(step)) % 20000  # derived alike by every task
    for row in table:
        assert row["launcher"] == "slurm"
        assert row["world_size"] == 4
        assert row["local_rank"] == row["launcher_local_rank"] == row["rank"]
        assert row["local_size"] == 4 and row["node_id"] == 0
        assert row["master_addr"] == "localhost"  # the first (only) host of SLURM_STEP_NODELIST
        assert row["master_port"] == expected_port
        assert (row["device"], row["backend"]) == ("cpu", "gloo")
    printed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert printed == table


def test_batch_shell_is_one_process_not_rank_0_of_the_job(slurm, tmp_path):
    """In the batch script Slurm sets SLURM_PROCID=0 and SLURM_NTASKS=<the job's tasks>, but it is
    no task of a step: detect_launch must say "single", so that ``--nproc`` works there and a plain
    run does not wait for 3 ranks that never come; inside srun it must say "slurm"."""
    detect = tmp_path / "detect.py"
    detect.write_text("import dataclasses, json, sys\n"
                      "from crossover_sgd.runtime.launch import detect_launch\n"
                      "open(sys.argv[1], 'w').write(json.dumps(dataclasses.asdict(detect_launch())))\n")
    script = tmp_path / "job.sh"
    script.write_text(f"""#!/bin/bash
#SBATCH --ntasks=4
#SBATCH --output={tmp_path}/job.out
env | grep '^SLURM_' > {tmp_path}/batch.env
{sys.executable} {detect} {tmp_path}/batch.json
srun --ntasks=2 bash -c '{sys.executable} {detect} {tmp_path}/step$SLURM_PROCID.json'
{sys.executable} -m crossover_sgd launch-info --nproc 2 --json {tmp_path}/local.json
""")
    job = slurm.sbatch(str(script))
    info = slurm.wait_job(job, timeout=120)
    log = (tmp_path / "job.out").read_text()
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), log
    batch_env = dict(line.split("=", 1) for line in (tmp_path / "batch.env").read_text().splitlines())
    assert batch_env["SLURM_PROCID"] == "0" and batch_env["SLURM_NTASKS"] == "4"  # the premise
    assert "SLURM_STEP_ID" not in batch_env
    batch = json.loads((tmp_path / "batch.json").read_text())
    assert (batch["launcher"], batch["rank"], batch["world_size"]) == ("single", 0, 1)
    steps = [json.loads((tmp_path / f"step{r}.json").read_text()) for r in range(2)]
    assert [(s["launcher"], s["rank"], s["world_size"]) for s in steps] == [("slurm", 0, 2), ("slurm", 1, 2)]
    local = json.loads((tmp_path / "local.json").read_text())  # --nproc was not refused
    assert [(row["launcher"], row["rank"], row["world_size"]) for row in local] == [("local", 0, 2), ("local", 1, 2)]


# --------------------------------------------------------------------------------------------
# Training: srun directly, and the project's CPU test job (scripts/slurm/examples/cpu-test.sh,
# i.e. train.sbatch with CPU/Gloo values) under sbatch, warned, requeued and resumed
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def srun_run(slurm, tmp_path_factory) -> Path:
    """``srun -n 4 crossover-sgd train --algorithm crossover``, straight from the command line."""
    out = tmp_path_factory.mktemp("srun") / "run"
    slurm.run("srun", "-n", "4", sys.executable, "-m", "crossover_sgd", "train", "--algorithm", "crossover",
              "--epochs", EPOCHS, "--out", str(out), timeout=JOB_TIMEOUT)
    return out


@pytest.fixture(scope="module")
def sbatch_run(slurm, tmp_path_factory) -> Path:
    """The project's CPU test job (cpu-test.sh: train.sbatch with CPU/Gloo values) submitted with
    sbatch and left alone: the uninterrupted reference of the warned job below. Waited for with
    squeue (until it leaves the queue), then judged by scontrol's final record."""
    info, log, out = run_job(slurm, CPU_TEST_JOB, "--epochs", EPOCHS, root=tmp_path_factory.mktemp("sbatch"), env={})
    assert info["Restarts"] == "0", log
    assert (info["NumNodes"], info["NumTasks"]) == ("1", "4")  # what the script asked sbatch for
    assert "training exited with code 0, status finished" in log, log
    return out


def test_srun_trains_crossover_on_four_ranks(srun_run):
    rows = check_training(srun_run, 4, "slurm")
    assert [r["epoch"] for r in rows[0]] == [str(e) for e in range(1, int(EPOCHS) + 1)]
    assert float(rows[0][0]["consensus_distance"]) > 0  # gossip: the replicas did differ


def test_cpu_test_job_under_sbatch_trains_like_srun(sbatch_run, srun_run):
    """The job script runs the same training as a plain srun: every rank's metrics are equal."""
    check_training(sbatch_run, 4, "slurm")
    assert json.loads((sbatch_run / "summary.json").read_text())["config"]["algorithm"] == "crossover"
    assert_same_metrics(sbatch_run, srun_run)


def assert_same_metrics(got_dir: Path, expected_dir: Path, world: int = 4) -> None:
    """Every rank's metrics rows are equal, timings aside."""
    for rank in range(world):
        expected = read_metrics(expected_dir / f"metrics_rank{rank}.csv")
        got = read_metrics(got_dir / f"metrics_rank{rank}.csv")
        assert len(got) == len(expected) == int(EPOCHS)
        for row_got, row_expected in zip(got, expected):
            for column in row_expected.keys() - IGNORED:
                assert row_got[column] == row_expected[column], (rank, column, row_got, row_expected)


def test_cpu_test_job_with_mpiexec_inside_the_allocation(slurm, tmp_path, mpich_mpiexec):
    """LAUNCH=mpiexec: the MPI variant of the job script, for real under Slurm (MPICH's Hydra
    starts its proxy through srun inside the allocation); ranks are detected as MPICH ranks and
    meet at the address the script exported."""
    path = os.pathsep.join([str(Path(mpich_mpiexec).parent), os.environ.get("PATH", "")])
    _, log, out = run_job(slurm, CPU_TEST_JOB, "--epochs", "5", root=tmp_path,
                          env={"LAUNCH": "mpiexec", "ALGORITHM": "sgp", "PATH": path})
    assert re.search(r"mpiexec -n 4 -ppn 4 .* train --algorithm sgp", log), log
    check_training(out, 4, "mpich")


def test_cpu_test_job_with_open_mpi_mpirun_inside_the_allocation(slurm, tmp_path, openmpi):
    """LAUNCH=mpirun: the ``mpirun -npernode`` line of the job script with Open MPI 5 for real
    under Slurm (PRRTE reads the allocation), here with hierarchical crossover over two logical
    nodes of two ranks (``--gpu_per_node 2`` appended to the training flags)."""
    path = os.pathsep.join([str(openmpi / "bin"), os.environ.get("PATH", "")])
    _, log, out = run_job(slurm, CPU_TEST_JOB, "--epochs", "6", "--gpu_per_node", "2", root=tmp_path,
                          env={"LAUNCH": "mpirun", "ALGORITHM": "hierarchical-crossover", "PATH": path,
                               "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
    assert re.search(r"mpirun -np 4 -npernode 4 --bind-to none .* train --algorithm hierarchical-crossover", log), log
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["local_size"], summary["config"]["algorithm"]) == (2, "hierarchical-crossover")
    check_training(out, 4, "openmpi")


def test_cpu_test_job_is_warned_requeued_and_resumes_to_the_uninterrupted_result(slurm, tmp_path, sbatch_run):
    """``scancel --signal=USR1 --batch`` is what ``#SBATCH --signal=B:USR1@300`` does before the
    time limit: the batch shell forwards it through srun, every rank stops after the same step and
    checkpoints, the shell requeues the job, and the requeued job resumes and finishes with the
    same metrics (timings aside) as the uninterrupted run of the same job script."""
    out, log_path = tmp_path / "run", tmp_path / "job.out"
    job = submit(slurm, CPU_TEST_JOB, "--epochs", EPOCHS,
                 env={"OUT": str(out), "SBATCH_OUTPUT": str(log_path), "PYTHON": sys.executable})
    wait_for_first_epoch(slurm, job, out, log_path)
    slurm.run("scancel", "--signal=USR1", "--batch", job)
    info = slurm.wait_job(job, timeout=360)  # two starts and the requeue; pytest-timeout is 600
    log = log_path.read_text()
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), log
    assert (info["NumTasks"], info["Requeue"]) == ("4", "1")  # the script's settings and #SBATCH lines
    assert info["Restarts"] == "1", log  # requeued once, by the job script

    # the first segment: warned, every rank stopped after the same step and saved it, requeued
    first, _, second = log.partition("(restart 1)")
    assert "received SIGUSR1: forwarding it to the ranks" in first
    assert re.search(r"training exited with code 0, status (preempted|stopped)\n", first), first
    assert f"requeueing job {job}: it resumes from" in first
    train_log = (out / "train.log").read_text()
    stops = re.findall(r"stopping at step (\d+) on a preemption signal", train_log)
    assert len(stops) == 1, train_log
    total = json.loads((sbatch_run / "summary.json").read_text())["steps_done"]
    assert 0 < int(stops[0]) < total, (stops, total)

    # the second segment: resumed from that step and finished exactly like the uninterrupted run
    assert "--resume" in second and "training exited with code 0, status finished" in second, second
    assert re.search(r"resumed at epoch \d+, step %s\b" % stops[0], train_log), train_log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps_done"] == total and summary["config"]["tag"] == job
    check_training(out, 4, "slurm")
    assert_same_metrics(out, sbatch_run)


def test_local_launch_in_the_batch_shell_stops_every_rank_when_one_is_signalled(slurm, tmp_path):
    """LAUNCH=local: the single-node variant without srun, whose ranks the batch shell starts
    itself (``crossover-sgd train --nproc 2`` inside sbatch, which the batch-step detection must
    allow). SIGTERM reaches rank 1 only: both ranks agree, stop after the same step, save it and
    exit 0 with summary status "preempted"; the batch shell was not warned, so no requeue."""
    out, log_path, marker = tmp_path / "run", tmp_path / "job.out", uuid.uuid4().hex
    job = submit(slurm, CPU_TEST_JOB, "--epochs", "40",
                 env={"OUT": str(out), "SBATCH_OUTPUT": str(log_path), "LAUNCH": "local", "ALGORITHM": "sgp",
                      "GPUS_PER_NODE": "2", "CROSSOVER_SGD_TEST_MARKER": marker})
    try:
        wait_for_first_epoch(slurm, job, out, log_path)
        ranks = {env.get("RANK"): pid for pid, env in marked_processes(marker).items()
                 if env.get("CROSSOVER_SGD_LAUNCHER") == "local"}
        assert sorted(ranks) == ["0", "1"], ranks
        os.kill(ranks["1"], signal.SIGTERM)
        info = slurm.wait_job(job, timeout=JOB_TIMEOUT)
    finally:
        left = kill_marked(marker)
    log = log_path.read_text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "0"), log
    assert "requeueing" not in log
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["launcher"], summary["world_size"]) == ("local", 2)
    assert summary["status"] == "preempted", summary["status"]
    assert 0 < summary["steps_done"] < 40 * summary["steps_per_epoch"]
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == summary["steps_done"]
    saved = sorted(p.name for p in (out / "checkpoints" / f"step{latest['step']:08d}").iterdir())
    assert saved == ["rank0.pt", "rank1.pt"]  # every rank saved the same step
    train_log = (out / "train.log").read_text()
    # rank 0 (the one that logs) was not signalled: it stopped because rank 1 was
    assert f"another rank received a preemption signal: every rank stops after step {latest['step']}" \
        in train_log, train_log
    assert left == {}


# --------------------------------------------------------------------------------------------
# GPU requests, against fake GPUs (gres devices Slurm hands out; nothing computes on them)
# --------------------------------------------------------------------------------------------

def record_tasks(tmp_path: Path) -> Path:
    """A stand-in for the job's python: every task writes its environment and arguments."""
    fake = tmp_path / "record-task.sh"
    fake.write_text(f'#!/bin/bash\nenv > {tmp_path}/task$SLURM_PROCID.env\nprintf "%s\\n" "$@" > {tmp_path}/task$SLURM_PROCID.args\n')
    fake.chmod(0o755)
    return fake


def task_env(path: Path) -> Dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_srun_gpus_per_task_gives_each_rank_its_own_gpu(slurm, tmp_path):
    """``srun --gpus-per-task=1``: each task sees one GPU, its own, so every rank takes cuda:0."""
    from crossover_sgd.runtime.process_group import gpu_index

    fake = record_tasks(tmp_path)
    slurm.run("srun", "-n", "4", "--gpus-per-task=1", str(fake), timeout=120)
    envs = [task_env(tmp_path / f"task{r}.env") for r in range(4)]
    visible = [env["CUDA_VISIBLE_DEVICES"] for env in envs]
    assert all("," not in v for v in visible) and len(set(visible)) == 4, visible
    assert [gpu_index(int(env["SLURM_LOCALID"]), 4, 1) for env in envs] == [0, 0, 0, 0]


def test_gpu_job_script_requests_one_gpu_per_rank(slurm, tmp_path):
    """train.sbatch with DEVICE=cuda submits itself with ``--gpus-per-node`` = ranks per node; the
    real scheduler grants the GPUs, and every rank sees them and starts with ``--device cuda``."""
    from crossover_sgd.runtime.process_group import gpu_index

    fake = record_tasks(tmp_path)
    info, log, _ = run_job(slurm, ROOT / "scripts" / "slurm" / "train.sbatch", root=tmp_path,
                           env={"DEVICE": "cuda", "GPUS_PER_NODE": "4", "CPUS_PER_RANK": "1", "PYTHON": str(fake)})
    assert info["NumTasks"] == "4", log
    assert "gres/gpu=4" in info.get("TRES", "") or "gpu:4" in info.get("TresPerNode", ""), info
    envs = [task_env(tmp_path / f"task{r}.env") for r in range(4)]
    visible = [env["CUDA_VISIBLE_DEVICES"].split(",") for env in envs]
    assert all(len(v) == 4 for v in visible), visible  # the node's 4 GPUs, for every rank
    assert sorted(gpu_index(int(env["SLURM_LOCALID"]), 4, 4) for env in envs) == [0, 1, 2, 3]  # one each
    args = (tmp_path / "task0.args").read_text().split()
    assert args[:4] == ["-m", "crossover_sgd", "train", "--algorithm"]
    assert args[args.index("--device") + 1] == "cuda"
