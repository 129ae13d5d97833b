"""Algorithm options: each algorithm declares its settings as one small dataclass.

A field of an options dataclass is one setting: its default, its help text, its checks, and
(through :mod:`crossover_sgd.algorithms.registry`) its command-line flag ``--field-name`` (and
``--field_name``), grouped in ``--help`` with the algorithms that read it. Declare a field with
:func:`option`::

    @dataclass
    class SGPOptions(GossipOptions, OverlapOptions):
        sgp_peers: int = option(1, "sgp: out-peers per round", minimum=1)

        def check(self, world_size):          # checks that need the world size (when it is known)
            ...

Options shared by several algorithms live in a base dataclass the algorithms' options inherit
from (one declaration, one flag). Errors name the setting as a ``{field}`` placeholder; the entry
point renders it as the flag its user typed (:mod:`crossover_sgd.errors`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from crossover_sgd.errors import ConfigError

__all__ = ["option", "OptionSpec", "AlgorithmOptions", "check_value"]


def option(default: Any, help: str, *, minimum: Optional[float] = None, choices: Optional[Sequence[str]] = None,
           aliases: Sequence[str] = (), strict: bool = False, metavar: Optional[str] = None) -> Any:
    """A dataclass field declaring one algorithm option.

    ``minimum``/``choices``: the accepted values (checked for any value the user gives, whatever the
    algorithm). ``aliases``: more flag spellings (``--sgp-overlap``). ``strict``: giving the option
    to an algorithm that does not read it is an error (not only a warning): for options whose
    absence would silently change what a run means.
    """
    meta = {"help": help, "minimum": minimum, "choices": tuple(choices) if choices else None,
            "aliases": tuple(aliases), "strict": strict, "metavar": metavar}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionSpec:
    """One option as the registry and the command line see it."""

    name: str
    default: Any
    type: type  # bool, int, float or str (the value's type; Optional[...] allows None)
    optional: bool  # None is a valid value (the default)
    help: str
    minimum: Optional[float]
    choices: Optional[Tuple[str, ...]]
    aliases: Tuple[str, ...]
    strict: bool
    metavar: Optional[str]
    owner: type  # the options dataclass that declares the field

    def check(self, value: Any) -> None:
        """Raise ConfigError if ``value`` is not accepted (whatever the algorithm)."""
        check_value(self.name, value, minimum=self.minimum, choices=self.choices,
                    optional=self.optional, kind=self.type)


def check_value(name: str, value: Any, *, minimum: Optional[float] = None, choices: Optional[Sequence[str]] = None,
                optional: bool = False, kind: type = int) -> None:
    """The value checks behind :func:`option` (also used by :mod:`crossover_sgd.config`)."""
    if value is None and optional:
        return
    if choices is not None and value not in choices:
        raise ConfigError(f"{{{name}}} {value!r} is unknown: choose one of {', '.join(choices)}")
    if minimum is not None:
        if kind is float and not (math.isfinite(value) and value >= minimum):
            raise ConfigError(f"{{{name}}} {value} is invalid: use a finite number >= {minimum:g}")
        if kind is int and value < minimum:
            raise ConfigError(f"{{{name}}} {value} is invalid: use an integer >= {minimum:g}")


@dataclass
class AlgorithmOptions:
    """Base of every algorithm's options (an algorithm without settings uses it as is)."""

    @classmethod
    def specs(cls) -> List[OptionSpec]:
        """The options of this dataclass, in declaration order (bases first)."""
        hints = typing.get_type_hints(cls)
        owners = {}
        for klass in reversed(cls.__mro__):  # the class whose own annotations declare each field
            for name in getattr(klass, "__annotations__", {}):
                owners.setdefault(name, klass)
        specs = []
        for f in dataclasses.fields(cls):
            kind, optional = _value_type(hints[f.name])
            meta = f.metadata
            specs.append(OptionSpec(f.name, f.default, kind, optional, meta.get("help", ""), meta.get("minimum"),
                                    meta.get("choices"), meta.get("aliases", ()), meta.get("strict", False),
                                    meta.get("metavar"), owners[f.name]))
        return specs

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_values(cls, values: Dict[str, Any]) -> "AlgorithmOptions":
        """The options from ``values`` (a superset: other algorithms' options are ignored)."""
        return cls(**{name: values[name] for name in cls.names() if name in values})

    def check(self, world_size: Optional[int]) -> None:
        """Checks across fields or against the world size (``None`` where not known yet).
        Single values are checked by :meth:`OptionSpec.check`."""

    def unused(self) -> Dict[str, str]:
        """Options of this algorithm that this run does not use, with why (``{"chromosome":
        "{segments} replaces it"}``): reported with the options of other algorithms."""
        return {}

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _value_type(hint: Any) -> Tuple[type, bool]:
    """(bool|int|float|str, whether None is allowed) of a field's annotation."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner, True
    return hint, False
