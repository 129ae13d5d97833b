"""A real single-node Slurm cluster (munged + slurmctld + slurmd) under one temporary directory,
and the other real HPC components the tests in this folder need (Open MPI, MPICH's mpiexec).

Nothing here is mocked: the daemons are Debian's ``slurm-wlm`` (installed by
``scripts/ci/install-slurm.sh`` when missing), started by hand (no systemd) on free ports, with
every path (state, spool, logs, pid files, the munge socket) under the given directory, and
stopped by pid. Every wait is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from support import ROOT, child_env, unavailable  # noqa: F401 (re-exported)

INSTALL_SLURM = ROOT / "scripts" / "ci" / "install-slurm.sh"
SLURM_PROGRAMS = ("munged", "slurmctld", "slurmd", "srun", "sbatch", "squeue", "scontrol", "scancel")
#: Job states after which a job will not run again by itself.
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def ensure_slurm_installed() -> None:
    """Install slurm-wlm through the project's CI script when a daemon or client is missing."""
    if all(shutil.which(p) for p in SLURM_PROGRAMS):
        return
    if os.geteuid() != 0:
        unavailable("Slurm (slurm-wlm) is not installed and installing it needs root: "
                    f"run {INSTALL_SLURM.relative_to(ROOT)} as root")
    try:
        result = subprocess.run(["bash", str(INSTALL_SLURM)], capture_output=True, text=True, timeout=420)
    except subprocess.TimeoutExpired:
        unavailable(f"{INSTALL_SLURM.name} did not finish within 420 s")
        return
    missing = [p for p in SLURM_PROGRAMS if not shutil.which(p)]
    if result.returncode != 0 or missing:
        unavailable(f"{INSTALL_SLURM.name} failed (exit {result.returncode}; missing {missing}): "
                    f"{(result.stderr or result.stdout)[-800:]}")


SLURM_CONF = """\
# A one-node test cluster: everything under {d}
ClusterName=hpctest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket={d}/munge/munge.socket.2,cred_expire=5
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/slurmd-%n
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd-%n.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
InactiveLimit=0
MailProg=/bin/true
# schedule every second (pending and requeued jobs start without the default minute's delay)
SchedulerParameters=sched_interval=1
# fake GPUs (character devices, see gres.conf) for jobs that request them: --gpus-per-node/-task
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=8000 Gres=gpu:{gpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES OverSubscribe=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """munged, slurmctld and slurmd of a one-node cluster whose files all live under ``root``."""

    def __init__(self, root: Path, cpus: int = 8, gpus: int = 4):
        self.root, self.cpus, self.gpus = root, cpus, gpus
        self.conf = root / "slurm.conf"
        self.procs: Dict[str, subprocess.Popen] = {}

    # ------------------------------------------------------------------ environment
    def env(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """A clean child environment (no launcher variables) pointing at this cluster."""
        return child_env({"SLURM_CONF": str(self.conf), "CUDA_VISIBLE_DEVICES": "", **(extra or {})})

    def run(self, *args: str, timeout: float = 30, check: bool = True, env=None) -> subprocess.CompletedProcess:
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                                env=env or self.env(), cwd=ROOT)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}\n"
                                 f"{self.logs()}")
        return result

    def logs(self, tail: int = 1500) -> str:
        parts = []
        for log in sorted((self.root / "log").glob("*.log")):
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    # ------------------------------------------------------------------ daemons
    def start(self, timeout: float = 60) -> "SlurmCluster":
        d = self.root
        for sub in ("munge", "state", "spool", "run", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        key = d / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (d / "munge").chmod(0o700)
        self.conf.write_text(SLURM_CONF.format(d=d, ctld_port=free_port(), slurmd_port=free_port(),
                                               cpus=self.cpus, gpus=self.gpus))
        self._fake_gpus()
        env = self.env()
        # munged forks into the background unless -F: keep it in the foreground so we own its pid
        self._spawn("munged", ["munged", "-F", "--force", f"--socket={d}/munge/munge.socket.2",
                               f"--key-file={key}", f"--pid-file={d}/munge/munged.pid",
                               f"--seed-file={d}/munge/munged.seed", f"--log-file={d}/log/munged.log"], env)
        wait_for(lambda: (d / "munge" / "munge.socket.2").exists(), 20, "the munge socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)], env)
        self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", str(self.conf)], env)
        wait_for(self._node_idle, timeout, "the node to become idle (see the logs above)")
        return self

    def _fake_gpus(self) -> None:
        """``gpus`` fake GPUs: character devices (like /dev/null) that Slurm's gres plugin hands
        out and announces in CUDA_VISIBLE_DEVICES; nothing can compute on them."""
        dev = self.root / "dev"
        dev.mkdir(exist_ok=True)
        for i in range(self.gpus):
            path = dev / f"gpu{i}"
            if not path.exists():
                os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        (self.root / "gres.conf").write_text(f"Name=gpu File={dev}/gpu[0-{self.gpus - 1}]\n")

    def _spawn(self, name: str, args: List[str], env: Dict[str, str]) -> None:
        out = open(self.root / "log" / f"{name}.stdio", "w")
        self.procs[name] = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def _node_idle(self) -> bool:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with code {proc.returncode}:\n"
                                     f"{(self.root / 'log' / f'{name}.stdio').read_text()[-2000:]}\n{self.logs()}")
        result = self.run("sinfo", "-h", "-N", "-o", "%T", timeout=10, check=False)
        return result.returncode == 0 and result.stdout.strip().rstrip("*") == "idle"

    def stop(self) -> None:
        """Cancel what is left, then stop the daemons (by pid, SIGKILL after 10 s)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--user=root", "--full"], env=self.env(), capture_output=True,
                           timeout=10)
            leftover = self.wait_no_jobs(timeout=20)
            if leftover:
                subprocess.run(["scancel", "--signal=KILL", "--full", "--user=root"], env=self.env(),
                               capture_output=True, timeout=10)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # slurmstepd processes are children of slurmd's session only while it runs; kill any that
        # are left (by pid, found through our spool directory on their command line or cwd)
        for pid in stepd_pids(self.root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def wait_no_jobs(self, timeout: float) -> List[str]:
        deadline = time.monotonic() + timeout
        while True:
            out = self.run("squeue", "-h", "-o", "%i", timeout=10, check=False).stdout.split()
            if not out or time.monotonic() > deadline:
                return out
            time.sleep(0.3)

    # ------------------------------------------------------------------ jobs
    def sbatch(self, *args: str, env=None) -> str:
        result = self.run("sbatch", "--parsable", *args, env=env)
        return result.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> Dict[str, str]:
        """``scontrol show job`` as a dict (empty once the job is forgotten)."""
        result = self.run("scontrol", "-o", "show", "job", job_id, check=False, timeout=10)
        if result.returncode != 0:
            return {}
        fields = {}
        for item in re.findall(r"(\S+?)=(\S*)", result.stdout):
            fields.setdefault(item[0], item[1])
        return fields

    def wait_left_queue(self, job_id: str, timeout: float) -> Dict[str, str]:
        """Wait until ``squeue`` no longer lists ``job_id`` (pending, running or completing), then
        return its final ``scontrol show job`` (kept for MinJobAge)."""
        def gone():
            result = self.run("squeue", "-h", "-o", "%i", timeout=10, check=False)
            return result.returncode == 0 and job_id not in result.stdout.split()
        try:
            wait_for(gone, timeout, f"job {job_id} to leave the queue", interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; now: {self.job(job_id)}\n{self.logs()}") from None
        return self.job(job_id)

    def wait_job(self, job_id: str, timeout: float, states: Sequence[str] = tuple(FINAL_STATES)) -> Dict[str, str]:
        """Wait until ``job_id`` reaches one of ``states``; return its ``scontrol show job``."""
        def reached():
            info = self.job(job_id)
            return info if info.get("JobState") in states else None
        try:
            return wait_for(reached, timeout, f"job {job_id} to reach {sorted(states)}", interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; now: {self.job(job_id)}\n{self.logs()}") from None


def stepd_pids(root: Path) -> List[int]:
    """Pids of slurmstepd processes started for the cluster under ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"slurmstepd") and str(root).encode() in env:
            found.append(int(entry.name))
    return found


