"""What the scalability experiment runs: variants, cells, learning rates, runs.

A *cell* is one (variant, processes, per-rank batch); its global batch is their product. The
design has two sweeps of cells:

* the **processes sweep** over ``world_sizes``, either at a fixed per-rank batch (the global
  batch grows with the processes) or at a fixed **global** batch ``B`` (per-rank batch ``B / n``,
  the study's design);
* the **batch sweep**: global batches at ``batch_world`` processes (for ``batch_variants``, or all).

Every cell runs every seed at each learning rate of the **grid**: multipliers of the learning-rate
rule's value (``Settings.lr``), the cell's reported lr being the grid point with the best mean
final accuracy (:mod:`.select`). With ``lr_grid_world`` the grid runs only at that many processes;
a cell of another world size runs the multiplier chosen for its variant and global batch there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from crossover_sgd.experiments.runs import RunSettings

__all__ = ["Variant", "VARIANT_NAMES", "make_variants", "select_variants", "Cell", "RunSpec", "Settings", "Design",
           "plan_runs"]

#: The names ``--variants`` accepts (``hierarchical``: one variant per ``--gpu-per-node`` value).
VARIANT_NAMES = ("allreduce", "sgp", "crossover", "hierarchical", "crossover-no-fair", "crossover-no-seg")


@dataclass(frozen=True)
class Variant:
    """An algorithm setting: a name, what it is, and its ``train`` flags."""

    name: str
    description: str
    flags: Tuple[str, ...]
    ranks_per_node: Optional[int] = None

    def skip_reason(self, world_size: int) -> Optional[str]:
        g = self.ranks_per_node
        if g is not None and (world_size % g or world_size // g < 2):
            return f"needs 2 or more nodes of {g} ranks"
        return None


def make_variants(gpu_per_node: Sequence[int] = (2,)) -> Dict[str, Variant]:
    """Every variant, with one hierarchical variant per ranks-per-node value."""
    variants = [Variant("allreduce", "AllReduce-SGD (gradients averaged every step)", ("--algorithm", "allreduce")),
                Variant("sgp", "SGP, 1 peer per round", ("--algorithm", "sgp")),
                Variant("crossover", "Crossover-SGD, fine segments", ("--algorithm", "crossover"))]
    variants += [Variant(f"hierarchical-g{g}", f"hierarchical Crossover-SGD, {g} ranks per node",
                         ("--algorithm", "hierarchical-crossover", "--gpu-per-node", str(g)), ranks_per_node=g)
                 for g in gpu_per_node]
    variants += [Variant("crossover-no-fair", "Crossover-SGD without fairness (ablation)",
                         ("--algorithm", "crossover", "--fair", "False")),
                 Variant("crossover-no-seg", "Crossover-SGD without segmentation (ablation)",
                         ("--algorithm", "crossover", "--segmented", "False"))]
    return {v.name: v for v in variants}


def select_variants(names: Sequence[str], gpu_per_node: Sequence[int]) -> List[Variant]:
    """The variants ``names`` asks for, in its order (``hierarchical``: one per ``gpu_per_node``)."""
    table = make_variants(gpu_per_node)
    return [v for name in names
            for v in ([table[f"hierarchical-g{g}"] for g in gpu_per_node] if name == "hierarchical" else [table[name]])]


@dataclass(frozen=True)
class Cell:
    """A (variant, processes, per-rank batch) of the tables."""

    variant: Variant
    world_size: int
    batch_size: int

    @property
    def global_batch(self) -> int:
        return self.world_size * self.batch_size

    @property
    def key(self) -> str:
        return self.key_of(self.variant.name, self.world_size, self.batch_size)

    @staticmethod
    def key_of(variant: str, world_size: int, batch_size: int) -> str:
        return f"{variant}/n{world_size}-b{batch_size}"


def lr_text(lr: float) -> str:
    """A learning rate as the command line and the run keys write it."""
    return f"{lr:.6g}"


@dataclass(frozen=True)
class RunSpec:
    """One training run: a cell, a seed and a learning rate (``lr_scale`` times the rule's)."""

    variant: Variant
    world_size: int
    batch_size: int
    seed: int
    lr: float
    lr_scale: float = 1.0

    @property
    def cell(self) -> Cell:
        return Cell(self.variant, self.world_size, self.batch_size)

    @property
    def global_batch(self) -> int:
        return self.world_size * self.batch_size

    @property
    def key(self) -> str:
        """The run's directory under ``OUT/runs``: unique per variant, processes, batch, lr and seed."""
        return f"{self.variant.name}/n{self.world_size}-b{self.batch_size}-lr{lr_text(self.lr)}-s{self.seed}"


@dataclass
class Settings(RunSettings):
    """What every run of the experiment shares, with the learning-rate rule of the global batch."""

    lr_rule: str = "linear"
    base_lr: float = 0.1
    base_batch: int = 128

    def lr(self, global_batch: int, scale: float = 1.0) -> float:
        """The learning rate of a run with ``global_batch`` samples per step, times ``scale``."""
        ratio = global_batch / self.base_batch
        rule = {"linear": ratio, "sqrt": math.sqrt(ratio), "constant": 1.0}[self.lr_rule]
        return float(lr_text(self.base_lr * rule * scale))

    def rule_text(self) -> str:
        return {"linear": f"{self.base_lr:g} x global batch / {self.base_batch}",
                "sqrt": f"{self.base_lr:g} x sqrt(global batch / {self.base_batch})",
                "constant": f"{self.base_lr:g}"}[self.lr_rule]

    def train_flags(self, spec: RunSpec) -> List[str]:
        """``crossover-sgd train`` flags of ``spec`` (without ``--out``/``--resume``)."""
        model = ["--model", self.model] if self.model else []
        return ["--nproc", str(spec.world_size), *spec.variant.flags, "--dataset", self.dataset, *model,
                "--epochs", str(self.epochs), "--batch-size", str(spec.batch_size), "--lr", lr_text(spec.lr),
                "--lr-schedule", self.lr_schedule, "--warmup-epochs", f"{self.warmup_epochs:g}",
                "--seed", str(spec.seed), "--checkpoint-every", str(self.epochs), "--tag", spec.variant.name,
                *self.train_args]


@dataclass(frozen=True)
class Design:
    """The sweeps and the learning-rate grid (validated by the command line)."""

    world_sizes: Tuple[int, ...]
    batch_size: Optional[int] = None  # the processes sweep's fixed per-rank batch, or
    global_batch: Optional[int] = None  # its fixed global batch (per-rank batch = global / n)
    batch_world: Optional[int] = None  # the batch sweep's processes
    batch_sweep: Tuple[int, ...] = ()  # the batch sweep's global batches
    batch_variants: Optional[Tuple[str, ...]] = None  # the batch sweep's variants (None: all)
    lr_grid: Tuple[float, ...] = (1.0,)  # multipliers of the rule's learning rate
    lr_grid_world: Optional[int] = None  # None: the grid in every cell

    def per_rank(self, world_size: int) -> int:
        """The processes sweep's per-rank batch at ``world_size`` processes."""
        if self.global_batch is not None:
            return self.global_batch // world_size
        assert self.batch_size is not None
        return self.batch_size

    def process_cells(self, variants: Sequence[Variant]) -> List[Cell]:
        return [Cell(v, n, self.per_rank(n)) for n in sorted(self.world_sizes) for v in variants]

    def batch_cells(self, variants: Sequence[Variant]) -> List[Cell]:
        if self.batch_world is None:
            return []
        swept = [v for v in variants if self.batch_variants is None or v.name in self.batch_variants]
        return [Cell(v, self.batch_world, b // self.batch_world) for b in sorted(self.batch_sweep) for v in swept]

    def cells(self, variants: Sequence[Variant]) -> List[Cell]:
        """Every cell once (the two sweeps may share some), processes sweep first."""
        unique: Dict[str, Cell] = {}
        for cell in self.process_cells(variants) + self.batch_cells(variants):
            unique.setdefault(cell.key, cell)
        return list(unique.values())

    def grid_cell(self, cell: Cell, variants: Sequence[Variant]) -> Optional[Cell]:
        """The cell whose lr choice ``cell`` reuses: the cell of its variant and global batch at
        ``lr_grid_world`` processes, if the design has it and it can run; else None (``cell`` runs
        the grid itself)."""
        n = self.lr_grid_world
        if n is None or cell.world_size == n or len(self.lr_grid) == 1 or cell.global_batch % n:
            return None
        source = Cell(cell.variant, n, cell.global_batch // n)
        runnable = source.variant.skip_reason(n) is None
        return source if runnable and source.key in {c.key for c in self.cells(variants)} else None


def plan_runs(design: Design, variants: Sequence[Variant], seeds: Sequence[int], settings: Settings,
              chosen: Optional[Mapping[str, float]] = None) -> Tuple[List[RunSpec], List[Tuple[Cell, str]]]:
    """The runs that can be planned now, smallest world size first, and the cells skipped (with the
    reason). A cell running the grid: every multiplier; a cell reusing another's choice: the
    multiplier in ``chosen`` (by that cell's key); without ``chosen`` (the grid has not run yet),
    nothing."""
    specs: List[RunSpec] = []
    skipped: List[Tuple[Cell, str]] = []
    for cell in design.cells(variants):
        reason = cell.variant.skip_reason(cell.world_size)
        if reason is not None:
            skipped.append((cell, reason))
            continue
        source = design.grid_cell(cell, variants)
        if source is None:
            scales: Tuple[float, ...] = design.lr_grid
        elif chosen is not None and source.key in chosen:
            scales = (chosen[source.key],)
        else:  # before the grid ran (chosen None), or every run of its grid failed
            if chosen is not None:
                skipped.append((cell, f"no lr was chosen at {source.key}: no run of its grid finished"))
            continue
        specs += [RunSpec(cell.variant, cell.world_size, cell.batch_size, s, settings.lr(cell.global_batch, m), m)
                  for m in scales for s in seeds]
    specs.sort(key=lambda s: s.world_size)  # stable: within a world size, the order above
    return specs, skipped
