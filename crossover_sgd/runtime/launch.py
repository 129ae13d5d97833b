"""Launch detection: which launcher started this process, and where to rendezvous.

Supported launchers, in the order they are recognised (the first that matches wins, so an
``mpirun`` inside an ``sbatch`` script is MPI, not Slurm):

============  =====================================================================
``local``     ``crossover-sgd train --nproc N`` (this package's own launcher)
``torchrun``  ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``
``openmpi``   ``OMPI_COMM_WORLD_RANK``/``_SIZE``/``_LOCAL_RANK``/``_LOCAL_SIZE``
``mpich``     ``PMI_RANK``, ``PMI_SIZE``, ``MPI_LOCALRANKID``, ``MPI_LOCALNRANKS`` (also Intel MPI)
``slurm``     ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, ``SLURM_NODEID``, node list, in a
              task of an ``srun`` step (``SLURM_STEP_ID``; not the batch script, a single process)
``single``    nothing of the above: one process
============  =====================================================================

The rendezvous address is ``MASTER_ADDR``/``MASTER_PORT`` when set. Otherwise: under Slurm the
first host of the step's node list and a port derived from the job and step id; under MPI, rank
0's host and a free port broadcast through mpi4py when it is installed and agrees with the
launcher, else the Slurm node list when inside an allocation, else loopback for a single-node
job.
"""

from __future__ import annotations

import os
import socket
import zlib
from dataclasses import dataclass, replace
from typing import Mapping, Optional

from crossover_sgd.errors import ConfigError
from crossover_sgd.runtime.hostlist import expand_hostlist, expand_tasks_per_node

__all__ = ["LaunchInfo", "detect_launch", "resolve_rendezvous", "free_port", "LOCAL_LAUNCHER_ENV"]

#: Set by the local launcher in every child, so its RANK/WORLD_SIZE are not mistaken for torchrun.
LOCAL_LAUNCHER_ENV = "CROSSOVER_SGD_LAUNCHER"
DEFAULT_PORT = 29500


@dataclass(frozen=True)
class LaunchInfo:
    """Where this process sits in the job, as the launcher placed it."""

    launcher: str
    rank: int
    world_size: int
    local_rank: int
    local_size: int
    node_id: int
    master_addr: Optional[str] = None
    master_port: Optional[int] = None

    @property
    def num_nodes(self) -> int:
        return max(1, self.world_size // max(1, self.local_size))


def _int(env: Mapping[str, str], key: str, default: Optional[int] = None) -> int:
    value = env.get(key)
    if value is None or value == "":
        if default is None:
            raise ConfigError(f"launcher variable {key} is missing from the environment")
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"launcher variable {key}={value!r} is not an integer") from None


def _port(env: Mapping[str, str]) -> Optional[int]:
    return _int(env, "MASTER_PORT") if env.get("MASTER_PORT") else None


def _slurm_first_host(env: Mapping[str, str]) -> Optional[str]:
    variable = next((k for k in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST") if env.get(k)), None)
    if variable is None:
        return None
    hosts = expand_hostlist(env[variable], variable=variable)  # ConfigError naming the variable
    return hosts[0] if hosts else None


def _slurm_port(env: Mapping[str, str]) -> int:
    """A port every task of one job step derives alike (distinct steps get distinct ports)."""
    job = _int(env, "SLURM_JOB_ID", 0)
    step = _int(env, "SLURM_STEP_ID", 0) if env.get("SLURM_STEP_ID", "").isdigit() else 0
    return 20000 + (job * 7 + step) % 20000


def _job_unique_port(env: Mapping[str, str]) -> int:
    """A port derived from an id the MPI launcher gives every rank of one job alike."""
    for key in ("PMIX_NAMESPACE", "OMPI_MCA_orte_ess_jobid", "PMI_KVSNAME", "PMI_PORT", "PMI_ID"):
        if env.get(key):
            return 20000 + zlib.crc32(env[key].encode()) % 20000
    return DEFAULT_PORT


#: Step ids above this are Slurm's special steps (batch script, extern, interactive), not srun's.
_SLURM_MAX_NORMAL_STEP = 0xFFFFFFF0


def _in_slurm_task(env: Mapping[str, str]) -> bool:
    """True in a task of an ``srun`` job step. The batch script of ``sbatch -n N`` also has
    ``SLURM_PROCID=0`` and ``SLURM_NTASKS=N`` (the job's), but no ``SLURM_STEP_ID``: it is one
    process, not rank 0 of N (checked on a real Slurm 22.05 in tests/hpc)."""
    step = env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID") or ""
    return "SLURM_PROCID" in env and step.isdigit() and int(step) < _SLURM_MAX_NORMAL_STEP


def _slurm_placement(env: Mapping[str, str], world: int) -> tuple:
    """(local_rank, local_size, node_id) of this Slurm task."""
    node_id = _int(env, "SLURM_NODEID", 0)
    variable = "SLURM_STEP_TASKS_PER_NODE" if env.get("SLURM_STEP_TASKS_PER_NODE") else "SLURM_TASKS_PER_NODE"
    per_node = env.get(variable)
    counts = expand_tasks_per_node(per_node, variable=variable) if per_node else [world]
    local_size = counts[node_id] if node_id < len(counts) else counts[-1]
    return _int(env, "SLURM_LOCALID", 0), local_size, node_id


def detect_launch(env: Mapping[str, str] = os.environ) -> LaunchInfo:
    """Read rank, world size, local rank/size and node id from the launcher's environment."""
    if env.get(LOCAL_LAUNCHER_ENV) == "local" or ("RANK" in env and "WORLD_SIZE" in env):
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
        local_rank = _int(env, "LOCAL_RANK", rank)
        local_size = _int(env, "LOCAL_WORLD_SIZE", world)
        node_id = _int(env, "GROUP_RANK", rank // max(1, local_size))
        launcher = env[LOCAL_LAUNCHER_ENV] if env.get(LOCAL_LAUNCHER_ENV) in ("local", "hosts") else "torchrun"
        return LaunchInfo(launcher, rank, world, local_rank, local_size, node_id,
                          env.get("MASTER_ADDR"), _port(env))
    if "OMPI_COMM_WORLD_RANK" in env:
        rank, world = _int(env, "OMPI_COMM_WORLD_RANK"), _int(env, "OMPI_COMM_WORLD_SIZE")
        local_rank = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK", 0)
        local_size = _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", world)
        return LaunchInfo("openmpi", rank, world, local_rank, local_size, rank // local_size,
                          env.get("MASTER_ADDR"), _port(env))
    if "PMI_RANK" in env and "PMI_SIZE" in env:
        rank, world = _int(env, "PMI_RANK"), _int(env, "PMI_SIZE")
        if "MPI_LOCALRANKID" not in env and "SLURM_PROCID" in env:
            # srun --mpi=pmi2 sets only PMI_RANK/PMI_SIZE: the placement on nodes is Slurm's
            local_rank, local_size, node_id = _slurm_placement(env, world)
            return LaunchInfo("mpich", rank, world, local_rank, local_size, node_id,
                              env.get("MASTER_ADDR"), _port(env))
        local_rank = _int(env, "MPI_LOCALRANKID", rank)
        local_size = _int(env, "MPI_LOCALNRANKS", world)
        return LaunchInfo("mpich", rank, world, local_rank, local_size, rank // local_size,
                          env.get("MASTER_ADDR"), _port(env))
    if _in_slurm_task(env):
        rank = _int(env, "SLURM_PROCID")
        world = _int(env, "SLURM_NTASKS", _int(env, "SLURM_NPROCS", 1))
        local_rank, local_size, node_id = _slurm_placement(env, world)
        return LaunchInfo("slurm", rank, world, local_rank, local_size, node_id,
                          env.get("MASTER_ADDR") or _slurm_first_host(env),
                          _port(env) or _slurm_port(env))
    return LaunchInfo("single", 0, 1, 0, 1, 0, env.get("MASTER_ADDR"), _port(env))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _mpi4py_abi_matches(launcher: str) -> bool:
    """False when mpi4py would load another MPI's library than the launcher's (e.g. the MPICH
    wheel's ``libmpi.so.12`` in ranks started by Open MPI's ``mpirun``): its ``MPI_Init`` would
    abort the process, which no ``except`` can catch. mpi4py >= 4 tells its ABI without
    initialising MPI (``MPI4PY_LIBMPI``/``MPI4PY_MPIABI`` choose it); older ones are trusted."""
    try:
        from mpi4py import _mpiabi  # noqa: WPS433 (mpi4py >= 4.0)
        abi = _mpiabi._get_mpiabi()  # noqa: SLF001 (reads the library, does not initialise MPI)
    except ImportError:
        return True
    except Exception:  # no MPI library at all: importing mpi4py.MPI would fail too
        return False
    return abi not in ("openmpi", "mpich") or abi == ("openmpi" if launcher == "openmpi" else "mpich")


def _mpi4py_broadcast(info: LaunchInfo) -> Optional[tuple]:
    """Rank 0 broadcasts (host, port) through mpi4py; None if mpi4py is absent or disagrees."""
    if not _mpi4py_abi_matches(info.launcher):
        return None
    try:
        from mpi4py import MPI  # noqa: WPS433 (optional dependency)
    except ImportError:
        return None
    comm = MPI.COMM_WORLD
    if comm.Get_size() != info.world_size or comm.Get_rank() != info.rank:
        return None  # mpi4py is built against another MPI than the one that launched us
    payload = None
    if info.rank == 0:
        host = socket.gethostname()
        payload = (host, info.master_port or free_port("0.0.0.0"))
    return comm.bcast(payload, root=0)


def resolve_rendezvous(info: LaunchInfo, env: Mapping[str, str] = os.environ) -> LaunchInfo:
    """Fill in ``master_addr``/``master_port`` the way HPC users expect (see module doc)."""
    if info.world_size == 1 or (info.master_addr and info.master_port):
        return info
    if info.launcher in ("openmpi", "mpich"):
        found = _mpi4py_broadcast(info)
        if found is not None:
            addr, port = found
            return replace(info, master_addr=info.master_addr or addr, master_port=info.master_port or port)
        addr = info.master_addr or _slurm_first_host(env)
        if addr is None and info.local_size == info.world_size:
            addr = "127.0.0.1"
        if addr is None:
            raise ConfigError(
                f"cannot find the rendezvous host for this {info.world_size}-rank multi-node MPI job: "
                "install mpi4py (pip install 'crossover-sgd[mpi]') or set MASTER_ADDR")
        port = info.master_port or (_slurm_port(env) if "SLURM_JOB_ID" in env else _job_unique_port(env))
        return replace(info, master_addr=addr, master_port=port)
    if info.master_addr is None:
        raise ConfigError(f"launcher {info.launcher!r} gave no rendezvous address: set MASTER_ADDR")
    return replace(info, master_port=info.master_port or DEFAULT_PORT)
