"""Time one optimizer ``step()`` on ResNet-50's parameters: LARS vs SGD vs the reference loop.

Each optimizer gets its own copy of torchvision's ResNet-50 parameters (161 tensors,
25.6 M values) with fixed random gradients, so ``step()`` alone is timed (no
forward/backward). Rows:

* ``sgd-foreach``: ``torch.optim.SGD(foreach=True, momentum=0.9, weight_decay=5e-5)``, the baseline;
* ``lars-mxnet`` / ``lars-pytorch``: :class:`lars.LARS`, study settings, two momentum forms;
* ``lars-nesterov``: ``lars-mxnet`` with Nesterov momentum;
* ``lars-amp``: ``lars-mxnet`` with ``grad_scale``/``found_inf`` (GradScaler's protocol);
* ``reference``: :class:`lars.reference.ReferenceLARS`, the per-parameter loop.

Usage: ``python3 benchmarks/lars_step.py [--device cuda] [--repeats 30] [--json out.json]``.
Prints a table (median and minimum ms per step, ratios of both) and optionally writes
it as JSON. On a shared machine the minimum is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lars import LARS  # noqa: E402
from lars.reference import ReferenceLARS  # noqa: E402

LR = 0.1


def resnet50_params(device: torch.device, seed: int) -> list[torch.nn.Parameter]:
    """ResNet-50's parameters on ``device`` with random gradients."""
    import torchvision

    torch.manual_seed(seed)
    params = list(torchvision.models.resnet50(weights=None).to(device).parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-2
    return params


def make_cases(device: torch.device) -> dict[str, Callable[[], None]]:
    """Name -> a zero-argument function doing one step of that optimizer."""
    def lars_step(**options) -> Callable[[], None]:
        opt = LARS.study_preset(resnet50_params(device, 0), lr=LR, **options)
        return opt.step

    sgd = torch.optim.SGD(resnet50_params(device, 0), lr=LR, momentum=0.9, weight_decay=5e-5,
                          foreach=True)
    amp_opt = LARS.study_preset(resnet50_params(device, 0), lr=LR)
    for p in amp_opt.param_groups[0]["params"]:
        p.grad *= 1024.0
    scale = torch.full((), 1024.0, device=device)
    found_inf = torch.zeros((), device=device)
    reference = ReferenceLARS(resnet50_params(device, 0), lr=LR, momentum=0.96,
                              weight_decay=5e-5, eta=0.0025, eps=1e-9)
    return {
        "sgd-foreach": sgd.step,
        "lars-mxnet": lars_step(),
        "lars-pytorch": lars_step(momentum_form="pytorch"),
        "lars-nesterov": lars_step(nesterov=True),
        "lars-amp": lambda: amp_opt.step(grad_scale=scale, found_inf=found_inf),
        "reference": reference.step,
    }


def time_step(step: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call, one sample per call, after ``warmup`` calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        samples.append(time.perf_counter() - start)
    return samples


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per optimizer")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda given but CUDA is not available")

    cases = make_cases(device)
    # Interleave the optimizers round by round so that drifts in machine load hit all alike.
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for name, step in cases.items():
        time_step(step, device, args.warmup, 0)
    for _ in range(args.repeats):
        for name, step in cases.items():
            samples[name] += time_step(step, device, 0, 1)

    median = {name: statistics.median(s) for name, s in samples.items()}
    best = {name: min(s) for name, s in samples.items()}
    rows = [{"optimizer": name, "median_ms": 1e3 * median[name], "min_ms": 1e3 * best[name],
             "vs_sgd": median[name] / median["sgd-foreach"],
             "vs_sgd_min": best[name] / best["sgd-foreach"],
             "reference_over_this": median["reference"] / median[name],
             "reference_over_this_min": best["reference"] / best[name]} for name in cases]
    result = {
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "rows": rows,
    }
    print(f"LARS step() on ResNet-50 parameters, device={device}, threads={result['threads']}, "
          f"torch {torch.__version__}, {args.repeats} repeats (ratios: median / min)")
    print(f"{'optimizer':<15}{'median ms':>10}{'min ms':>9}{'x SGD':>14}{'ref / this':>14}")
    for row in rows:
        print(f"{row['optimizer']:<15}{row['median_ms']:>10.2f}{row['min_ms']:>9.2f}"
              f"{row['vs_sgd']:>8.2f} /{row['vs_sgd_min']:>5.2f}"
              f"{row['reference_over_this']:>8.2f} /{row['reference_over_this_min']:>5.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
