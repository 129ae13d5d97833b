"""Rank 0's progress bar: on a terminal a live bar (tqdm, redrawn in place with carriage
returns), in a pipe or a log file only the plain per-epoch lines."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Tuple

import pytest

from support import child_env, cli

pytestmark = pytest.mark.slow

#: Two short epochs of the default job (digits, small CNN): 1438 samples / 256 = 5 steps each.
SHORT = ["train", "--epochs", "2", "--batch-size", "256", "--workers", "0"]


def run_on_terminal(args, timeout: float = 180) -> Tuple[int, str]:
    """Run ``python -m crossover_sgd ARGS`` with stdin, stdout and stderr on a pseudo-terminal
    (100 columns); return its exit code and everything it wrote there."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = child_env({"TERM": "xterm"})
    try:
        proc = subprocess.Popen([sys.executable, "-m", "crossover_sgd", *args], stdin=slave, stdout=slave,
                                stderr=slave, env=env, close_fds=True, start_new_session=True)
    finally:
        os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError as exc:  # EIO: every process holding the terminal is gone
                    if exc.errno != errno.EIO:
                        raise
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            pytest.fail(f"no exit within {timeout} s; output so far:\n{b''.join(chunks).decode(errors='replace')}")
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal(tmp_path: Path):
    code, text = run_on_terminal([*SHORT, "--out", str(tmp_path / "out")])
    assert code == 0, text
    draws = [part for part in text.split("\r") if "/5 [" in part and ("step/s]" in part or "s/step]" in part)]
    assert any("epoch 1/2" in part for part in draws), f"no tqdm bar ('epoch 1/2 ... step/s'):\n{text!r}"
    assert any("epoch 2/2" in part for part in draws), text  # reset for every epoch
    assert len(draws) >= 4, f"the bar is not redrawn in place with carriage returns:\n{text!r}"
    assert "epoch 2/2 step 10" in text  # the per-epoch log lines are there too
    # the bar is rank 0's and only lives on the terminal: the log file has plain lines
    log = (tmp_path / "out" / "train.log").read_text()
    assert "\r" not in log and "step/s" not in log and "epoch 1/2 step 5" in log


def test_no_progress_bar_without_a_terminal(tmp_path: Path):
    result = cli(*SHORT, "--out", str(tmp_path / "out"), env=child_env({"TERM": "xterm"}))
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "\r" not in output and "step/s" not in output and "s/step" not in output, output
    epochs = [line for line in result.stderr.splitlines() if " INFO crossover_sgd.training.trainer: epoch " in line]
    assert [line.split(": ", 1)[1].split("  ")[0] for line in epochs] == ["epoch 1/2 step 5", "epoch 2/2 step 10"]
