"""Errors that reach the user as one clear line.

Lower layers name the *setting* a bad value belongs to, not the command-line flag: a message may
hold ``{field}`` placeholders (a :class:`~crossover_sgd.config.TrainConfig` or algorithm option
field, e.g. ``"{segments} 0 is invalid: use an integer >= 1"``). The entry point that reports the
error renders each one as the flag its user typed (:meth:`ConfigError.render`): ``--segments`` for
``crossover-sgd train``, the original name (``--batch_size``) for ``imagenet_test.py``.
"""

from __future__ import annotations

import re
from typing import Dict, Optional

__all__ = ["ConfigError", "PeerError", "DivergedError", "flag_name", "render_fields", "divides_world_error"]

_FIELD = re.compile(r"\{([a-z][a-z0-9_]*)\}")


#: Settings whose flag is written with underscores by default: the launcher-facing flags, as the
#: study's job scripts spell them (every flag accepts both spellings).
UNDERSCORED = frozenset({"world_size", "gpu_per_node"})


def flag_name(field: str, names: Optional[Dict[str, str]] = None) -> str:
    """The flag of ``field``: ``names[field]`` where given, else ``--field-with-dashes`` (or
    ``--field_name`` for :data:`UNDERSCORED`)."""
    if names and names.get(field):
        return names[field]
    return "--" + (field if field in UNDERSCORED else field.replace("_", "-"))


def render_fields(text: str, names: Optional[Dict[str, str]] = None) -> str:
    """``text`` with every ``{field}`` placeholder written as its flag (:func:`flag_name`)."""
    return _FIELD.sub(lambda m: flag_name(m.group(1), names), text)


class ConfigError(ValueError):
    """Bad user input: a flag value, a path, a checkpoint. Printed as one line, exit code 2.

    ``quiet``: every rank found the same error; only rank 0 prints it.
    """

    quiet = False

    def render(self, names: Optional[Dict[str, str]] = None) -> str:
        """The message with its ``{field}`` placeholders written as flags."""
        return render_fields(super().__str__(), names)

    def __str__(self) -> str:
        return self.render()


def divides_world_error(field: str, value: int, world_size: int) -> ConfigError:
    """``value`` of setting ``field`` must divide the world size."""
    return ConfigError(f"{{{field}}} {value} does not divide the world size {world_size}: "
                       f"use a divisor of {world_size}")


class PeerError(RuntimeError):
    """A peer process died or stopped answering."""


class DivergedError(RuntimeError):
    """A replica's parameters became non-finite; it refuses to send them to its peers."""
