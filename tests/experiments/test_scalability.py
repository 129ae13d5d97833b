"""``crossover-sgd experiment scalability``: the plan (fixed global batch, batch sweep, lr grid, the
study preset), the lr choice and the study's orderings as pure units; one small real experiment."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from support import run

from crossover_sgd.errors import ConfigError
from crossover_sgd.experiments import build_parser
from crossover_sgd.experiments.scalability import (PRESETS, Design, Settings, check, make_variants, plan_runs,
                                                   select_variants)
from crossover_sgd.experiments.scalability.claims import evaluate, study_claims
from crossover_sgd.experiments.scalability.results import choose, chosen_rows

DIGITS = ("--dataset", "digits", "--model", "small_cnn")


def experiment(*args: str, timeout: float = 240):
    return run([sys.executable, "-m", "crossover_sgd.experiments", *args], timeout=timeout)


def checked(*argv: str):
    """The parsed and checked flags of ``experiment scalability ARGV``: (args, design, settings)."""
    args = build_parser().parse_args(["scalability", *argv])
    design, settings = check(args)
    return args, design, settings


def planned(*argv: str, chosen=None):
    args, design, settings = checked(*argv)
    variants = select_variants(args.variants, args.gpu_per_node)
    specs, skipped = plan_runs(design, variants, args.seeds, settings, chosen)
    return args, design, settings, variants, specs, skipped


# ------------------------------------------------------------------------------------------ planning
def test_a_fixed_global_batch_divides_over_the_processes():
    *_, specs, skipped = planned("--global-batch", "96", "--world-sizes", "2", "4", "8", "--variants", "allreduce",
                                 "crossover", "--seeds", "0", "1")
    assert not skipped and len(specs) == 3 * 2 * 2
    assert {(s.world_size, s.batch_size) for s in specs} == {(2, 48), (4, 24), (8, 12)}
    assert {s.global_batch for s in specs} == {96}
    assert {s.lr for s in specs} == {Settings().lr(96)}  # the rule sees one global batch: one lr


def test_a_fixed_per_rank_batch_grows_the_global_batch_and_sweeps_it_per_rank():
    *_, specs, _ = planned("--batch-size", "16", "--world-sizes", "4", "8", "--variants", "sgp", "--seeds", "0",
                           "--batch-sizes", "16", "32", "--batch-world", "8")
    # (4, 16), (8, 16) from the processes sweep; (8, 32) from the batch sweep ((8, 16) is shared)
    assert [(s.world_size, s.batch_size) for s in specs] == [(4, 16), (8, 16), (8, 32)]
    again = planned("--world-sizes", "4", "8", "--variants", "sgp", "--seeds", "0", "--global-batches", "128", "256",
                    "--batch-world", "8")[-2]
    assert [s.key for s in again] == [s.key for s in specs]  # the same sweep in global batches


def test_the_lr_grid_multiplies_the_rule_and_every_key_is_unique():
    settings = Settings(lr_rule="linear", base_lr=0.1, base_batch=128)
    assert settings.lr(256) == pytest.approx(0.2) and settings.lr(256, 0.5) == pytest.approx(0.1)
    assert Settings(lr_rule="sqrt", base_lr=0.1, base_batch=128).lr(512) == pytest.approx(0.2)
    assert Settings(lr_rule="constant").lr(4096, 3) == pytest.approx(0.3)
    *_, specs, _ = planned("--global-batch", "64", "--world-sizes", "2", "4", "--variants", "allreduce", "sgp",
                           "--seeds", "0", "1", "--lr-grid", "0.5", "1", "2", "--base-batch", "64")
    assert len(specs) == 2 * 2 * 3 * 2
    assert sorted({s.lr for s in specs}) == [0.05, 0.1, 0.2] and len({s.key for s in specs}) == len(specs)
    assert all(f"-lr{s.lr:g}-" in s.key for s in specs)


def test_the_study_preset_plans_the_studys_design():
    args, design, settings, variants, grid, skipped = planned("--study", *DIGITS)
    preset = PRESETS["study"]
    assert design.world_sizes == (4, 8, 16, 32) and design.global_batch == preset["global_batch"]
    assert design.batch_world == 8 and design.batch_sweep == tuple(preset["global_batches"])
    assert [v.name for v in variants] == ["allreduce", "sgp", "crossover", "hierarchical-g2", "hierarchical-g4",
                                          "crossover-no-fair", "crossover-no-seg"]
    assert args.seeds == [0, 1, 2] and design.lr_grid_world == 8 and len(design.lr_grid) == 3
    assert [(c.key, reason) for c, reason in skipped] == [(f"hierarchical-g4/n4-b{design.global_batch // 4}",
                                                           "needs 2 or more nodes of 4 ranks")]
    # phase 1: the grid at 8 processes only: every variant at the fixed global batch, the study's
    # three (AllReduce, SGP, Crossover) at the batch sweep's other global batches
    assert {s.world_size for s in grid} == {8} and design.batch_variants == ("allreduce", "sgp", "crossover")
    others = len(design.batch_sweep) - 1
    assert len(grid) == (7 + 3 * others) * 3 * 3 == 117
    assert {s.variant.name for s in grid if s.global_batch != design.global_batch} == set(design.batch_variants)
    # phase 2: the other world sizes at the multiplier chosen at 8 for the same variant and global batch
    picks = {f"{v.name}/n8-b{design.global_batch // 8}": 2.0 for v in variants}
    followers = [s for s in plan_runs(design, variants, args.seeds, settings, picks)[0] if s.world_size != 8]
    assert len(followers) == (6 + 7 + 7) * 3
    assert {s.lr_scale for s in followers} == {2.0}
    assert {s.global_batch for s in followers} == {design.global_batch}
    assert {s.lr for s in followers} == {settings.lr(design.global_batch, 2.0)}
    keys = [s.key for s in grid + followers]
    assert len(keys) == len(set(keys))
    assert (preset["dataset"], preset["model"]) == ("mnist1d", "cnn1d")  # replaced by DIGITS above


def test_flags_override_a_preset_and_exclusive_flags_are_refused():
    args, design, _ = checked("--study", *DIGITS, "--batch-size", "8", "--world-sizes", "2", "4", "--lr-grid", "1")
    assert design.global_batch is None and design.batch_size == 8 and design.world_sizes == (2, 4)
    assert design.batch_sweep == tuple(PRESETS["study"]["global_batches"])  # the rest of the preset stays
    assert checked("--study", *DIGITS, "--lr-grid-world", "all")[1].lr_grid_world is None  # the grid everywhere
    with pytest.raises(ConfigError, match="give --batch-size or --global-batch, not both"):
        checked("--batch-size", "8", "--global-batch", "64")
    with pytest.raises(ConfigError, match="--global-batch 100 is not divisible by 8 .*use a multiple of 16"):
        checked("--global-batch", "100", "--world-sizes", "4", "8", "16")
    with pytest.raises(ConfigError, match=r"--global-batch 512 \(set by --study\) is not divisible by 3"):
        checked("--study", *DIGITS, "--world-sizes", "3", "6")
    # the preset's batch-sweep variants, of those the user chose
    assert checked("--study", *DIGITS, "--variants", "sgp", "hierarchical")[1].batch_variants == ("sgp",)
    with pytest.raises(ConfigError, match="--lr-grid-world 4 needs --global-batch"):
        checked("--lr-grid", "1", "2", "--lr-grid-world", "4", "--world-sizes", "4", "8")


def test_train_args_may_add_flags_but_not_replace_the_experiments():
    """--train-args come after the experiment's own flags (the last one wins): any flag a run gets
    from the experiment (batch, lr, processes, seed, the variant's own flags, --out) is refused,
    whatever its spelling; the others are passed on."""
    _, _, settings = checked("--study", "--train-args", "--mnist1d-samples 2000 --momentum=0.8")
    assert settings.train_args == ["--mnist1d-samples", "2000", "--momentum=0.8"]
    for text, named in (("--batch-size 32", "--batch-size"), ("--lr=0.3", "--lr"), ("--gpu_per_node 4", "--gpu-per-node"),
                        ("--seed 3 --epochs 2", "--epochs --seed"), ("--resume", "--resume"),
                        ("--segmented False", "--segmented")):
        with pytest.raises(ConfigError, match=f"--train-args '{text}': {named} is set by the experiment itself"):
            checked("--variants", "allreduce", "hierarchical", "crossover-no-seg", f"--train-args={text}")


# ------------------------------------------------------------------------------------------ lr choice
def _row(variant, n, b, lr, scale, accs, lr_from=None):
    mean = sum(accs.values()) / len(accs)
    return {"variant": variant, "world_size": n, "batch_size": b, "global_batch": n * b, "cell": f"{variant}/n{n}-b{b}",
            "lr": lr, "lr_scale": scale, "lr_from": lr_from, "seeds": len(accs), "consensus_acc_mean": mean,
            "seed_accs": accs}


def test_the_lr_choice_is_the_best_mean_over_complete_seeds():
    rows = [_row("sgp", 8, 4, 0.05, 0.5, {"0": 0.90, "1": 0.92}),
            _row("sgp", 8, 4, 0.1, 1.0, {"0": 0.91, "1": 0.91}),  # ties with 0.5: nearer the rule wins
            _row("sgp", 8, 4, 0.2, 2.0, {"0": 0.99}),  # better, but a seed failed
            _row("allreduce", 8, 4, 0.05, 0.5, {"0": 0.5, "1": 0.6}),
            _row("allreduce", 8, 4, 0.2, 2.0, {"0": 0.7, "1": 0.6}),
            _row("allreduce", 4, 8, 0.2, 2.0, {"0": 0.1, "1": 0.1}, lr_from="allreduce/n8-b4")]
    assert choose(rows) == {"sgp/n8-b4": 1.0, "allreduce/n8-b4": 2.0}
    assert [r["chosen"] for r in rows] == [False, True, False, False, True, True]
    assert rows[0]["lr_grid"] == [0.5, 1.0, 2.0]
    assert set(chosen_rows(rows)) == {("sgp", 8, 32), ("allreduce", 8, 32), ("allreduce", 4, 32)}


# ------------------------------------------------------------------------------------------ the study's orderings
def test_the_claims_of_the_study_design_and_their_verdicts():
    variants = select_variants(["allreduce", "sgp", "crossover", "hierarchical"], [2, 4])
    design = Design(world_sizes=(4, 8, 16, 32), global_batch=256, batch_world=8, batch_sweep=(256, 2048))
    claims = {c.name: c for c in study_claims(design, variants)}
    assert set(claims) == {
        "AllReduce > Crossover at 32 processes", "AllReduce > SGP at 32 processes", "Crossover > SGP at 32 processes",
        "hierarchical (2/node) > Crossover at 32 processes", "hierarchical (4/node) > Crossover at 32 processes",
        "SGP drops more than AllReduce from 4 to 32 processes",
        "Crossover drops more than AllReduce from 4 to 32 processes",
        "SGP drops more than Crossover from 4 to 32 processes",
        "Crossover drops more than hierarchical (2/node) from 4 to 32 processes",
        "Crossover drops more than hierarchical (4/node) from 8 to 32 processes",  # no 2 nodes of 4 at 4
        "AllReduce drops more than Crossover from a global batch of 256 to 2048 at 8 processes",
        "AllReduce drops more than SGP from a global batch of 256 to 2048 at 8 processes",
        "Crossover > AllReduce at a global batch of 2048, 8 processes",
        "SGP > AllReduce at a global batch of 2048, 8 processes"}
    # constructed accuracies: AllReduce holds 0.90 everywhere; SGP loses 5 points from 4 to 32 (seed
    # noise 0.1 point); Crossover equals AllReduce at 4 and is 1 to 3 points below at 32, by seed
    acc = {("allreduce", 4, 256): {"0": 0.90, "1": 0.90, "2": 0.90},
           ("allreduce", 32, 256): {"0": 0.90, "1": 0.90, "2": 0.90},
           ("sgp", 4, 256): {"0": 0.90, "1": 0.901, "2": 0.899},
           ("sgp", 32, 256): {"0": 0.85, "1": 0.851, "2": 0.849},
           ("crossover", 4, 256): {"0": 0.90, "1": 0.90, "2": 0.90},
           ("crossover", 32, 256): {"0": 0.89, "1": 0.87, "2": 0.88}}
    chosen = {key: {"seed_accs": a, "lr": 0.1} for key, a in acc.items()}
    names = ["SGP drops more than AllReduce from 4 to 32 processes", "AllReduce > SGP at 32 processes",
             "Crossover > SGP at 32 processes", "AllReduce > Crossover at 32 processes",
             "Crossover drops more than AllReduce from 4 to 32 processes",
             "hierarchical (2/node) > Crossover at 32 processes"]
    results = {r["claim"]: r for r in evaluate([claims[n] for n in names], chosen)}
    assert results[names[0]]["diffs"] == pytest.approx([0.05, 0.05, 0.05])
    assert results[names[0]]["verdict"] == "reproduces" and results[names[1]]["verdict"] == "reproduces"
    assert results[names[2]]["verdict"] == "reproduces"  # 3-4 points ahead, 1-point noise
    # 1, 3 and 2 points: the t interval (2 ± 2.48) holds 0; the bootstrap's, the range [1, 3], does not
    assert results[names[3]]["diffs"] == pytest.approx([0.01, 0.03, 0.02])
    assert results[names[3]]["verdict"] == results[names[4]]["verdict"] == "cannot be told"
    assert evaluate([claims[names[3]]], chosen, rule="bootstrap")[0]["verdict"] == "reproduces"
    assert results[names[5]]["verdict"] == "no data" and results[names[5]]["pairs"] == 0
    # the other way round, the same comparison reverses
    flipped = {key: {"seed_accs": {s: 1 - v for s, v in a.items()}} for key, a in acc.items()}
    assert evaluate([claims[names[1]]], flipped)[0]["verdict"] == "reverses"


def test_no_process_claims_at_a_fixed_per_rank_batch():
    variants = list(make_variants().values())
    design = Design(world_sizes=(4, 8), batch_size=16)
    assert study_claims(design, variants) == []


# ------------------------------------------------------------------------------------------ one real experiment
@pytest.mark.slow
def test_fixed_global_batch_experiment_tables_and_resume(tmp_path):
    """2 variants, 1 seed; an lr grid of 2 at 2 processes, reused at 4: 6 runs of 1 epoch (the statistics over
    seeds are tested on constructed inputs above and in test_stats.py; what this run tests is the design's
    bookkeeping on real runs: the global batch, the grid, its reuse, the tables, the re-run)."""
    out = tmp_path / "scal"
    argv = ("scalability", "--global-batch", "32", "--world-sizes", "2", "4", "--variants", "allreduce", "crossover",
            "--seeds", "0", "--epochs", "1", "--warmup-epochs", "0", "--lr-grid", "1", "2", "--lr-grid-world", "2",
            *DIGITS, "--out", str(out))
    result = experiment(*argv, timeout=450)  # about 35 s on 2 idle cores
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "scalability.json").read_text())
    assert len(data["runs"]) == 6 and not data["failed"]
    summaries = [json.loads((out / "runs" / r["run_dir"].split("/runs/")[1] / "summary.json").read_text())
                 for r in data["runs"]]
    # the global batch, as the runs themselves state it, is the same at every world size
    assert {(s["world_size"], s["config"]["batch_size"], s["global_batch"]) for s in summaries} == {(2, 16, 32),
                                                                                                     (4, 8, 32)}
    grid = [r for r in data["rows"] if r["world_size"] == 2]
    assert len(grid) == 4 and all(r["lr_grid"] == [1.0, 2.0] for r in grid)
    for variant in ("allreduce", "crossover"):
        pick = [r for r in grid if r["variant"] == variant and r["chosen"]]
        follower = [r for r in data["rows"] if r["variant"] == variant and r["world_size"] == 4]
        assert len(pick) == 1 and len(follower) == 1 and follower[0]["chosen"]
        assert follower[0]["lr"] == pick[0]["lr"] and follower[0]["lr_from"] == f"{variant}/n2-b16"
        assert follower[0]["seeds"] == 1 and 0.3 < follower[0]["consensus_acc_mean"] <= 1
    claims = {c["claim"]: c for c in data["comparisons"]}
    assert set(claims) == {"AllReduce > Crossover at 4 processes",
                           "Crossover drops more than AllReduce from 2 to 4 processes"}
    assert all(c["pairs"] == 1 and c["verdict"] == "cannot be told"  # one pair: no interval
               for c in claims.values())
    text = (out / "scalability.md").read_text()
    for words in ("## Accuracy vs processes at a fixed global batch of 32", "| variant | 2 (16/rank) | 4 (8/rank) |",
                  "| allreduce |", "## The study's orderings",
                  "AllReduce > Crossover at 4 processes", "## Learning rate: the grid and the choice",
                  "chosen at allreduce/n2-b16"):
        assert words in text, words
    rows = list(csv.DictReader(open(out / "comparisons.csv")))
    assert len(rows) == 2 and {r["verdict"] for r in rows} <= {"reproduces", "reverses", "cannot be told"}
    for png in ("scalability_acc_vs_procs.png", "scalability_consensus_distance.png"):
        assert (out / png).stat().st_size > 1000

    again = experiment(*argv, "--no-plots")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count(": reused in") == 6  # finished runs are not trained again
    changed = experiment(*argv[:-2], "--epochs", "2", "--out", str(out))
    assert changed.returncode == 2 and "holds a run made with other settings" in changed.stderr
