"""What the figures read from a run directory: :class:`RunMetrics` and :func:`load_run`.

* ``metrics_rank{R}.csv``: per rank a row per evaluation (every run that trains with ranks);
* ``nodes/<node>.csv``: per node a row per evaluation (the peer-to-peer family, ``--partition``);
* ``ps/shard{s}.csv`` / ``.json``: the server shards' rows and their summaries at the end (the
  parameter-server and DistBelief families; a Downpour shard's summary has the histogram of the
  staleness of the updates it applied, its rows the replica of each update);
* ``ps/worker_rank{r}.csv``: per worker a row per push (the parameter-server family, Downpour);
* ``ps/coordinator.csv`` / ``.json``: Sandblaster's coordinator, a row per L-BFGS iteration and the
  portions per replica at the end;
* ``config.json`` / ``summary.json`` (or a node's ``nodes/<node>.json``): the algorithm and size.

A CSV or JSON record that exists but cannot be read is a ConfigError naming it (one line on the
command line); a record that is missing is simply not drawn.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from crossover_sgd.errors import ConfigError

__all__ = ["RunMetrics", "load_run", "distinct_names", "read_csv", "read_record"]


@dataclass
class RunMetrics:
    """The metrics of one run directory: per rank, a column name -> values per evaluation."""

    path: Path
    algorithm: str
    world_size: int
    ranks: List[Dict[str, List[float]]] = field(default_factory=list)
    name: str = ""  # how the run is called in legends (default: its directory name)
    #: Per node (``nodes/<node>.csv``, in node order): a column name -> values per evaluation.
    nodes: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)
    #: The parameter-server family: shard 0's rows (``ps/shard0.csv``), its summary at the end
    #: (``ps/shard0.json``) and per worker (``ps/worker_rank{r}.csv``, in rank order) its pushes.
    server: Dict[str, List[float]] = field(default_factory=dict)
    server_final: Dict[str, float] = field(default_factory=dict)
    workers: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)
    #: Downpour: per shard (``shard0``, ``shard1``... in order) the staleness histogram of the
    #: updates it applied (``ps/shard{s}.json``: staleness -> updates), its updates applied, and
    #: its rows (``ps/shard{s}.csv``: one per applied update, with the ``replica`` that pushed it).
    staleness: Dict[str, Dict[int, int]] = field(default_factory=dict)
    shard_updates: Dict[str, int] = field(default_factory=dict)
    shard_rows: Dict[str, Dict[str, List[float]]] = field(default_factory=dict)
    #: Sandblaster: the coordinator's row per L-BFGS iteration (``ps/coordinator.csv``: loss, step
    #: length ``t``, portions, backups, ...) and its summary (``ps/coordinator.json``, see
    #: :func:`_coordinator_final`).
    coordinator: Dict[str, List[float]] = field(default_factory=dict)
    coordinator_final: Dict[str, Any] = field(default_factory=dict)
    #: Replicas lost during the run (ranks): from the shards' and the coordinator's summaries.
    lost_replicas: List[int] = field(default_factory=list)

    @property
    def label(self) -> str:
        count, noun = (len(self.workers), "worker") if self.workers else (self.world_size, "rank")
        ranks = f"{count} {noun}{'s' if count != 1 else ''}"
        return f"{self.name or self.path.name} ({self.algorithm}, {ranks})"

    def epochs(self) -> List[float]:
        return self.ranks[0]["epoch"][: self.length()]

    def length(self) -> int:
        """Evaluations every rank has written (a run still in progress may differ by one)."""
        return min(len(r["epoch"]) for r in self.ranks)

    def has(self, column: str) -> bool:
        return all(column in r for r in self.ranks)

    def band(self, column: str) -> Tuple[List[float], List[float], List[float]]:
        """Per evaluation: (mean, min, max) of ``column`` over ranks."""
        n = self.length()
        per_eval = [[r[column][i] for r in self.ranks] for i in range(n)]
        return ([sum(v) / len(v) for v in per_eval], [min(v) for v in per_eval], [max(v) for v in per_eval])

    # ----------------------------------------------------------------------------- DistBelief
    def staleness_total(self) -> Dict[int, int]:
        """Downpour: the staleness histogram summed over the shards (staleness -> updates)."""
        total: Dict[int, int] = {}
        for histogram in self.staleness.values():
            for staleness, count in histogram.items():
                total[staleness] = total.get(staleness, 0) + count
        return dict(sorted(total.items()))

    def updates_by_replica(self) -> Dict[int, int]:
        """Downpour: the updates the shards applied per replica (rank), summed over the shards'
        rows (each push of a replica is one update on every shard)."""
        counts: Dict[int, int] = {}
        for rows in self.shard_rows.values():
            for replica in rows.get("replica", []):
                if math.isfinite(replica):
                    counts[int(replica)] = counts.get(int(replica), 0) + 1
        return dict(sorted(counts.items()))

    def staleness_by_replica(self) -> Dict[int, float]:
        """Downpour: the mean staleness of each replica's updates (over the shards' rows)."""
        sums: Dict[int, List[float]] = {}
        for rows in self.shard_rows.values():
            for replica, staleness in zip(rows.get("replica", []), rows.get("staleness", [])):
                if math.isfinite(replica) and math.isfinite(staleness):
                    sums.setdefault(int(replica), []).append(staleness)
        return {r: sum(v) / len(v) for r, v in sorted(sums.items())}

    @property
    def downpour(self) -> bool:
        """Whether the run has a Downpour shard's staleness records."""
        return bool(self.staleness)

    @property
    def sandblaster(self) -> bool:
        """Whether the run has a Sandblaster coordinator's records."""
        return bool(self.coordinator.get("iteration")) or bool(self.coordinator_final.get("portions_by_replica"))


def read_csv(path: Path, required: str = "") -> Dict[str, List[float]]:
    """A metrics CSV as columns (a value that is not a number: NaN); a ConfigError naming the
    file if it cannot be read as a CSV, or lacks the column ``required`` (an empty file: no rows)."""
    columns: Dict[str, List[float]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if required and reader.fieldnames is not None and required not in reader.fieldnames:
                raise ConfigError(f"{path} is not a metrics CSV: it has no {required!r} column")
            for row in reader:
                for key, value in row.items():
                    if key is None:  # more cells than the header names
                        continue
                    try:
                        columns.setdefault(key, []).append(float(value))
                    except (TypeError, ValueError):
                        columns.setdefault(key, []).append(float("nan"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise ConfigError(f"{path} cannot be read as a CSV: {reason}") from None
    return columns


def read_record(path: Path) -> Optional[Dict[str, Any]]:
    """A JSON record (an object) of a run: None if the file is missing, a ConfigError naming it if
    it cannot be read or is not a JSON object."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise ConfigError(f"{path} cannot be read as a JSON record: {reason}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path} cannot be read as a JSON record: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON record: it holds a {type(data).__name__}, not an object")
    return data


def _natural_key(path: Path) -> Tuple[Any, ...]:
    """Natural order of file names (node2 before node10)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.stem))


def _files(folder: Path, pattern: str, stem: str = "") -> List[Path]:
    """The files of ``folder`` matching ``pattern`` (and the stem regex ``stem``), in natural order."""
    found = [f for f in folder.glob(pattern) if f.is_file() and (not stem or re.fullmatch(stem, f.stem))]
    return sorted(found, key=_natural_key)


def load_run(path: Path) -> RunMetrics:
    """Read a run directory's metrics; a ConfigError if it is missing or holds none, or if a
    record it holds cannot be read (naming the file)."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path} is not a directory (expected a run's --out directory)")
    files = sorted(path.glob("metrics_rank*.csv"), key=lambda p: int(p.stem[len("metrics_rank"):] or 0))
    ranks = [read_csv(f) for f in files if f.is_file()]
    ranks = [r for r in ranks if r.get("epoch")]
    nodes = {f.stem: read_csv(f, required="epoch") for f in _files(path / "nodes", "*.csv")}
    ps = path / "ps"
    coordinator_csv = ps / "coordinator.csv"
    coordinator = read_csv(coordinator_csv, required="iteration") if coordinator_csv.is_file() else {}
    coordinator_json = read_record(ps / "coordinator.json")
    shard_json = {f.stem: read_record(f) or {} for f in _files(ps, "shard*.json", r"shard\d+")}
    shard0 = ps / "shard0.csv"
    server = read_csv(shard0, required="round") if shard0.is_file() else {}
    sandblaster = coordinator_json is not None or coordinator_csv.is_file()
    # a Sandblaster replica has no pushes: its rows (if any) are not the workers figure's
    worker_files = [] if sandblaster else _files(ps, "worker_rank*.csv")
    workers = {f.stem: read_csv(f, required="push") for f in worker_files}
    if not ranks and not any(n.get("epoch") for n in nodes.values()) and not server.get("round") \
            and not any(w.get("push") for w in workers.values()) and not coordinator.get("iteration"):
        raise ConfigError(f"{path} holds no metrics (no metrics_rank*.csv or nodes/*.csv with an evaluation, "
                          "no ps/*.csv with a row): not a run directory, or the run has not finished its first "
                          "epoch")
    algorithm, world = "?", len(ranks) or len(nodes)
    # a directory of nodes alone (copied from the nodes' machines): a node's summary has the config
    summaries = [Path("nodes") / f"{node}.json" for node in nodes]
    for name in ("config.json", "summary.json", *summaries):
        try:
            data = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        config = data.get("config", data)
        if not isinstance(config, dict):
            continue
        algorithm = str(config.get("algorithm", algorithm))
        world = int(data.get("world_size") or config.get("nproc") or world)
        break
    run = RunMetrics(path, algorithm, world, ranks, nodes=nodes, server=server,
                     server_final=_server_final(shard_json.get("shard0")), workers=workers, coordinator=coordinator)
    lost: List[int] = []
    for stem, data in shard_json.items():
        where = ps / f"{stem}.json"
        lost += _ranks(where, data, "lost_replicas")
        if "staleness_histogram" not in data:
            continue  # not a Downpour shard
        run.staleness[stem] = _counts(where, data, "staleness_histogram")
        run.shard_updates[stem] = _count(where, data, "updates", sum(run.staleness[stem].values()))
        rows = ps / f"{stem}.csv"
        run.shard_rows[stem] = server if stem == "shard0" else (read_csv(rows, required="round")
                                                               if rows.is_file() else {})
    if coordinator_json is not None:
        run.coordinator_final = _coordinator_final(ps / "coordinator.json", coordinator_json)
        lost += run.coordinator_final["lost_replicas"]
    run.lost_replicas = sorted(set(lost))
    return run


def _server_final(data: Optional[Dict[str, Any]]) -> Dict[str, float]:
    """The numbers of shard 0's summary at the end (empty if it is missing)."""
    if data is None:
        return {}
    final = {}
    for key in ("wall_time_s", "global_iterations", "test_acc", "test_loss"):
        try:
            final[key] = float(data[key])
        except (KeyError, TypeError, ValueError):
            final[key] = math.nan
    return final


def _coordinator_final(path: Path, data: Dict[str, Any]) -> Dict[str, Any]:
    """Sandblaster's ``ps/coordinator.json``: ``portions_by_replica`` (rank -> the portions whose
    result it delivered first), ``results_by_replica`` (rank -> every result it delivered,
    duplicates included; empty in records written before it existed), ``slow_replicas`` (rank ->
    its --slow-factor), ``lost_replicas``, and the numbers ``backups``, ``duplicates``, ``batch``
    (samples), ``portions`` (per evaluation), ``iterations``, ``func_evals``, ``wall_time_s``
    (NaN where missing)."""
    final: Dict[str, Any] = {"portions_by_replica": _counts(path, data, "portions_by_replica"),
                             "results_by_replica": _counts(path, data, "results_by_replica"),
                             "slow_replicas": _factors(path, data, "slow_replicas"),
                             "lost_replicas": _ranks(path, data, "lost_replicas")}
    for key in ("backups", "duplicates", "batch", "portions", "iterations", "func_evals", "wall_time_s"):
        value = data.get(key)
        final[key] = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    return final


def _bad(path: Path, key: str, value: Any, expected: str) -> ConfigError:
    shown = json.dumps(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ConfigError(f"{path}: {key} is not {expected}: {shown}")


def _counts(path: Path, data: Dict[str, Any], key: str) -> Dict[int, int]:
    """``data[key]``, a map of non-negative integers (as JSON strings) to counts, as ints ({} if absent)."""
    value = data.get(key, {})
    try:
        if not isinstance(value, dict):
            raise ValueError
        counts = {int(k): v for k, v in value.items()}
        if any(k < 0 or not isinstance(v, int) or isinstance(v, bool) or v < 0 for k, v in counts.items()):
            raise ValueError
    except ValueError:
        raise _bad(path, key, value, "a map of non-negative integers to counts") from None
    return dict(sorted(counts.items()))


def _factors(path: Path, data: Dict[str, Any], key: str) -> Dict[int, float]:
    """``data[key]``, a map of ranks (as JSON strings) to numbers ({} if absent)."""
    value = data.get(key, {})
    try:
        if not isinstance(value, dict):
            raise ValueError
        factors = {int(k): float(v) for k, v in value.items() if not isinstance(v, bool)}
        if len(factors) != len(value):
            raise ValueError
    except (TypeError, ValueError):
        raise _bad(path, key, value, "a map of ranks to numbers") from None
    return dict(sorted(factors.items()))


def _ranks(path: Path, data: Dict[str, Any], key: str) -> List[int]:
    """``data[key]``, a list of ranks ([] if absent)."""
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in value):
        raise _bad(path, key, value, "a list of ranks")
    return list(value)


def _count(path: Path, data: Dict[str, Any], key: str, default: int) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad(path, key, value, "a count")
    return value


def distinct_names(paths: Sequence[Path]) -> List[str]:
    """The shortest trailing parts of each path that tell the paths apart (``a/run``, ``b/run``)."""
    resolved = [Path(p).resolve() for p in paths]
    depth = 1
    while True:
        names = ["/".join(p.parts[-depth:]) for p in resolved]
        if len(set(names)) == len(names) or depth >= max(len(p.parts) for p in resolved) - 1:
            return names
        depth += 1
