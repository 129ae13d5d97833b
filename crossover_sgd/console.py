"""Console helpers shared by every entry point: a one-line argparse parser, the original
scripts' string booleans, and the error boundary that turns bad input into one line, exit 2.

Bad input ends with one line ``PROG: error: ...``; settings named in a message as ``{field}``
placeholders are written as the flags of the entry point (``names``: field -> flag).
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import time
from typing import Callable, Dict, Optional

from crossover_sgd.errors import ConfigError, DivergedError, render_fields
from crossover_sgd.runtime.local_launcher import CONFIG_ERROR_EXIT, claim_error_channel, report_line

__all__ = ["OneLineParser", "parse_bool", "str_bool", "report_errors", "add_flag", "QUIET_EXIT_DELAY_S"]

#: How long a rank that leaves the report of a shared error to rank 0 waits before exiting.
QUIET_EXIT_DELAY_S = 3.0


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage dump) with exit code 2; an unknown
    flag gets the closest known one as a suggestion."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog.split()[0]}: error: {message}{suggest_flag(self, message)}\n")


def suggest_flag(parser: argparse.ArgumentParser, message: str) -> str:
    """`` (did you mean --algorithm?)`` for the first unrecognized flag of ``message`` close to one
    of ``parser``'s flags (its subcommands' included), else ``""``."""
    if not message.startswith("unrecognized arguments:"):
        return ""
    known = sorted(_option_strings(parser))
    for token in message.split(":", 1)[1].split():
        if token.startswith("--"):
            close = difflib.get_close_matches(token.split("=", 1)[0], known, n=1, cutoff=0.75)
            if close:
                return f" (did you mean {close[0]}?)"
    return ""


def _option_strings(parser: argparse.ArgumentParser) -> set:
    found = set()
    for action in parser._actions:
        found.update(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


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


def bounded_int(noun: str, minimum: int, maximum: Optional[int] = None, why: str = "") -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``minimum`` (to ``maximum``), else one line naming
    the value, what is accepted (``noun``, e.g. "a port number") and ``why``."""
    reason = f" ({why})" if why else ""
    accepted = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}{reason}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{value} is invalid: use {noun} {accepted}{reason}")
        return value

    return parse


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

    An ``OSError`` about a path (a read-only or full filesystem, a path under ``/proc``, a file
    where a directory is expected) is the same: one line, exit code 2. The places that know a
    path is the user's raise :class:`~crossover_sgd.atomic.UserPathError` (its flag, the path,
    the reason, what would be accepted: :func:`crossover_sgd.atomic.user_output`); any other
    names the file and the reason. An OSError without a file (a socket) keeps its traceback.
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
        return _say(f"{prog}: error: {exc.render(names)}")
    except OSError as exc:  # a path that cannot be read or written: one line naming it, exit 2
        message = os_error_message(exc, names)
        if message is None:  # no path involved (a socket, a pipe): not the user's input
            raise
        return _say(f"{prog}: error: {message}")
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _say(line: str) -> int:
    """Report ``line`` as one line (to the local launcher in a rank of ``--nproc N``, else on
    stderr); return the exit code of bad input."""
    report_line(line)
    return CONFIG_ERROR_EXIT


def os_error_message(exc: OSError, names: Optional[Dict[str, str]] = None) -> Optional[str]:
    """The one-line message of an OSError about a path: a :class:`~crossover_sgd.atomic.UserPathError`
    names the flag (written as the entry point's), the path the user gave, what failed and what
    would be accepted; any other OSError that names a file says which and why (None: it names
    no file)."""
    from crossover_sgd.atomic import UserPathError, os_reason

    if isinstance(exc, UserPathError):
        return render_fields(exc.message(), names)  # its flag and advice may hold {field} placeholders
    if exc.filename is None:
        return None
    files = " -> ".join(os.fsdecode(f) for f in (exc.filename, exc.filename2) if f is not None)
    return f"{files}: {os_reason(exc)}"
