"""Helpers for tests: run the real command line in subprocesses, read its outputs."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]


def installed_program(name: str) -> Optional[str]:
    """The program ``name`` that this Python's packages installed (beside the interpreter, e.g. a
    virtual environment's bin/: the console script, the MPICH wheel's mpiexec), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def in_ci() -> bool:
    """True on a CI machine: ``CI`` is set to anything but empty, 0, false or no (``.ci/run`` sets it)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
    """Skip a test whose component cannot exist on this machine; under CI fail instead, so a
    broken CI machine never hides real-launcher tests behind skips."""
    if in_ci():
        pytest.fail(f"CI is set, so this is a failure, not a skip: {reason}", pytrace=False)
    pytest.skip(reason)


def child_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The test process's environment without launcher variables, one thread per rank."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OMPI_", "PMI_", "PMIX_", "MPI_LOCAL", "TORCHELASTIC_"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                         "MASTER_ADDR", "MASTER_PORT", "CROSSOVER_SGD_LAUNCHER")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def run(args: Sequence[str], *, timeout: float = 300, env: Optional[Dict[str, str]] = None,
        cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run a command to completion (bounded by ``timeout``), capturing text output."""
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          env=env or child_env(), cwd=cwd or ROOT)


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """``python -m crossover_sgd ARGS``."""
    return run([sys.executable, "-m", "crossover_sgd", *args], **kwargs)


def read_metrics(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _environ(pid_dir: Path) -> Optional[Dict[str, str]]:
    try:
        raw = (pid_dir / "environ").read_bytes()
        state = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # gone, or not ours to read
        return None
    if state == "Z":
        return None
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def marked_processes(marker: str) -> Dict[int, Dict[str, str]]:
    """pid -> environment of the live processes whose environment has CROSSOVER_SGD_TEST_MARKER=marker."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            env = _environ(entry)
            if env is not None and env.get("CROSSOVER_SGD_TEST_MARKER") == marker:
                found[int(entry.name)] = env
    return found


def kill_marked(marker: str) -> Dict[int, Dict[str, str]]:
    """Kill (by pid) the marked processes still alive and return them: a test leaves none."""
    alive = marked_processes(marker)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive


class MarkedLauncher:
    """``crossover-sgd`` started as a launcher whose processes (itself and its ranks) carry a
    marker in their environment, so a test finds a rank's pid and, at the end, leaves no process:
    ``with MarkedLauncher(args) as job: os.kill(job.rank_pid(2), ...); code, err, s = job.end(60)``;
    after the block ``job.left`` holds the marked processes that were still alive (killed)."""

    def __init__(self, args: Sequence[str], env: Optional[Dict[str, str]] = None, stdout=subprocess.DEVNULL):
        import uuid

        self.marker = uuid.uuid4().hex
        self.left: Dict[int, Dict[str, str]] = {}
        self.process = subprocess.Popen([sys.executable, "-m", "crossover_sgd", *args],
                                        env=child_env({"CUDA_VISIBLE_DEVICES": "", **(env or {}),
                                                       "CROSSOVER_SGD_TEST_MARKER": self.marker}),
                                        stdout=stdout, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> "MarkedLauncher":
        return self

    def alive(self) -> bool:
        return self.process.poll() is None

    def rank_pid(self, rank: int, wait_s: float = 60) -> int:
        """The pid of the launcher's rank ``rank`` (waited for, bounded)."""
        found: List[int] = []

        def started() -> bool:
            found[:] = [pid for pid, env in marked_processes(self.marker).items()
                        if env.get("RANK") == str(rank) and env.get("CROSSOVER_SGD_LAUNCHER") == "local"]
            return bool(found)

        wait_until(started, self.alive, f"the start of rank {rank}", wait_s)
        return found[0]

    def end(self, wait_s: float) -> Tuple[int, str, float]:
        """(exit code, stderr, seconds) of the launcher, which must end within ``wait_s``."""
        started = time.monotonic()
        _, err = self.process.communicate(timeout=wait_s)
        return self.process.returncode, err, time.monotonic() - started

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
        self.left = kill_marked(self.marker)


def design_example(path: Path) -> Dict[str, object]:
    """Execute the worked example of ``docs/design.md`` (the first python block after "How to add
    an algorithm") and return its namespace."""
    text = path.read_text()
    section = text[text.index("## How to add an algorithm"):]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    module = types.ModuleType("design_example")  # a real module: dataclasses look their class up there
    sys.modules[module.__name__] = module
    exec(compile(code, f"{path}:how-to-add-an-algorithm", "exec"), module.__dict__)
    return module.__dict__


def digits_reference(make_optimizer, workers: int, batch: int, steps: int, seed: int = 0) -> dict:
    """The small CNN trained in this process, float64, on the union of ``workers`` trainers'
    batches of the digits' first epoch (the runs' data: ``ShardSampler`` gives training rank r
    positions r, r+n, ... of one permutation, so the union of the k-th batches is positions
    n*b*k .. n*b*(k+1)-1 of it; the mean loss over the union is the mean of the trainers' mean
    losses), ``steps`` steps of ``make_optimizer(params)``; returns its final state."""
    import torch

    from crossover_sgd.training.data import load_digits
    from crossover_sgd.training.models import build_model

    train, _ = load_digits()
    inputs, targets = train.tensors
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed * 100_003 + 0))
    torch.manual_seed(seed)
    model = build_model("small_cnn", 10, 1, 8).to(torch.float64)
    optimizer = make_optimizer(model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    size = workers * batch
    for step in range(steps):
        idx = order[step * size:(step + 1) * size]
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(inputs[idx].to(torch.float64)), targets[idx]).backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------- ranks of a server family started by hand
def server_family_argv(out: Path, algorithm: str, shards: int, timeout: float, extra: Sequence[str] = ()) -> List[str]:
    """A run of a parameter-server or DistBelief algorithm, far longer than a fault test (the
    fault ends it) unless ``extra`` says otherwise."""
    return [sys.executable, "-m", "crossover_sgd", "train", "--algorithm", algorithm, "--ps-shards", str(shards),
            "--epochs", "50", "--workers", "0", "--timeout", str(timeout), "--log-level", "WARNING",
            "--out", str(out), *extra]


def start_ranks(argv: Sequence[str], nproc: int) -> List[subprocess.Popen]:
    """``nproc`` ranks of ``argv`` with torchrun-style variables and no launcher: each rank's own
    exit code and stderr."""
    from crossover_sgd.runtime.launch import free_port

    port, procs = free_port(), []
    for rank in range(nproc):
        env = child_env({"RANK": str(rank), "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(rank),
                         "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                         "CUDA_VISIBLE_DEVICES": "", "TORCH_CPP_LOG_LEVEL": "ERROR"})
        procs.append(subprocess.Popen(list(argv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    return procs


def csv_rows(path: Path) -> int:
    """Rows of a CSV appended row by row (0 while it does not exist)."""
    if not path.exists():
        return 0
    with path.open(newline="") as handle:
        return len(list(csv.DictReader(handle)))


def wait_until(condition, alive, what: str, wait_s: float = 180) -> None:
    """Poll ``condition`` (bounded by ``wait_s``; fails at once if ``alive()`` turns False)."""
    deadline = time.monotonic() + wait_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {wait_s:.0f} s"
        assert alive(), f"a rank ended before {what}"
        time.sleep(0.1)


def finish_ranks(procs: List[subprocess.Popen], ranks: Sequence[int], wait_s: float = 180) -> Dict[int, tuple]:
    """Each of ``ranks``' (exit code, stderr, seconds until it ended, counted from now)."""
    started, ended = time.monotonic(), {}
    for rank in ranks:
        try:
            _, err = procs[rank].communicate(timeout=max(1.0, wait_s - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"rank {rank} did not end within {wait_s:.0f} s")
        ended[rank] = (procs[rank].returncode, err, time.monotonic() - started)
    return ended


def cleanup_ranks(procs: List[subprocess.Popen]) -> None:
    """Kill what is left (a stopped rank too) and reap every rank."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


# ------------------------------------------------------------- training runs several test modules read
#: The parameter-server family's accuracy runs (small batches, K = 4: ~50 rounds in 10 epochs of
#: the 1,437 training digits at 8 workers; at 15 epochs the server model passed 93-95 % after
#: ~650-750 of its ~1,300 global iterations, and a 10-epoch cosine schedule ends lower still). A
#: round moves x by up to lr_ps x k gradients (OSP's a round stale): lr_ps 0.25 keeps that <= 1
#: (0.5 made OSP oscillate on a loaded machine).
PS_TRAINING = ("--epochs", "10", "--batch-size", "16", "--local-steps", "4", "--ps-lr", "0.25", "--ps-eval-every", "10",
               "--workers", "0", "--timeout", "120", "--log-level", "WARNING")
#: Downpour's accuracy runs: 4 replicas, one shard, 10 epochs (Adagrad's steps shrink as
#: 1/sqrt(sum g^2): at 6 epochs it ended between 0.84 and 0.96), a warm start of 20 steps.
DOWNPOUR_TRAINING = ("--nproc", "5", "--algorithm", "downpour", "--epochs", "10", "--ps-eval-every", "100",
                     "--warmstart-steps", "20", "--workers", "0", "--timeout", "120", "--log-level", "WARNING")
#: Sandblaster L-BFGS on a deterministic full-batch problem (the digits, multinomial logistic
#: regression, float64): torch.optim.LBFGS(lr=1, max_iter=4, history_size=5, strong Wolfe) per epoch.
SANDBLASTER = ("--algorithm", "sandblaster", "--model", "logistic", "--dtype", "float64", "--lbfgs-max-iter", "4",
               "--history-size", "5", "--workers", "0", "--timeout", "30", "--log-level", "WARNING")
#: A peer-to-peer run as a user starts it: PDMM-ISVR, 3 local ranks (a ring), the default data, 2 epochs.
P2P_TRAINING = ("--nproc", "3", "--algorithm", "pdmm-isvr", "--epochs", "2", "--batch-size", "32", "--workers", "0")


def shared_run_argv(name: str) -> List[str]:
    """The ``train`` arguments of a run shared by several test modules (:func:`conftest.shared_run`):
    ``ps-<algorithm>-<W>w<S>s`` (W workers, S shards, :data:`PS_TRAINING`) or
    ``downpour-<sgd|adagrad>`` (:data:`DOWNPOUR_TRAINING`) or ``sandblaster-<S>s<R>r<P>p`` (S shards,
    R replicas, portions of P samples, 2 epochs of :data:`SANDBLASTER`) or ``p2p-pdmm-isvr``
    (:data:`P2P_TRAINING`)."""
    if name == "p2p-pdmm-isvr":
        return list(P2P_TRAINING)
    family, _, rest = name.partition("-")
    if family == "ps":
        algorithm, size = rest.split("-")
        workers, shards = (int(n) for n in size.rstrip("s").split("w"))
        return ["--nproc", str(workers + shards), "--ps-shards", str(shards), "--algorithm", algorithm, *PS_TRAINING]
    if family == "downpour":
        return [*DOWNPOUR_TRAINING, "--ps-optimizer", rest]
    if family == "sandblaster":
        shards, replicas, portion = (int(n) for n in rest.rstrip("p").replace("s", " ").replace("r", " ").split())
        return ["--nproc", str(shards + 1 + replicas), "--ps-shards", str(shards), *SANDBLASTER, "--epochs", "2",
                "--portion-size", str(portion)]
    raise KeyError(f"no shared run {name!r}")
