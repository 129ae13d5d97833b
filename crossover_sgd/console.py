"""Console helpers shared by every entry point: a one-line argparse parser, the original
scripts' string booleans, and the error boundary that turns bad input into one line, exit 2.

Bad input ends with one line ``PROG: error: ...``; settings named in a message as ``{field}``
placeholders are written as the flags of the entry point (``names``: field -> flag).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Dict, Optional

from crossover_sgd.errors import ConfigError, DivergedError, render_fields
from crossover_sgd.runtime.local_launcher import CONFIG_ERROR_EXIT, claim_error_channel

__all__ = ["OneLineParser", "parse_bool", "str_bool", "report_errors", "add_flag", "QUIET_EXIT_DELAY_S"]

#: How long a rank that leaves the report of a shared error to rank 0 waits before exiting.
QUIET_EXIT_DELAY_S = 3.0


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage dump) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog.split()[0]}: error: {message}\n")


def parse_bool(text: str) -> bool:
    """The original scripts' string booleans: ``True`` or ``False`` (any case), nothing else."""
    value = str(text).strip().lower()
    if value in ("true", "false"):
        return value == "true"
    raise ConfigError(f"{text!r} is not a boolean: use True or False")


def str_bool(text: str) -> bool:
    """argparse type for the original scripts' ``True``/``False`` strings."""
    try:
        return parse_bool(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_flag(group, *names: str, **kwargs) -> None:
    """Add a flag under its dashed names and their underscored aliases (``--batch-size``/``--batch_size``)."""
    aliases = []
    for name in names:
        aliases.append(name)
        underscored = name.replace("-", "_").replace("__", "--", 1)
        if underscored != name:
            aliases.append(underscored)
    group.add_argument(*aliases, **kwargs)


def report_errors(action: Callable[[], int], prog: str = "crossover-sgd", names: Optional[Dict[str, str]] = None) -> int:
    """Run ``action``; bad input becomes one line on stderr and exit code 2.

    ``names`` writes the settings a message names as this entry point's flags. In a rank of
    ``--nproc N`` the line goes to the local launcher, which prints it once for all ranks (see
    :mod:`crossover_sgd.runtime.local_launcher`). A ``quiet`` error (every rank found it, rank 0
    reports it) prints nothing; under other launchers such a rank waits a moment before it exits,
    so that the launcher does not stop rank 0 before its line is out.
    """
    try:
        return action()
    except DivergedError as exc:
        print(f"{prog}: error: {render_fields(str(exc), names)}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        channel = claim_error_channel()
        if exc.quiet:
            if channel is None:
                time.sleep(QUIET_EXIT_DELAY_S)
            return CONFIG_ERROR_EXIT
        line = " ".join(f"{prog}: error: {exc.render(names)}".splitlines())  # one line, whatever the message held
        if channel is not None:
            try:
                os.write(channel, (line[:4000] + "\n").encode())  # below PIPE_BUF: one atomic write
                return CONFIG_ERROR_EXIT
            except OSError:
                pass
        print(line, file=sys.stderr)
        return CONFIG_ERROR_EXIT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
