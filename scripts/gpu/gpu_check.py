#!/usr/bin/env python3
"""The GPU check: every CUDA test and the GPU benchmarks in one command, within a time budget,
written to one JSON file.

    python3 scripts/gpu/gpu_check.py [--json PATH] [--budget 450]

Steps, each a subprocess with its own time limit (the sum stays inside ``--budget`` seconds,
450 by default: under 8 minutes on one H200 with the start-up of every step):

1. device: torch's view of the GPU (name, memory, capability, CUDA/cuDNN/NCCL versions, bf16) and
   ``nvidia-smi`` (before and after the run);
2. ``pytest -m gpu tests/gpu``: counts of passed/failed/skipped/errors, each failure's message,
   each skip's reason (from JUnit XML, or from the verbose log if the step ran out of time);
3. ``benchmarks/lars_step.py --device cuda``: one LARS step against SGD and the per-parameter
   reference on ResNet-50's parameters;
4. ``benchmarks/throughput.py --nprocs 1 --device cuda``: ResNet-50 at 224 pixels, channels_last,
   bf16 autocast: the Trainer's step against a hand-written loop, images/s;
5. the same in fp32 (no autocast), when the budget still has room: what AMP gains.

The JSON (``--json``; default ``$OUT/gpu_check.json`` where ``OUT`` is set, else
``./gpu_check.json``) is replaced atomically after every step (``"complete": false`` until the
end), so a run stopped from outside leaves the steps done so far and never a half-written file.
Exit status: 0 when every step ran and no test failed, 1 otherwise, 2 when no CUDA GPU is visible:
then one line on stderr says so, nothing runs and no file is written.

``--cpu-dry-run`` checks the plumbing on a machine without a GPU: the same steps on the CPU with
tiny sizes (the tests are then all skipped); its JSON says ``"dry_run": true``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[2]
PROG = "gpu_check"
TAIL = 6000  # characters of each step's output kept in the JSON
RESERVE_S = 10.0  # kept back from the budget for writing the JSON and the last nvidia-smi


class Refusal(Exception):
    """No CUDA GPU to check: one line on stderr, exit 2, nothing written."""


def cuda_or_refuse() -> Any:
    """``torch`` when it sees a CUDA GPU; else :class:`Refusal` with the reason."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "CUDA_VISIBLE_DEVICES unset"
    with warnings.catch_warnings(record=True) as caught:  # torch warns about a missing driver: fold it in
        warnings.simplefilter("always")
        try:
            import torch
        except Exception as exc:  # noqa: BLE001 - any import failure means no GPU can be used
            raise Refusal(f"no CUDA GPU is visible: torch cannot be imported ({type(exc).__name__}: {exc})") from None
        available = torch.cuda.is_available() and torch.cuda.device_count() > 0
    if not available:
        detail = "; ".join(" ".join(str(w.message).split()) for w in caught)[:300]
        raise Refusal(f"no CUDA GPU is visible to torch {torch.__version__} (torch.cuda.is_available() is False, "
                      f"{where}{'; ' + detail if detail else ''}): nothing was run and no JSON was written")
    return torch


# ------------------------------------------------------------------------------------ output
def write_json_atomically(path: Path, payload: Dict[str, Any]) -> None:
    """Write ``payload`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, default=str)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp made it private
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ steps
def child_env() -> Dict[str, str]:
    """This environment with the checkout importable (the package need not be installed) and
    Python's output unbuffered (a step stopped at its limit still shows what it printed)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    for launcher_variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(launcher_variable, None)
    return env


def run_step(command: Sequence[str], limit_s: float, log: Path) -> Dict[str, Any]:
    """Run ``command`` in its own session, output to ``log``; after ``limit_s`` seconds kill it
    and every process it started (its process group, and its descendants by pid: the tests start
    their commands in sessions of their own)."""
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT),
                                env=child_env(), start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=max(1.0, limit_s))
        except subprocess.TimeoutExpired:
            timed_out = True
            stop_tree(proc.pid)
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):  # what the step left behind
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log.read_text(errors="replace")
    return {"command": [str(c) for c in command], "returncode": proc.returncode, "timed_out": timed_out,
            "limit_s": round(limit_s, 1), "seconds": round(time.monotonic() - started, 2),
            "output_tail": output[-TAIL:]}


def descendants(pid: int) -> List[int]:
    """The processes below ``pid`` (children, their children, ...), from /proc (empty elsewhere)."""
    children: Dict[int, List[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_tree(pid: int) -> None:
    """SIGKILL ``pid``'s descendants (listed first, while they still hang below it), then its group."""
    for child in descendants(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


_VERBOSE_LINE = re.compile(r"^(\S+::\S+)\s+(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b")


def pytest_results(junit: Path, log_text: str) -> Dict[str, Any]:
    """Counts and details from pytest's JUnit XML; from its verbose log when there is no XML
    (the step was stopped before pytest wrote it)."""
    if junit.is_file():
        try:
            return _from_junit(junit)
        except ET.ParseError as exc:
            partial = _from_log(log_text)
            partial["note"] = f"unreadable JUnit XML ({exc}); counts from the log"
            return partial
    partial = _from_log(log_text)
    partial["note"] = "no JUnit XML (pytest did not finish): counts from the verbose log, tests not reached are missing"
    return partial


def _from_junit(junit: Path) -> Dict[str, Any]:
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    passed: List[str] = []
    failures: List[Dict[str, str]] = []
    errors: List[Dict[str, str]] = []
    skipped: List[Dict[str, str]] = []
    for suite in suites:
        for case in suite.iter("testcase"):
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
            if outcome is None:
                passed.append(name)
                continue
            entry = {"test": name, "message": (outcome.get("message") or "")[:1000],
                     "detail": (outcome.text or "")[-3000:]}
            {"failure": failures, "error": errors, "skipped": skipped}[outcome.tag].append(entry)
    seconds = sum(float(s.get("time", 0) or 0) for s in suites)
    return {"source": "junit", "passed": len(passed), "failed": len(failures), "errors": len(errors),
            "skipped": len(skipped), "seconds": round(seconds, 2), "passed_tests": passed,
            "failures": failures, "error_details": errors,
            "skips": [{"test": s["test"], "reason": s["message"]} for s in skipped]}


def _from_log(text: str) -> Dict[str, Any]:
    outcomes: Dict[str, List[str]] = {}
    for line in text.splitlines():
        match = _VERBOSE_LINE.match(line.strip())
        if match:
            outcomes.setdefault(match.group(2), []).append(match.group(1))
    return {"source": "log", "passed": len(outcomes.get("PASSED", [])), "failed": len(outcomes.get("FAILED", [])),
            "errors": len(outcomes.get("ERROR", [])), "skipped": len(outcomes.get("SKIPPED", [])),
            "passed_tests": outcomes.get("PASSED", []),
            "failures": [{"test": t, "message": "see output_tail"} for t in outcomes.get("FAILED", [])],
            "error_details": [{"test": t, "message": "see output_tail"} for t in outcomes.get("ERROR", [])],
            "skips": [{"test": t, "reason": "see output_tail"} for t in outcomes.get("SKIPPED", [])]}


def read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------ device
def nvidia_smi() -> Dict[str, Any]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"available": False}
    fields = ("name,driver_version,memory.total,memory.used,temperature.gpu,clocks.sm,clocks.max.sm,"
              "clocks.mem,power.draw,power.limit,pstate,compute_mode")
    result: Dict[str, Any] = {"available": True}
    for key, args in (("query", [f"--query-gpu={fields}", "--format=csv"]), ("list", ["-L"])):
        try:
            done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=30)
            result[key] = (done.stdout.strip() or done.stderr.strip())[-4000:]
        except (OSError, subprocess.TimeoutExpired) as exc:
            result[key] = f"failed: {exc}"
    return result


def torch_device_info(torch: Any) -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device_count": torch.cuda.device_count(), "devices": [],
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    with contextlib.suppress(Exception):
        info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    with contextlib.suppress(Exception):
        import torchvision

        info["torchvision"] = torchvision.__version__
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        info["devices"].append({
            "index": index, "name": props.name, "capability": f"{props.major}.{props.minor}",
            "total_memory_gib": round(props.total_memory / 2 ** 30, 2),
            "multiprocessors": props.multi_processor_count,
        })
    with contextlib.suppress(Exception):
        info["bf16_supported"] = bool(torch.cuda.is_bf16_supported())
    return info


# ------------------------------------------------------------------------------------ plan
def plan(args: argparse.Namespace, tmp: Path) -> List[Dict[str, Any]]:
    """The steps: name, command, time cap, whether it runs only with room to spare."""
    py = sys.executable
    device = "cpu" if args.cpu_dry_run else "cuda"
    pytest_cmd = [py, "-m", "pytest", "-m", "gpu", "tests/gpu", "-v", "-rs", "-p", "no:cacheprovider",
                  f"--junitxml={tmp / 'junit.xml'}", "-o", f"timeout={args.test_timeout}", *args.pytest_args]
    if args.cpu_dry_run:
        lars = [py, "benchmarks/lars_step.py", "--device", "cpu", "--repeats", "1", "--warmup", "0"]
        model = ["--model", "small_cnn", "--batch-size", "8", "--steps", "1", "--warmup", "0", "--repeats", "1"]
    else:
        lars = [py, "benchmarks/lars_step.py", "--device", "cuda", "--repeats", str(args.lars_repeats),
                "--warmup", "5"]
        model = ["--model", "resnet50", "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                 "--warmup", "2", "--repeats", str(args.repeats)]
    throughput = [py, "benchmarks/throughput.py", "--nprocs", "1", "--device", device, *model,
                  "--channels-last", "off" if args.cpu_dry_run else "on"]
    steps = [
        {"name": "pytest", "command": pytest_cmd, "cap": args.pytest_budget, "optional": False},
        {"name": "lars_step", "command": [*lars, "--json", str(tmp / "lars_step.json")],
         "cap": args.lars_budget, "optional": False, "result": tmp / "lars_step.json"},
        {"name": "throughput_amp_bf16", "command": [*throughput, "--amp", "off" if args.cpu_dry_run else "bf16",
                                                    "--json", str(tmp / "throughput_bf16.json")],
         "cap": args.throughput_budget, "optional": False, "result": tmp / "throughput_bf16.json",
         "benchmark_timeout": True},
        {"name": "throughput_fp32", "command": [*throughput, "--amp", "off", "--json", str(tmp / "throughput_fp32.json")],
         "cap": args.fp32_budget, "optional": True, "result": tmp / "throughput_fp32.json",
         "benchmark_timeout": True},
    ]
    if args.skip_tests:
        steps = [s for s in steps if s["name"] != "pytest"]
    if args.skip_benchmarks:
        steps = [s for s in steps if s["name"] == "pytest"]
    return steps


def default_json_path() -> Path:
    out = os.environ.get("OUT")
    return Path(out) / "gpu_check.json" if out else Path.cwd() / "gpu_check.json"


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.strip().splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--json", type=Path, default=None,
                        help="where the JSON goes (default: $OUT/gpu_check.json, else ./gpu_check.json)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for everything")
    parser.add_argument("--pytest-budget", type=float, default=280.0, help="seconds cap of the test step")
    parser.add_argument("--test-timeout", type=int, default=200, help="seconds cap of one test (pytest-timeout)")
    parser.add_argument("--lars-budget", type=float, default=50.0, help="seconds cap of benchmarks/lars_step.py")
    parser.add_argument("--throughput-budget", type=float, default=110.0,
                        help="seconds cap of benchmarks/throughput.py with bf16 AMP")
    parser.add_argument("--fp32-budget", type=float, default=90.0,
                        help="seconds cap of the fp32 throughput run (run only if the budget has that much left)")
    parser.add_argument("--batch-size", type=int, default=128, help="ResNet-50 images per step (throughput)")
    parser.add_argument("--steps", type=int, default=5, help="training steps per timed window (throughput)")
    parser.add_argument("--repeats", type=int, default=9, help="timed windows per case (throughput)")
    parser.add_argument("--lars-repeats", type=int, default=50, help="timed steps per optimizer (lars_step)")
    parser.add_argument("--skip-tests", action="store_true", help="benchmarks only")
    parser.add_argument("--skip-benchmarks", action="store_true", help="tests only")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="no GPU needed: the same steps on the CPU with tiny sizes, to check this script")
    parser.add_argument("--pytest-args", nargs=argparse.REMAINDER, default=[],
                        help="more pytest arguments (last on the line)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    json_path = (args.json or default_json_path()).resolve()
    if args.cpu_dry_run:
        import torch
    else:
        try:
            torch = cuda_or_refuse()
        except Refusal as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
            return 2

    report: Dict[str, Any] = {
        "check": "gpu_check", "version": 1, "complete": False, "dry_run": bool(args.cpu_dry_run),
        "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "budget_s": args.budget, "repository": str(ROOT), "git_head": _git_head(),
        "device": {"torch": torch_device_info(torch) if not args.cpu_dry_run else {"torch": torch.__version__},
                   "nvidia_smi_before": nvidia_smi()},
        "steps": {}, "skipped_steps": [],
    }
    write_json_atomically(json_path, report)
    say(f"writing {json_path}; budget {args.budget:.0f} s")
    failed = False
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp_name:
        tmp = Path(tmp_name)
        for step in plan(args, tmp):
            left = args.budget - (time.monotonic() - started) - RESERVE_S
            if left < 20 or (step["optional"] and left < step["cap"]):
                report["skipped_steps"].append({"step": step["name"], "reason": f"{left:.0f} s left of the budget"})
                say(f"{step['name']}: not run, {left:.0f} s left")
                if not step["optional"]:
                    failed = True
                continue
            limit = min(step["cap"], left)
            command = list(step["command"])
            if step.get("benchmark_timeout"):  # the benchmark's own launcher limit, inside ours
                command += ["--timeout", str(max(10, int(limit - 10)))]
            say(f"{step['name']}: up to {limit:.0f} s: {' '.join(command[1:])}")
            record = run_step(command, limit, tmp / f"{step['name']}.log")
            if step["name"] == "pytest":
                record["results"] = pytest_results(tmp / "junit.xml", (tmp / "pytest.log").read_text(errors="replace"))
                results = record["results"]
                failed |= results["failed"] > 0 or results["errors"] > 0 or record["returncode"] not in (0, 5)
                say(f"pytest: {results['passed']} passed, {results['failed']} failed, {results['errors']} errors, "
                    f"{results['skipped']} skipped ({record['seconds']:.0f} s)")
            else:
                record["result"] = read_json(step["result"])
                failed |= record["returncode"] != 0 or record["result"] is None
                say(f"{step['name']}: exit {record['returncode']} ({record['seconds']:.0f} s)")
            failed |= record["timed_out"]
            report["steps"][step["name"]] = record
            report["elapsed_s"] = round(time.monotonic() - started, 2)
            write_json_atomically(json_path, report)
    report["device"]["nvidia_smi_after"] = nvidia_smi()
    report["summary"] = summarize(report)
    report["ok"] = not failed
    report["complete"] = True
    report["total_s"] = round(time.monotonic() - started, 2)
    write_json_atomically(json_path, report)
    print(json.dumps({"json": str(json_path), "ok": report["ok"], "total_s": report["total_s"],
                      **report["summary"]}, indent=2))
    return 0 if report["ok"] else 1


def summarize(report: Dict[str, Any]) -> Dict[str, Any]:
    """The few figures a reader wants first."""
    summary: Dict[str, Any] = {}
    tests = report["steps"].get("pytest", {}).get("results")
    if tests:
        summary["tests"] = {k: tests[k] for k in ("passed", "failed", "errors", "skipped")}
        summary["failed_tests"] = [f["test"] for f in tests["failures"] + tests["error_details"]]
    lars = (report["steps"].get("lars_step") or {}).get("result")
    if lars:
        summary["lars_step_ms"] = {r["optimizer"]: round(r["median_ms"], 3) for r in lars["rows"]}
    for name in ("throughput_amp_bf16", "throughput_fp32"):
        result = (report["steps"].get(name) or {}).get("result")
        if result:
            summary[name] = [{k: (round(r[k], 4) if isinstance(r.get(k), float) else r.get(k))
                              for k in ("case", "images_per_s", "plain_images_per_s", "step_time_overhead")}
                             for r in result["rows"]]
    return summary


def _git_head() -> Optional[str]:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=str(ROOT))
        return done.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


if __name__ == "__main__":
    sys.exit(main())
