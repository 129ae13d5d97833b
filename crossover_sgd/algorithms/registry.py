"""The registry: every ``--algorithm``, its options, its metric columns.

To add an algorithm, write its module (a subclass of :class:`~crossover_sgd.algorithms.base.Algorithm`
with a ``name`` and an ``options_class``) and add the class to :data:`REGISTERED`. The command
line's flags (grouped by the algorithms that read them), their validation, the warning about
options without effect and the metrics columns all derive from here.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Type

from crossover_sgd.algorithms.allreduce import AllReduceSGD
from crossover_sgd.algorithms.base import Algorithm
from crossover_sgd.algorithms.gossip import CrossoverSGD, HierarchicalCrossoverSGD, SGP
from crossover_sgd.algorithms.options import AlgorithmOptions, OptionSpec
from crossover_sgd.algorithms.p2p import CADMM, DSGD, AdmmISVR, AdmmSGD, GossipSGD, PdmmISVR, PdmmSGD
from crossover_sgd.algorithms.distbelief import Downpour, Sandblaster
from crossover_sgd.algorithms.ps import DQLOSP, LOSP, OSP, LocalSGD
from crossover_sgd.config import TrainConfig
from crossover_sgd.errors import ConfigError

__all__ = ["REGISTERED", "ALGORITHMS", "OptionValues", "option_specs", "option_groups", "metric_columns",
           "make_config", "algorithm_class"]

#: Every algorithm, in the order ``--help`` and messages list them.
REGISTERED: Tuple[Type[Algorithm], ...] = (AllReduceSGD, SGP, CrossoverSGD, HierarchicalCrossoverSGD,
                                           DSGD, GossipSGD, PdmmSGD, AdmmSGD, PdmmISVR, AdmmISVR, CADMM,
                                           LocalSGD, OSP, LOSP, DQLOSP, Downpour, Sandblaster)
ALGORITHMS: Dict[str, Type[Algorithm]] = {cls.name: cls for cls in REGISTERED}


def algorithm_class(name: str) -> Type[Algorithm]:
    if name not in ALGORITHMS:
        raise ConfigError(f"{{algorithm}} {name!r} is unknown: choose one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


def _users(owner: type) -> List[str]:
    """The algorithms whose options include those declared by ``owner``."""
    return [cls.name for cls in REGISTERED if issubclass(cls.options_class, owner)]


def option_groups() -> List[Tuple[str, List[OptionSpec]]]:
    """The options grouped by the dataclass declaring them, titled by the algorithms that read
    them; groups read by fewer algorithms first (then in registration order)."""
    groups: Dict[type, List[OptionSpec]] = {}
    for cls in REGISTERED:
        for spec in cls.options_class.specs():
            if spec.name not in {s.name for specs in groups.values() for s in specs}:
                groups.setdefault(spec.owner, []).append(spec)
    order = sorted(groups, key=lambda owner: (len(_users(owner)),
                                              [c.name for c in REGISTERED].index(_users(owner)[0])))
    return [(", ".join(_users(owner)), groups[owner]) for owner in order]


def option_specs() -> List[OptionSpec]:
    """Every algorithm option once, in the order of :func:`option_groups`."""
    return [spec for _, specs in option_groups() for spec in specs]


def metric_columns() -> Dict[str, float]:
    """The metrics columns algorithms add, with the value the others write (every run's CSV has
    the same columns, so that runs of different algorithms compare side by side)."""
    columns: Dict[str, float] = {}
    for cls in REGISTERED:
        columns.update(cls.metric_columns)
    return columns


class OptionValues:
    """The algorithm options of a run: a value for every registered option (its default where
    not given). Stored in :attr:`TrainConfig.options`; implements what TrainConfig asks of it."""

    def __init__(self, values: Optional[Dict[str, Any]] = None):
        specs = {spec.name: spec for spec in option_specs()}
        unknown = sorted(set(values or {}) - set(specs))
        if unknown:
            raise TypeError(f"unknown algorithm option(s): {', '.join(unknown)}")
        self.values = {name: (values or {}).get(name, spec.default) for name, spec in specs.items()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OptionValues) and other.values == self.values

    def __repr__(self) -> str:
        return f"OptionValues({self.values!r})"

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.values)

    def of(self, algorithm: str) -> AlgorithmOptions:
        """The typed options of ``algorithm``."""
        return algorithm_class(algorithm).options_class.from_values(self.values)

    def check(self, algorithm: str, world_size: Optional[int]) -> None:
        """Every given value against its option's accepted values; options an algorithm must not
        be given (``strict``); then the algorithm's own checks (``world_size`` where known)."""
        cls = algorithm_class(algorithm)
        for spec in option_specs():
            value = self.values[spec.name]
            spec.check(value)
            if spec.strict and value != spec.default and spec.name not in cls.options_class.names():
                users = _users(spec.owner)
                raise ConfigError(f"{{{spec.name}}} {value} is available for {{algorithm}} {' and '.join(users)}, "
                                  f"not {algorithm}")
        self.of(algorithm).check(world_size)

    def unused(self, algorithm: str) -> List[str]:
        """The options set to a non-default value that ``algorithm`` does not read, each with why
        (``"{sync_grad} False (only allreduce uses it; the algorithm is crossover)"``)."""
        cls = algorithm_class(algorithm)
        own = cls.options_class.names()
        why_unused = self.of(algorithm).unused()
        found = []
        for spec in option_specs():
            value = self.values[spec.name]
            if value == spec.default or (spec.name in own and spec.name not in why_unused):
                continue
            users = _users(spec.owner)
            why = why_unused.get(spec.name) or (f"only {', '.join(users)} use{'s' if len(users) == 1 else ''} it; "
                                                f"the algorithm is {algorithm}")
            found.append(f"{{{spec.name}}} {_show(value)} ({why})")
        return found


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def make_config(**values: Any) -> TrainConfig:
    """A TrainConfig from generic fields and algorithm options given side by side
    (``make_config(algorithm="crossover", chromosome="coarse", epochs=3)``)."""
    names = set(TrainConfig.field_names())
    options = {k: v for k, v in values.items() if k not in names}
    generic = {k: v for k, v in values.items() if k in names}
    return TrainConfig(**generic, options=OptionValues(options))
