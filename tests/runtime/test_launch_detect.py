"""Launch detection and rendezvous resolution on the environments real launchers set.

Pure functions with real inputs: the dicts below are what each launcher puts in a rank's
environment (trimmed of unrelated variables). The real launchers themselves run in
``test_launchers.py``.
"""

from __future__ import annotations

import pytest
import torch

from crossover_sgd.errors import ConfigError
from crossover_sgd.runtime.launch import DEFAULT_PORT, LaunchInfo, detect_launch, resolve_rendezvous
from crossover_sgd.runtime.process_group import gpu_index, logical_placement, select_backend, select_device


# --------------------------------------------------------------------------------------------
# The environments
# --------------------------------------------------------------------------------------------

def slurm_step_env(procid: int, job_id: str = "123456", step_id: str = "0") -> dict:
    """One task of ``srun -N 2 --ntasks-per-node 2 ...``: 4 tasks, block distribution on node[07-08]."""
    nodeid, localid = divmod(procid, 2)
    return {
        "SLURM_CLUSTER_NAME": "hpc", "SLURM_JOB_ID": job_id, "SLURM_JOBID": job_id,
        "SLURM_JOB_NAME": "train", "SLURM_JOB_PARTITION": "gpu", "SLURM_JOB_USER": "alice",
        "SLURM_JOB_NODELIST": "node[07-08]", "SLURM_NODELIST": "node[07-08]",
        "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2", "SLURM_JOB_CPUS_PER_NODE": "32(x2)",
        "SLURM_NTASKS": "4", "SLURM_NPROCS": "4", "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_TASKS_PER_NODE": "2(x2)",
        "SLURM_STEP_ID": step_id, "SLURM_STEPID": step_id, "SLURM_STEP_NODELIST": "node[07-08]",
        "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
        "SLURM_STEP_LAUNCHER_PORT": "41235", "SLURM_SRUN_COMM_HOST": "10.1.0.7",
        "SLURM_SRUN_COMM_PORT": "41234", "SLURM_LAUNCH_NODE_IPADDR": "10.1.0.7",
        "SLURM_SUBMIT_DIR": "/home/alice/run", "SLURM_SUBMIT_HOST": "login01",
        "SLURM_DISTRIBUTION": "block", "SLURM_CPUS_ON_NODE": "32",
        "SLURM_CPU_BIND": "quiet,mask_cpu:0x0000FFFF",
        "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(localid), "SLURM_NODEID": str(nodeid),
        "SLURM_GTIDS": f"{2 * nodeid},{2 * nodeid + 1}", "SLURMD_NODENAME": f"node0{7 + nodeid}",
        "SLURM_TASK_PID": str(4242 + procid), "SLURM_TOPOLOGY_ADDR": f"node0{7 + nodeid}",
        "SLURM_TOPOLOGY_ADDR_PATTERN": "node", "SLURM_PRIO_PROCESS": "0", "SLURM_UMASK": "0022",
    }


def sbatch_script_env() -> dict:
    """The batch script of ``sbatch -N 2 --ntasks-per-node 2`` (no srun step: no SLURM_STEP_*)."""
    return {
        "SLURM_JOB_ID": "123456", "SLURM_JOBID": "123456", "SLURM_JOB_NAME": "train",
        "SLURM_JOB_NODELIST": "node[07-08]", "SLURM_NODELIST": "node[07-08]",
        "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2", "SLURM_NTASKS": "4", "SLURM_NPROCS": "4",
        "SLURM_NTASKS_PER_NODE": "2", "SLURM_TASKS_PER_NODE": "2(x2)",
        "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_GTIDS": "0",
        "SLURMD_NODENAME": "node07", "SLURM_SUBMIT_DIR": "/home/alice/run", "SLURM_CPUS_ON_NODE": "32",
    }


def openmpi_env(rank: int, size: int = 4, local_size: int = 2) -> dict:
    """One rank of Open MPI 5 ``mpirun -n 4 --map-by slot`` on 2 nodes x 2 slots."""
    local_rank = rank % local_size
    return {
        "OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_SIZE": str(size),
        "OMPI_COMM_WORLD_LOCAL_RANK": str(local_rank), "OMPI_COMM_WORLD_LOCAL_SIZE": str(local_size),
        "OMPI_COMM_WORLD_NODE_RANK": str(local_rank), "OMPI_UNIVERSE_SIZE": str(size),
        "OMPI_MCA_ess": "^singleton", "OMPI_MCA_orte_launch": "1",
        "OMPI_FILE_LOCATION": "/tmp/prte.node07.0/dvm/1",
        "PMIX_NAMESPACE": "prterun-node07-81234@1", "PMIX_RANK": str(rank),
        "PMIX_SERVER_URI41": "prterun-node07-81234@0.0;tcp4://10.1.0.7:41000",
        "PMIX_HOSTNAME": f"node0{7 + rank // local_size}",
    }


def mpich_env(rank: int, size: int = 4, local_size: int = 4) -> dict:
    """One rank of MPICH (Hydra) ``mpiexec -n 4``: exactly what the MPICH wheel's mpiexec sets."""
    return {"PMI_RANK": str(rank), "PMI_SIZE": str(size), "PMI_FD": str(9 + rank % 2), "PMI_HOSTNAME": "vm",
            "MPI_LOCALRANKID": str(rank % local_size), "MPI_LOCALNRANKS": str(local_size)}


def torchrun_env(rank: int, nnodes: int = 2, nproc_per_node: int = 2, addr: str = "node07",
                 port: str = "29400") -> dict:
    """One worker of ``torchrun --nnodes 2 --nproc-per-node 2 --rdzv-endpoint node07:29400``."""
    world = nnodes * nproc_per_node
    node, local = divmod(rank, nproc_per_node)
    return {
        "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(local),
        "LOCAL_WORLD_SIZE": str(nproc_per_node), "GROUP_RANK": str(node), "GROUP_WORLD_SIZE": str(nnodes),
        "ROLE_NAME": "default", "ROLE_RANK": str(rank), "ROLE_WORLD_SIZE": str(world),
        "MASTER_ADDR": addr, "MASTER_PORT": port, "OMP_NUM_THREADS": "1",
        "TORCHELASTIC_RESTART_COUNT": "0", "TORCHELASTIC_MAX_RESTARTS": "0",
        "TORCHELASTIC_RUN_ID": "none", "TORCHELASTIC_USE_AGENT_STORE": "False",
        "TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    }


def local_env(rank: int, nproc: int = 3, port: str = "39629") -> dict:
    """One rank of ``crossover-sgd ... --nproc 3`` (the variables local_launcher sets)."""
    return {"RANK": str(rank), "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(nproc), "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port, "CROSSOVER_SGD_LAUNCHER": "local", "OMP_NUM_THREADS": "1"}


def placement(info: LaunchInfo) -> tuple:
    return (info.launcher, info.rank, info.world_size, info.local_rank, info.local_size, info.node_id)


# --------------------------------------------------------------------------------------------
# detect_launch
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("procid, expected", [
    (0, ("slurm", 0, 4, 0, 2, 0)),
    (1, ("slurm", 1, 4, 1, 2, 0)),
    (2, ("slurm", 2, 4, 0, 2, 1)),
    (3, ("slurm", 3, 4, 1, 2, 1)),
])
def test_slurm_srun_step(procid, expected):
    info = detect_launch(slurm_step_env(procid))
    assert placement(info) == expected
    assert info.num_nodes == 2
    assert info.master_addr == "node07"  # first host of the step's node list
    assert 20000 <= info.master_port < 40000


def test_slurm_uneven_tasks_per_node():
    """``srun -n 5`` on 3 nodes: SLURM_STEP_TASKS_PER_NODE "2(x2),1" gives the last node one task."""
    env = slurm_step_env(4)
    env.update(SLURM_NTASKS="5", SLURM_NPROCS="5", SLURM_STEP_NUM_TASKS="5", SLURM_NODEID="2",
               SLURM_LOCALID="0", SLURM_STEP_TASKS_PER_NODE="2(x2),1", SLURM_TASKS_PER_NODE="2(x2),1",
               SLURM_STEP_NODELIST="gpu[01-03]", SLURM_JOB_NODELIST="gpu[01-03]")
    info = detect_launch(env)
    assert placement(info) == ("slurm", 4, 5, 0, 1, 2)
    assert info.master_addr == "gpu01"


def test_slurm_master_addr_from_the_environment_wins():
    env = dict(slurm_step_env(3), MASTER_ADDR="10.2.0.1", MASTER_PORT="12345")
    info = detect_launch(env)
    assert (info.master_addr, info.master_port) == ("10.2.0.1", 12345)


@pytest.mark.parametrize("rank, expected", [
    (0, ("openmpi", 0, 4, 0, 2, 0)),
    (1, ("openmpi", 1, 4, 1, 2, 0)),
    (2, ("openmpi", 2, 4, 0, 2, 1)),
    (3, ("openmpi", 3, 4, 1, 2, 1)),
])
def test_openmpi(rank, expected):
    info = detect_launch(openmpi_env(rank))
    assert placement(info) == expected
    assert info.master_addr is None and info.master_port is None  # found later by resolve_rendezvous


@pytest.mark.parametrize("rank", range(4))
def test_mpich_single_node(rank):
    assert placement(detect_launch(mpich_env(rank))) == ("mpich", rank, 4, rank, 4, 0)


@pytest.mark.parametrize("rank, expected", [(1, ("mpich", 1, 4, 1, 2, 0)), (2, ("mpich", 2, 4, 0, 2, 1))])
def test_mpich_two_nodes(rank, expected):
    assert placement(detect_launch(mpich_env(rank, local_size=2))) == expected


@pytest.mark.parametrize("procid, expected", [(1, ("mpich", 1, 4, 1, 2, 0)), (2, ("mpich", 2, 4, 0, 2, 1))])
def test_mpich_under_srun_pmi2_takes_the_placement_from_slurm(procid, expected):
    """``srun --mpi=pmi2`` sets PMI_RANK/PMI_SIZE but no MPI_LOCALRANKID: Slurm knows the nodes."""
    env = dict(slurm_step_env(procid), PMI_RANK=str(procid), PMI_SIZE="4", PMI_FD="5", PMI_JOBID="123456.0")
    assert placement(detect_launch(env)) == expected


@pytest.mark.parametrize("rank, expected", [
    (0, ("torchrun", 0, 4, 0, 2, 0)),
    (1, ("torchrun", 1, 4, 1, 2, 0)),
    (3, ("torchrun", 3, 4, 1, 2, 1)),
])
def test_torchrun(rank, expected):
    info = detect_launch(torchrun_env(rank))
    assert placement(info) == expected
    assert (info.master_addr, info.master_port) == ("node07", 29400)


@pytest.mark.parametrize("rank", range(3))
def test_local_launcher(rank):
    info = detect_launch(local_env(rank))
    assert placement(info) == ("local", rank, 3, rank, 3, 0)
    assert (info.master_addr, info.master_port) == ("127.0.0.1", 39629)


@pytest.mark.parametrize("env", [
    {},
    {"PATH": "/usr/bin", "HOME": "/root", "OMP_NUM_THREADS": "1"},
    {"MASTER_ADDR": "10.0.0.1"},                                          # a stray MASTER_ADDR
    {"SLURM_JOB_ID": "5", "SLURM_JOB_NODELIST": "node07"},             # in an allocation, not a task
])
def test_nothing_means_single(env):
    info = detect_launch(env)
    assert placement(info) == ("single", 0, 1, 0, 1, 0)
    assert resolve_rendezvous(info, env) == info  # one process needs no rendezvous


# --------------------------------------------------------------------------------------------
# Precedence: the launcher that started *this* process wins over an enclosing allocation
# --------------------------------------------------------------------------------------------

def test_mpirun_inside_sbatch_is_openmpi():
    env = dict(sbatch_script_env(), **openmpi_env(3))
    assert env["SLURM_PROCID"] == "0"  # the batch script's, not this rank's
    assert placement(detect_launch(env)) == ("openmpi", 3, 4, 1, 2, 1)


def test_mpiexec_inside_sbatch_is_mpich():
    env = dict(sbatch_script_env(), **mpich_env(2, local_size=2))
    assert placement(detect_launch(env)) == ("mpich", 2, 4, 0, 2, 1)


def test_torchrun_inside_srun_is_torchrun():
    """``srun -N 2 --ntasks-per-node 1 torchrun --nproc-per-node 2 ...``: one Slurm task per node."""
    env = dict(slurm_step_env(1), **torchrun_env(3))
    assert placement(detect_launch(env)) == ("torchrun", 3, 4, 1, 2, 1)


def test_local_launcher_inside_slurm_is_local():
    env = dict(slurm_step_env(0), **local_env(2))
    assert placement(detect_launch(env)) == ("local", 2, 3, 2, 3, 0)


def test_non_integer_launcher_variable_is_a_config_error():
    env = dict(mpich_env(0), PMI_RANK="one")
    with pytest.raises(ConfigError, match="PMI_RANK='one' is not an integer"):
        detect_launch(env)


def test_empty_slurm_ntasks_falls_back_to_slurm_nprocs():
    env = dict(slurm_step_env(1), SLURM_NTASKS="")
    assert placement(detect_launch(env)) == ("slurm", 1, 4, 1, 2, 0)


# --------------------------------------------------------------------------------------------
# resolve_rendezvous
# --------------------------------------------------------------------------------------------

def test_slurm_rendezvous_is_the_first_host_and_the_same_on_every_rank():
    resolved = [resolve_rendezvous(detect_launch(slurm_step_env(r)), slurm_step_env(r)) for r in range(4)]
    endpoints = {(i.master_addr, i.master_port) for i in resolved}
    assert len(endpoints) == 1
    addr, port = endpoints.pop()
    assert addr == "node07"
    assert 20000 <= port < 40000


def test_slurm_rendezvous_port_follows_the_job_and_step():
    port = detect_launch(slurm_step_env(0, job_id="123456")).master_port
    assert detect_launch(slurm_step_env(3, job_id="123456")).master_port == port
    assert detect_launch(slurm_step_env(0, job_id="123457")).master_port != port
    assert detect_launch(slurm_step_env(0, job_id="123456", step_id="1")).master_port != port


def test_torchrun_rendezvous_is_kept():
    info = detect_launch(torchrun_env(2))
    assert resolve_rendezvous(info, torchrun_env(2)) == info


def test_torchrun_without_master_addr_is_a_config_error():
    env = torchrun_env(1)
    del env["MASTER_ADDR"], env["MASTER_PORT"]
    with pytest.raises(ConfigError, match="set MASTER_ADDR"):
        resolve_rendezvous(detect_launch(env), env)


def test_mpi_master_addr_and_port_from_the_environment_are_kept():
    env = dict(openmpi_env(2), MASTER_ADDR="10.3.0.9", MASTER_PORT="23456")
    info = resolve_rendezvous(detect_launch(env), env)
    assert (info.master_addr, info.master_port) == ("10.3.0.9", 23456)


def mpi4py_world_size():
    """COMM_WORLD's size in this (pytest) process, None without mpi4py."""
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI.COMM_WORLD.Get_size()


def test_this_process_is_no_mpi_job():
    """The premise of the MPI cases below: mpi4py here (if installed) sees a 1-process world,
    which disagrees with the 4 ranks of the environments, so its broadcast is not used."""
    assert mpi4py_world_size() in (None, 1)


@pytest.mark.parametrize("rank", range(4))
def test_single_node_mpi_without_master_addr_uses_loopback(rank):
    env = mpich_env(rank)
    info = resolve_rendezvous(detect_launch(env), env)
    assert (info.master_addr, info.master_port) == ("127.0.0.1", DEFAULT_PORT)
    assert placement(info) == ("mpich", rank, 4, rank, 4, 0)


def test_single_node_openmpi_port_comes_from_the_job_namespace():
    envs = [openmpi_env(r, local_size=4) for r in range(4)]
    resolved = [resolve_rendezvous(detect_launch(e), e) for e in envs]
    assert {(i.master_addr, i.master_port) for i in resolved} == {("127.0.0.1", resolved[0].master_port)}
    other = dict(envs[0], PMIX_NAMESPACE="prterun-node07-99999@1")
    assert resolve_rendezvous(detect_launch(other), other).master_port != resolved[0].master_port


@pytest.mark.parametrize("env", [openmpi_env(2), mpich_env(2, local_size=2)], ids=["openmpi", "mpich"])
def test_multi_node_mpi_without_mpi4py_agreement_or_slurm_is_a_config_error(env):
    assert mpi4py_world_size() in (None, 1)
    with pytest.raises(ConfigError) as caught:
        resolve_rendezvous(detect_launch(env), env)
    message = str(caught.value)
    assert "4-rank multi-node MPI job" in message
    assert "mpi4py" in message and "MASTER_ADDR" in message


def test_multi_node_mpi_with_master_addr_only_derives_the_same_port_on_every_rank():
    envs = [dict(openmpi_env(r), MASTER_ADDR="node07") for r in range(4)]
    resolved = [resolve_rendezvous(detect_launch(e), e) for e in envs]
    endpoints = {(i.master_addr, i.master_port) for i in resolved}
    assert len(endpoints) == 1 and endpoints.pop()[0] == "node07"


def test_mpirun_inside_sbatch_rendezvous_is_the_first_host_of_the_allocation():
    envs = [dict(sbatch_script_env(), **openmpi_env(r)) for r in range(4)]
    resolved = [resolve_rendezvous(detect_launch(e), e) for e in envs]
    assert {(i.master_addr, i.master_port) for i in resolved} == {("node07", resolved[0].master_port)}
    # the same port Slurm's own launch of this job would use
    assert resolved[0].master_port == detect_launch(slurm_step_env(0)).master_port


def test_srun_pmi2_rendezvous_is_the_first_host_of_the_step():
    envs = [dict(slurm_step_env(r), PMI_RANK=str(r), PMI_SIZE="4", PMI_FD="5") for r in range(4)]
    resolved = [resolve_rendezvous(detect_launch(e), e) for e in envs]
    assert {(i.master_addr, i.master_port) for i in resolved} == {("node07", resolved[0].master_port)}


# --------------------------------------------------------------------------------------------
# --gpu_per_node, backend and device choice
# --------------------------------------------------------------------------------------------

def test_logical_placement_follows_the_launcher_without_gpu_per_node():
    info = detect_launch(slurm_step_env(3))
    assert logical_placement(info, None) == (1, 2, 1)


@pytest.mark.parametrize("rank, expected", [(0, (0, 4, 0)), (3, (3, 4, 0)), (4, (0, 4, 1)), (7, (3, 4, 1))])
def test_gpu_per_node_overrides_the_detected_local_size(rank, expected):
    info = detect_launch(mpich_env(rank, size=8, local_size=8))  # 8 ranks on one launcher node
    assert logical_placement(info, 4) == expected


def test_gpu_per_node_can_merge_launcher_nodes():
    info = detect_launch(slurm_step_env(3))  # 2 nodes x 2 tasks -> one logical node of 4
    assert logical_placement(info, 4) == (3, 4, 0)


@pytest.mark.parametrize("gpu_per_node", [3, 0, -2, 5])
def test_gpu_per_node_that_does_not_divide_the_world_is_rejected(gpu_per_node):
    info = detect_launch(mpich_env(0))
    with pytest.raises(ConfigError, match=f"--gpu_per_node {gpu_per_node} does not divide the world size 4"):
        logical_placement(info, gpu_per_node)


@pytest.mark.parametrize("device, requested, expected", [
    ("cpu", "auto", "gloo"),
    ("cpu", "gloo", "gloo"),
    ("cuda", "auto", "nccl"),
    ("cuda", "nccl", "nccl"),
    ("cuda", "gloo", "gloo"),
])
def test_select_backend(device, requested, expected):
    assert select_backend(torch.device(device, 0) if device == "cuda" else torch.device(device),
                          requested) == expected


def test_nccl_on_cpu_is_rejected():
    with pytest.raises(ConfigError, match="--backend nccl needs GPUs"):
        select_backend(torch.device("cpu"), "nccl")


@pytest.mark.parametrize("requested", ["mpi", "NCCL", ""])
def test_unknown_backend_is_rejected(requested):
    with pytest.raises(ConfigError, match="is not one of: auto, nccl, gloo"):
        select_backend(torch.device("cpu"), requested)


def test_select_device():
    info = detect_launch(mpich_env(1))
    assert select_device(info, "cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="is not one of: auto, cpu, cuda"):
        select_device(info, "tpu")
    if torch.cuda.is_available():
        assert select_device(info, "auto") == torch.device("cuda", gpu_index(1, 2, torch.cuda.device_count()))
    else:
        assert select_device(info, "auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
            select_device(info, "cuda")


@pytest.mark.parametrize("local_rank, local_size, visible, expected", [
    (0, 4, 4, 0), (3, 4, 4, 3),  # every GPU of the node visible: local rank r takes cuda:r
    (3, 4, 1, 0), (0, 1, 1, 0),  # one GPU per task (srun --gpus-per-task=1): always cuda:0
    (1, 2, 8, 1),                # more GPUs than ranks: the first ones
])
def test_gpu_index_follows_the_local_rank_among_visible_gpus(local_rank, local_size, visible, expected):
    assert gpu_index(local_rank, local_size, visible) == expected


def test_two_ranks_on_one_gpu_are_refused(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ConfigError, match=r"local rank 2 of 4 needs its own GPU, but this process sees only 2 "
                                          r"\(CUDA_VISIBLE_DEVICES=0,1\)"):
        gpu_index(2, 4, 2)
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        gpu_index(0, 1, 0)
