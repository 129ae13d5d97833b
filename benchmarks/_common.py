"""What the benchmarks share: machine description, launching ranks, timing, algorithms, tables.

Each benchmark script runs in one of two roles:

* **parent** (started by hand): it starts ``N`` ranks of itself with the package's local launcher
  (:func:`launch_ranks`, ``OMP_NUM_THREADS`` set), once per world size, collects what rank 0
  wrote, prints one table and writes ``--json``;
* **rank** (started by the parent, or directly under ``srun``/``torchrun``/``mpirun`` for GPUs):
  it joins the process group (:func:`join_process_group`), runs the measurements in lockstep with
  the other ranks, and rank 0 gathers the samples (:func:`max_over_ranks`).

On an emulated cluster (``--emulate-nodes M --link-rate RATE``, root only; docs/emulation.md) the
parent starts the ranks of each world size on M network namespaces joined by links of RATE
(:func:`emulation_plans`, :func:`launch_ranks`); rank 0's JSON and the printed table then say so
(``machine.emulated_cluster``), and :func:`link_traffic` reads what a node's link carried.

Timing: every sample is one *window* of work started right after a barrier; its duration is the
maximum over ranks (the time until the slowest rank is done). Cases whose ratio is reported are
measured in alternating windows, in an order that rotates (:func:`interleave`), so that drifts in
machine load hit both sides alike; ratios are of medians.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402

from crossover_sgd.algorithms import Algorithm, build_algorithm, make_config  # noqa: E402
from crossover_sgd.config import TrainConfig  # noqa: E402
from crossover_sgd.runtime.process_group import DistContext  # noqa: E402

log = logging.getLogger("benchmarks")

#: Internal flag: the parent passes it to the ranks it starts; rank 0 writes its result there.
RESULT_FLAG = "--rank-result"


# --------------------------------------------------------------------------------------- setup
def setup_logging(level: str = "INFO") -> None:
    """Progress lines on stderr (``HH:MM:SS benchmark: message``)."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)


def base_parser(doc: str) -> argparse.ArgumentParser:
    """The flags every benchmark has: ``--json``, ``--quick``, ``--warmup``, ``--repeats``, ``--device``."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--quick", action="store_true",
                        help="a run of seconds (the small CNN, 2 ranks, 1 warmup, 2 repeats): for smoke tests")
    parser.add_argument("--warmup", type=int, default=2, help="untimed windows first, per case")
    parser.add_argument("--repeats", type=int, default=5, help="timed windows per case (the median is reported)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where tensors live")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds one launch of the ranks may take before it is stopped")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(RESULT_FLAG, dest="rank_result", default=None, help=argparse.SUPPRESS)
    add_emulation_flags(parser)
    return parser


def add_emulation_flags(parser: argparse.ArgumentParser) -> None:
    """``--emulate-nodes`` and ``--link-rate``: the ranks the parent starts run on an emulated
    cluster (checked by :func:`emulation_plans` when the parent launches)."""
    group = parser.add_argument_group("emulated cluster (root only, docs/emulation.md)")
    group.add_argument("--emulate-nodes", type=int, nargs="+", default=None, metavar="M",
                       help="run the ranks on M emulated nodes (network namespaces, N/M ranks each): one M for "
                            "every --nprocs, or one per --nprocs value (e.g. --nprocs 4 8 16 --emulate-nodes 2 4 8)")
    group.add_argument("--link-rate", default=None, metavar="RATE",
                       help="with --emulate-nodes: every node's link rate, both ways (e.g. 200mbit, 1gbit)")


def check_counts(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse non-positive repeat counts and a CUDA device that is not there."""
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda given but CUDA is not available")


def machine_info(device: str = "cpu") -> Dict[str, Any]:
    """What the numbers were measured on."""
    info: Dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass
    if _EMULATION:
        info["emulated_cluster"] = [dict(cluster) for cluster in _EMULATION]
    if device == "cuda" and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(0)
        info["device_count"] = torch.cuda.device_count()
    return info


def under_external_launcher() -> bool:
    """True when srun/torchrun/mpirun (not a parent benchmark process) started this rank."""
    from crossover_sgd.runtime.launch import detect_launch

    return detect_launch().launcher != "single"


# --------------------------------------------------------------------------------------- emulated cluster
#: The emulated cluster of the ranks this parent starts, per world size (set by :func:`run_or_launch`;
#: reported by :func:`machine_info` and :func:`report`).
_EMULATION: List[Dict[str, Any]] = []


def emulation_plans(args: argparse.Namespace) -> List[Any]:
    """Per world size of ``args.nprocs``, its checked :class:`~crossover_sgd.runtime.emulation.EmulationPlan`
    (None each: no emulated cluster), from ``--emulate-nodes``/``--link-rate`` and ``args.nprocs``; ConfigError
    (one line) for a bad value or combination, or a machine that cannot build the cluster."""
    from crossover_sgd.errors import ConfigError
    from crossover_sgd.runtime.emulation import check_available, plan_emulation

    nodes, rate = getattr(args, "emulate_nodes", None), getattr(args, "link_rate", None)
    nprocs = list(getattr(args, "nprocs", []))
    if nodes is None and rate is None:
        return [None] * len(nprocs)
    if nodes is not None and len(nodes) not in (1, len(nprocs)):
        raise ConfigError(f"{{emulate_nodes}} gives {len(nodes)} values for {len(nprocs)} world sizes "
                          f"({{nproc}} {' '.join(map(str, nprocs))}): give one M for all, or one per world size")
    per_n = nodes * len(nprocs) if nodes is not None and len(nodes) == 1 else nodes or [None] * len(nprocs)
    plans = [plan_emulation(n, m, rate) for n, m in zip(nprocs, per_n)]
    check_available()
    return plans


def emulation_error(script: Path, exc: Exception) -> "NoReturn":
    """Exit 2 with one line, like argparse's ``parser.error`` (without the usage)."""
    text = exc.render({"nproc": "--nprocs"}) if hasattr(exc, "render") else str(exc)
    print(f"{script.name}: error: {text}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def emulated_node_size() -> Optional[int]:
    """In a rank on an emulated cluster: the ranks per node (None elsewhere)."""
    if os.environ.get("CROSSOVER_SGD_EMULATED_NODES") is None:
        return None
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _link_counters() -> Optional[Tuple[int, int]]:
    """(bytes sent, bytes received) so far on this node's link (its interface in the namespace;
    frames with their headers), or None when this rank is not on an emulated cluster."""
    if os.environ.get("CROSSOVER_SGD_EMULATED_NODES") is None:
        return None
    interface = os.environ.get("GLOO_SOCKET_IFNAME", "eth0")
    try:  # /proc/self/net/dev: the counters of this process's namespace (/sys/class/net is the mounter's)
        for line in Path("/proc/self/net/dev").read_text().splitlines()[2:]:
            name, _, fields = line.partition(":")
            if name.strip() == interface:
                values = fields.split()
                return int(values[8]), int(values[0])  # transmitted bytes, received bytes
    except (OSError, ValueError, IndexError):
        pass
    return None


def link_traffic(work: Callable[[], None], device: torch.device, rounds: int = 1) -> Optional[Dict[str, float]]:
    """Run ``work()`` ``rounds`` times (collective) and return what the busiest node's link carried
    per call, sent and received (bytes of Ethernet frames, headers included: the ~5 % over the
    payload), from the interface's counters; None when the ranks are not on an emulated cluster."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
    before = _link_counters()
    for _ in range(rounds):
        work()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()  # the other ranks of this node have sent their part too
    after = _link_counters()
    found = max_over_ranks([0.0 if before is None or after is None else 1.0], device)[0]
    if not found:
        return None
    sent, recv = (0.0, 0.0) if before is None or after is None else (after[0] - before[0], after[1] - before[1])
    sent, recv = max_over_ranks([sent / rounds, recv / rounds], device)
    return {"link_bytes_sent": sent, "link_bytes_recv": recv}


def emulated_rate() -> Optional[int]:
    """In a rank on an emulated cluster: every link's rate in bits per second (None elsewhere)."""
    text = os.environ.get("CROSSOVER_SGD_LINK_RATE")
    return int(text) if text else None


# --------------------------------------------------------------------------------------- ranks
def launch_ranks(script: Path, nproc: int, rank_args: Sequence[str], threads: int = 1,
                 timeout: float = 900.0, emulate_nodes: Optional[int] = None,
                 link_rate: Optional[int] = None) -> Dict[str, Any]:
    """Run ``script`` as ``nproc`` local ranks (``OMP_NUM_THREADS=threads``); return rank 0's result.
    With ``emulate_nodes`` and ``link_rate`` (bits/s): on that emulated cluster."""
    import functools

    from crossover_sgd.runtime.local_launcher import launch_local

    launch = functools.partial(launch_local, emulate_nodes=emulate_nodes, link_rate=link_rate)

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result_path = Path(tmp) / "rank0.json"
        command = [sys.executable, str(script), *rank_args, RESULT_FLAG, str(result_path)]
        saved = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            code = _launch_with_timeout(launch, nproc, command, timeout)
        finally:
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved
        if code != 0 or not result_path.is_file():
            raise RuntimeError(f"{script.name} with {nproc} rank(s) failed (exit code {code}); see the lines above")
        return json.loads(result_path.read_text())


def _launch_with_timeout(launch: Callable[[int, List[str]], int], nproc: int, command: List[str],
                         timeout: float) -> int:
    """``launch(nproc, command)``, stopped by SIGTERM (forwarded to the ranks) after ``timeout`` s."""
    import signal
    import threading

    timer = threading.Timer(timeout, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()
    try:
        return launch(nproc, command)
    finally:
        timer.cancel()


def join_process_group(device: str = "cpu", timeout_s: float = 600.0) -> DistContext:
    """Join the job this process was launched into (Gloo on CPU, NCCL on GPUs)."""
    from crossover_sgd.runtime.launch import detect_launch
    from crossover_sgd.runtime.process_group import init_distributed, select_backend, select_device

    info = detect_launch()
    dev = select_device(info, device)
    if dev.type == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    return init_distributed(info, device=dev, backend=select_backend(dev), timeout_s=timeout_s)


def leave_process_group() -> None:
    from crossover_sgd.runtime.process_group import shutdown

    shutdown()


def finish_rank(ctx: DistContext, args: argparse.Namespace, payload: Dict[str, Any],
                report: Callable[[List[Dict[str, Any]], argparse.Namespace], Dict[str, Any]]) -> None:
    """Rank 0 hands its result to the parent (``--rank-result``) or, under an external launcher,
    prints the report itself."""
    if ctx.rank != 0:
        return
    if args.rank_result:
        Path(args.rank_result).write_text(json.dumps(payload))
    else:
        report([payload], args)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def max_over_ranks(values: Sequence[float], device: torch.device) -> List[float]:
    """Element-wise maximum of ``values`` over all ranks (collective)."""
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def timed_window(work: Callable[[], None], device: torch.device) -> float:
    """Seconds from a common start (a barrier) until ``work()`` is done on this rank."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - start


def interleave(windows: Mapping[str, Callable[[], None]], device: torch.device, warmup: int,
               repeats: int) -> Dict[str, List[float]]:
    """Run each window ``warmup`` times, then ``repeats`` times in rotation; return, per name, the
    window durations (maximum over ranks). The order of the windows rotates from one repeat to the
    next, so that no window always follows the same one (that biases a comparison by a few %).
    Collective: every rank runs the same windows in the same order."""
    names = list(windows)
    for _ in range(warmup):
        for work in windows.values():
            timed_window(work, device)
    local: Dict[str, List[float]] = {name: [] for name in windows}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            local[name].append(timed_window(windows[name], device))
    merged = max_over_ranks([s for name in names for s in local[name]], device)
    return {name: merged[i * repeats:(i + 1) * repeats] for i, name in enumerate(names)}


def summarize(samples: Sequence[float]) -> Dict[str, float]:
    """Median, minimum and maximum of ``samples`` (seconds)."""
    return {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples)}


# --------------------------------------------------------------------------------------- models
#: name -> (classes, channels, image size) the benchmarks build it with.
MODEL_SHAPES: Dict[str, Tuple[int, int, int]] = {
    "resnet50": (1000, 3, 224),   # torchvision's ResNet-50 unchanged: 25.56 M parameters
    "resnet18": (10, 3, 32),      # CIFAR-style stem (3x3, no max-pool) at 32 pixels
    "small_cnn": (10, 1, 8),      # the default job's model on 8x8 digits
}


def build_bench_model(name: str, device: torch.device, image_size: Optional[int] = None, seed: int = 0) -> nn.Module:
    """A freshly initialised model from the package's model builder (same weights on every rank)."""
    from crossover_sgd.training.models import build_model

    classes, channels, size = MODEL_SHAPES[name]
    torch.manual_seed(seed)
    return build_model(name, classes, channels, image_size or size).to(device)


def parameter_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


# --------------------------------------------------------------------------------------- algorithms
@dataclass(frozen=True)
class Case:
    """One algorithm setting: a label and its TrainConfig options (``ranks_per_node`` becomes
    ``groupnum`` for the world size at hand)."""

    label: str
    options: Dict[str, Any] = field(default_factory=dict)

    def skip_reason(self, world_size: int) -> Optional[str]:
        """Why this case cannot run on ``world_size`` ranks (None if it can)."""
        opts = self.options
        if opts.get("algorithm") == "sgp" and world_size > 1:
            from topology import num_powers_of_two_below

            peers = opts.get("sgp_peers", 1)
            if peers > num_powers_of_two_below(world_size):
                return f"{peers} peers need more than {world_size} ranks"
        if opts.get("algorithm") == "hierarchical-crossover":
            per_node = opts.get("ranks_per_node", 2)
            if world_size % per_node or world_size // per_node < 2:
                return f"needs 2 or more nodes of {per_node} ranks"
            emulated = emulated_node_size()
            if emulated is not None and emulated != per_node:
                return f"needs nodes of {per_node} ranks; the emulated nodes hold {emulated}"
        return None

    def config(self, world_size: int, **extra: Any) -> TrainConfig:
        """The TrainConfig of this case on ``world_size`` ranks."""
        opts = dict(self.options)
        per_node = opts.pop("ranks_per_node", None)
        if per_node is not None:
            opts["groupnum"] = world_size // per_node
        return make_config(**{**opts, **extra})


#: Every algorithm setting the benchmarks know, by label.
CASES: Dict[str, Case] = {case.label: case for case in (
    Case("none", {}),  # the base Algorithm: no communication (the computation-alone reference)
    Case("allreduce", {"algorithm": "allreduce", "sync_grad": True}),
    Case("allreduce-param", {"algorithm": "allreduce", "sync_grad": False}),
    Case("sgp-1peer", {"algorithm": "sgp", "sgp_peers": 1}),
    Case("sgp-2peers", {"algorithm": "sgp", "sgp_peers": 2}),
    Case("sgp-overlap", {"algorithm": "sgp", "sgp_peers": 1, "gossip_overlap": True}),
    Case("crossover-coarse", {"algorithm": "crossover", "chromosome": "coarse"}),
    Case("crossover-fine", {"algorithm": "crossover", "chromosome": "fine"}),
    Case("crossover-overlap", {"algorithm": "crossover", "chromosome": "fine", "gossip_overlap": True}),
    Case("hierarchical-2", {"algorithm": "hierarchical-crossover", "chromosome": "fine", "ranks_per_node": 2}),
    Case("hierarchical-4", {"algorithm": "hierarchical-crossover", "chromosome": "fine", "ranks_per_node": 4}),
)}


def make_algorithm(ctx: DistContext, case: Case, **extra: Any) -> Algorithm:
    """The real algorithm class of ``case`` (``Case('none')``: the no-communication base class)."""
    config = case.config(ctx.world_size, **extra)
    if not case.options:
        return Algorithm(ctx, config)
    config.validate()
    return build_algorithm(ctx, config)


def give_gradients(model: nn.Module) -> None:
    """Zero gradients on every parameter (what ``before_step`` of the hierarchical variant averages)."""
    for p in model.parameters():
        p.grad = torch.zeros_like(p)


def communication_round(algorithm: Algorithm, optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """One optimizer step's communication of ``algorithm`` with no computation: ``before_step``,
    ``after_step`` and ``flush`` (so nothing is left in flight when the window ends)."""
    def work() -> None:
        algorithm.before_step(optimizer)
        algorithm.after_step(optimizer)
        algorithm.flush()

    return work


def traffic_per_round(algorithm: Algorithm, work: Callable[[], None], rounds: int = 1) -> Tuple[float, float]:
    """(bytes sent, bytes received) per call of ``work``, from the algorithm's own CommStats."""
    sent, recv = algorithm.comm.bytes_sent, algorithm.comm.bytes_recv
    for _ in range(rounds):
        work()
    return ((algorithm.comm.bytes_sent - sent) / rounds, (algorithm.comm.bytes_recv - recv) / rounds)


# --------------------------------------------------------------------------------------- training steps
@dataclass(frozen=True)
class StepSpec:
    """What one training step computes: model, input size, per-rank batch, memory format, precision."""

    model: str
    batch_size: int
    image_size: Optional[int] = None
    channels_last: bool = False
    amp: bool = False  # bf16 autocast around forward/backward (no loss scaling needed)
    lr: float = 0.01

    def train_options(self, world_size: int) -> Dict[str, Any]:
        """TrainConfig fields of this step (synthetic data sized for a few steps per epoch)."""
        classes, channels, size = MODEL_SHAPES[self.model]
        return {"model": self.model, "dataset": "synthetic", "image_size": self.image_size or size,
                "batch_size": self.batch_size, "synthetic_samples": 4 * self.batch_size * world_size,
                "synthetic_classes": classes, "lr": self.lr, "lr_schedule": "constant", "epochs": 1,
                "amp": "bf16" if self.amp else "off", "channels_last": self.channels_last, "seed": 0}


def default_model(args: argparse.Namespace) -> None:
    """``--model`` not given: ResNet-18 at 32 pixels on the CPU, ResNet-50 at 224 on GPUs."""
    if args.model is None:
        args.model = "resnet50" if args.device == "cuda" else "resnet18"


def resolve_step_options(args: argparse.Namespace) -> StepSpec:
    """``--channels-last``/``--amp`` ``auto``: on for CUDA (bf16 where supported), off on the CPU."""
    cuda = args.device == "cuda"
    channels_last = args.channels_last == "on" or (args.channels_last == "auto" and cuda)
    amp = args.amp == "bf16" or (args.amp == "auto" and cuda and torch.cuda.is_bf16_supported())
    return StepSpec(args.model, args.batch_size, args.image_size, channels_last, amp)


def add_step_flags(parser: argparse.ArgumentParser, batch_size: int) -> None:
    parser.add_argument("--model", default=None, choices=sorted(MODEL_SHAPES),
                        help="model to train (None: resnet18 on the CPU, resnet50 with --device cuda)")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="samples per step per rank")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input size (None: the model's own: 224 for resnet50, 32 for resnet18, 8 for small_cnn)")
    parser.add_argument("--steps", type=int, default=2, help="training steps per timed window")
    parser.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"),
                        help="channels_last memory format (auto: on for CUDA)")
    parser.add_argument("--amp", default="auto", choices=("auto", "bf16", "off"),
                        help="bf16 autocast (auto: on for CUDA GPUs that support bf16)")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads per rank on the CPU (1: steady timings on a shared machine)")


def step_argv(args: argparse.Namespace) -> List[str]:
    """The step flags again, for the ranks the parent starts."""
    argv = ["--model", args.model, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
            "--channels-last", args.channels_last, "--amp", args.amp, "--warmup", str(args.warmup),
            "--repeats", str(args.repeats), "--device", args.device, "--log-level", args.log_level]
    if args.image_size is not None:
        argv += ["--image-size", str(args.image_size)]
    return argv


def synthetic_batch(spec: StepSpec, device: torch.device, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """One fixed batch of random images and labels (different per ``seed``, e.g. per rank)."""
    classes, channels, size = MODEL_SHAPES[spec.model]
    size = spec.image_size or size
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(spec.batch_size, channels, size, size, generator=generator).to(device)
    targets = torch.randint(0, classes, (spec.batch_size,), generator=generator).to(device)
    if spec.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return inputs, targets


def autocast(spec: StepSpec, device: torch.device):
    """bf16 autocast when ``spec.amp``, else a no-op context."""
    import contextlib

    if not spec.amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def build_trainer(ctx: DistContext, case: Case, spec: StepSpec, out: Path):
    """The package's real :class:`~crossover_sgd.training.trainer.Trainer` driving ``case``'s
    algorithm on synthetic data; channels_last and bf16 autocast are the Trainer's own (``--channels-last``,
    ``--amp bf16``). Nothing is written: it is never asked to evaluate or checkpoint."""
    from crossover_sgd.training.data import DatasetBundle, SyntheticImages
    from crossover_sgd.training.trainer import Trainer

    options = spec.train_options(ctx.world_size)
    algorithm = make_algorithm(ctx, case, **options)
    classes, channels, size = MODEL_SHAPES[spec.model]
    size = spec.image_size or size
    train = SyntheticImages(options["synthetic_samples"], classes, channels, size)
    data = DatasetBundle(train=train, val=train, num_classes=classes, in_channels=channels, image_size=size)
    return Trainer(algorithm.config, ctx, data, algorithm, out)


class PlainLoop:
    """The hand-written PyTorch step the Trainer is compared with: same model, initial weights,
    optimizer settings and loss; no communication, no hooks."""

    def __init__(self, spec: StepSpec, device: torch.device):
        defaults = TrainConfig()
        self.model = build_bench_model(spec.model, device, spec.image_size, seed=0)
        if spec.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=spec.lr, momentum=defaults.momentum,
                                         weight_decay=defaults.weight_decay)
        self.criterion = nn.CrossEntropyLoss()
        self.spec, self.device = spec, device

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.spec, self.device):
            loss = self.criterion(self.model(inputs), targets)
        loss.backward()
        self.optimizer.step()


def steps_window(step: Callable[[], None], count: int, after: Optional[Callable[[], None]] = None
                 ) -> Callable[[], None]:
    """A window of ``count`` calls of ``step``, then ``after()`` (e.g. an algorithm's ``flush``:
    nothing may stay in flight when a window ends)."""
    def work() -> None:
        for _ in range(count):
            step()
        if after is not None:
            after()

    return work


# --------------------------------------------------------------------------------------- output
@dataclass(frozen=True)
class Column:
    key: str
    header: str
    fmt: str = "{}"


def format_table(columns: Sequence[Column], rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table; missing values print as ``-``."""
    cells = [[c.header for c in columns]]
    for row in rows:
        cells.append([("-" if row.get(c.key) is None else c.fmt.format(row[c.key])) for c in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(text.rjust(w) if i else text.ljust(w) for i, (text, w) in enumerate(zip(line, widths)))
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: Optional[Path], payload: Mapping[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    log.info("wrote %s", path)



def report(header: str, columns: Sequence[Column], rows: Sequence[Mapping[str, Any]],
           goal_columns: Sequence[Column], result: Mapping[str, Any], json_path: Optional[Path]) -> None:
    """Print a benchmark's table and its goals table, and write its JSON."""
    print(header)
    for cluster in result.get("machine", {}).get("emulated_cluster", []):
        print(f"emulated cluster: {cluster['nproc']} ranks on {cluster['nodes']} nodes of {cluster['ranks_per_node']}, "
              f"every node's link {cluster['link_rate']} each way")
    print(format_table(columns, rows))
    if result["goals"]:
        print()
        print(format_table(goal_columns, result["goals"]))
    write_json(json_path, result)


def run_or_launch(script: Path, args: argparse.Namespace, run_rank: Callable[[argparse.Namespace], None],
                  rank_argv: Sequence[str], report: Callable[[List[Any], argparse.Namespace], Dict[str, Any]],
                  threads: int = 1) -> Optional[Dict[str, Any]]:
    """Inside a launched rank: run it. Otherwise: launch ``args.nprocs`` ranks of ``script`` per
    world size and report what they measured."""
    setup_logging(args.log_level)
    from crossover_sgd.errors import ConfigError
    from crossover_sgd.runtime.emulation import format_rate

    if args.rank_result is not None or under_external_launcher():
        if args.rank_result is None and (args.emulate_nodes is not None or args.link_rate is not None):
            emulation_error(script, ConfigError("{emulate_nodes} places the ranks this script starts itself, but "
                                                "this process was started by a launcher: drop {emulate_nodes} "
                                                "and {link_rate}"))
        run_rank(args)
        return None
    try:
        plans = emulation_plans(args)
    except ConfigError as exc:
        emulation_error(script, exc)
    _EMULATION.clear()
    parts = []
    for n, plan in zip(args.nprocs, plans):
        if plan is None:
            log.info("starting %d rank(s), %d thread(s) each", n, threads)
            parts.append(launch_ranks(script, n, rank_argv, threads=threads, timeout=args.timeout))
            continue
        _EMULATION.append({"nproc": n, "nodes": plan.nodes, "ranks_per_node": plan.ranks_per_node,
                           "link_rate": format_rate(plan.rate_bits_per_s), "link_rate_bits_per_s": plan.rate_bits_per_s})
        log.info("starting %d rank(s), %d thread(s) each, on %d emulated nodes, links of %s", n, threads,
                 plan.nodes, format_rate(plan.rate_bits_per_s))
        parts.append(launch_ranks(script, n, rank_argv, threads=threads, timeout=args.timeout,
                                  emulate_nodes=plan.nodes, link_rate=plan.rate_bits_per_s))
    return report(parts, args)
