"""``imagenet_test.py``: the original job scripts' flags, mapped onto :class:`TrainConfig`."""

from __future__ import annotations

import json
import sys
from typing import List

import pytest

from crossover_sgd.config import TrainConfig
from crossover_sgd.errors import ConfigError
from crossover_sgd.legacy import (STUDY_CLIP_NORM, STUDY_LABEL_SMOOTHING, STUDY_WEIGHT_DECAY,
                                  build_legacy_parser, legacy_config)
from support import ROOT, read_metrics, run

LEGACY = str(ROOT / "imagenet_test.py")

#: The study's sbatch line, verbatim but for $SLURM_JOBID, plus where the data is.
STUDY_COMMAND = ("--batch_size 128 --world_size 32 --crossover True --tag 4242 --lars True --allreduce False "
                 "--amp True --lrdecay poly --lars_coef 0.0025 --baselr 11 --warmup_epoch 36 --local_itr 21 "
                 "--clip_grad True --sync_grad False --sync_lars_start_epoch 200 --sync_lars_group_size 8 "
                 "--chromosome fine --maxepoch 90 --manual_seed 776 --gpu_per_node 2").split()


def legacy(*argv: str) -> TrainConfig:
    return legacy_config(build_legacy_parser().parse_args(list(argv)))


@pytest.mark.parametrize("argv,algorithm", [
    ([], "sgp"),
    (["--allreduce", "False", "--crossover", "False"], "sgp"),
    (["--allreduce", "True"], "allreduce"),
    (["--allreduce", "True", "--crossover", "False"], "allreduce"),
    (["--crossover", "True"], "crossover"),
    (["--crossover", "True", "--allreduce", "False"], "crossover"),
])
def test_algorithm_from_the_original_booleans(argv, algorithm):
    assert legacy(*argv).algorithm == algorithm


def test_allreduce_and_crossover_together_contradict():
    with pytest.raises(ConfigError, match="--crossover True and --allreduce True"):
        legacy("--allreduce", "True", "--crossover", "True")


def test_groupnum_makes_crossover_hierarchical():
    config = legacy("--crossover", "True", "--groupnum", "4", "--world_size", "8")
    assert (config.algorithm, config.groupnum) == ("hierarchical-crossover", 4)
    for other in ([], ["--allreduce", "True"]):
        with pytest.raises(ConfigError, match="--groupnum 4 applies to Crossover-SGD only"):
            legacy(*other, "--groupnum", "4")


@pytest.mark.parametrize("argv,chromosome", [([], "fine"), (["--chromosome", "fine"], "fine"),
                                             (["--chromosome", "coarse"], "coarse")])
def test_chromosome(argv, chromosome):
    assert legacy("--crossover", "True", *argv).chromosome == chromosome


@pytest.mark.parametrize("text,value", [("True", True), ("true", True), ("TRUE", True), ("tRuE", True),
                                        ("False", False), ("false", False), ("FALSE", False), ("fAlSe", False)])
def test_string_booleans_in_any_case(text, value):
    config = legacy("--allreduce", text, "--clip_grad", text, "--sync_grad", text)
    assert config.algorithm == ("allreduce" if value else "sgp")
    assert config.clip_grad_norm == (STUDY_CLIP_NORM if value else 0.0)
    assert config.sync_grad is value


@pytest.mark.parametrize("text", ["maybe", "Ture", "", "2"])
def test_string_boolean_that_is_neither_is_refused(capsys, text):
    with pytest.raises(SystemExit) as exc:
        build_legacy_parser().parse_args(["--allreduce", text])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imagenet_test.py: error: argument --allreduce:") and repr(text) in err
    assert len(err.splitlines()) == 1


def test_clip_grad_is_the_study_norm():
    assert STUDY_CLIP_NORM == 1000.0
    assert legacy("--clip_grad", "True").clip_grad_norm == 1000.0
    assert legacy("--clip_grad", "False").clip_grad_norm == 0.0
    assert legacy().clip_grad_norm == 0.0


def test_each_original_flag_lands_in_its_field():
    config = legacy("--allreduce", "True", "--batch_size", "96", "--world_size", "8", "--tag", "job77",
                    "--lrdecay", "step", "--baselr", "3.5", "--warmup_epoch", "4", "--local_itr", "6",
                    "--maxepoch", "40", "--manual_seed", "776", "--gpu_per_node", "4", "--momentum", "0.8",
                    "--weight_decay", "1e-4", "--data", "/data/imagenet", "--sync_grad", "False",
                    "--nproc", "8", "--workers", "2", "--eval_every", "5", "--model", "resnet18")
    expected = dict(algorithm="allreduce", batch_size=96, world_size=8, tag="job77", lr_schedule="step", lr=3.5,
                    warmup_epochs=4.0, local_itr=6, epochs=40, seed=776, gpu_per_node=4, momentum=0.8,
                    weight_decay=1e-4, data_dir="/data/imagenet", sync_grad=False, nproc=8, workers=2,
                    eval_every=5, model="resnet18", dataset="imagenet", clip_grad_norm=0.0,
                    label_smoothing=STUDY_LABEL_SMOOTHING, lars=False, amp="off")
    assert {k: getattr(config, k) for k in expected} == expected
    config.validate()  # a complete, runnable configuration (no files are touched)


def test_defaults_are_the_study_settings():
    config = legacy("--allreduce", "True")
    assert (config.batch_size, config.epochs, config.lr_schedule, config.lr, config.warmup_epochs) == \
        (128, 90, "poly", 0.1, 5.0)
    assert config.weight_decay == STUDY_WEIGHT_DECAY == 5e-5
    assert config.label_smoothing == STUDY_LABEL_SMOOTHING == 0.1
    assert config.sync_grad is True and config.world_size is None and config.gpu_per_node is None
    assert config.dataset == "imagenet" and config.model == "resnet50"


@pytest.mark.parametrize("lrdecay", ["poly", "step", "cosine", "constant"])
def test_lrdecay_choices(lrdecay):
    assert legacy("--lrdecay", lrdecay).lr_schedule == lrdecay


def test_data_dir_aliases():
    assert legacy("--data", "/a").data_dir == "/a"
    assert legacy("--data_dir", "/b").data_dir == "/b"


def test_amp_true_asks_for_mixed_precision():
    assert legacy("--amp", "True").amp == "fp16"
    assert legacy("--amp", "False").amp == "off"
    assert legacy("--lars", "True").lars is True


def test_study_command_parses_into_the_study_recipe():
    config = legacy(*STUDY_COMMAND, "--data", "/data/imagenet")
    assert (config.algorithm, config.batch_size, config.world_size, config.tag, config.lars, config.amp) == \
        ("crossover", 128, 32, "4242", True, "fp16")
    assert (config.lr_schedule, config.lr, config.warmup_epochs, config.local_itr, config.clip_grad_norm) == \
        ("poly", 11.0, 36.0, 21, 1000.0)
    assert (config.sync_grad, config.epochs, config.seed, config.gpu_per_node) == (False, 90, 776, 2)
    assert (config.lars_coef, config.sync_lars_group_size, config.sync_lars_start_epoch) == (0.0025, 8, 200)
    assert (config.momentum, config.weight_decay, config.label_smoothing) == (0.96, 5e-5, 0.1)
    assert config.chromosome == "fine" and config.wd_schedule  # poly + LARS: weight decay follows the lr factor
    config.validate()  # everything the study asks for exists


def test_study_command_through_the_script_checks_the_world_size(tmp_path):
    out = tmp_path / "out"
    result = run([sys.executable, LEGACY, *STUDY_COMMAND, "--data", str(tmp_path), "--out", str(out)])
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    # one process started here, the script asks for 32 (on a cluster: srun -n 32 with 16 GPUs x 2 nodes)
    assert line.startswith("imagenet_test.py: error: --world_size 32 disagrees with the launcher")
    assert not out.exists()


def test_script_help_lists_the_original_flags():
    result = run([sys.executable, LEGACY, "--help"])
    assert result.returncode == 0, result.stderr
    for flag in ("--crossover", "--allreduce", "--lars", "--amp", "--lrdecay", "--lars_coef", "--baselr",
                 "--warmup_epoch", "--local_itr", "--clip_grad", "--sync_grad", "--sync_lars_start_epoch",
                 "--sync_lars_group_size", "--chromosome", "--groupnum", "--maxepoch", "--manual_seed",
                 "--gpu_per_node", "--world_size", "--tag", "--data"):
        assert flag in result.stdout


@pytest.mark.slow
def test_original_flags_train_two_ranks(tmp_path):
    out = tmp_path / "out"
    result = run([sys.executable, LEGACY, "--allreduce", "True", "--dataset", "digits", "--model", "small_cnn",
                  "--maxepoch", "2", "--warmup_epoch", "0", "--nproc", "2", "--out", str(out), "--workers", "0",
                  "--world_size", "2", "--clip_grad", "True", "--manual_seed", "7", "--tag", "legacy"],
                 timeout=180)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["world_size"] == 2 and summary["launcher"] == "local"
    config = summary["config"]
    assert (config["algorithm"], config["epochs"], config["seed"], config["clip_grad_norm"], config["tag"]) == \
        ("allreduce", 2, 7, 1000.0, "legacy")
    assert summary["global_batch"] == 128 * 2
    for rank in range(2):
        rows = read_metrics(out / f"metrics_rank{rank}.csv")
        assert [int(r["epoch"]) for r in rows] == [1, 2]
        assert all(0.0 <= float(r["val_acc"]) <= 1.0 for r in rows)
        assert float(rows[-1]["comm_bytes_sent"]) > 0
    assert all(acc is not None for acc in summary["final_val_acc"])


# ----------------------------------------------------------------------------- options without effect
def cli_config(*argv: str) -> TrainConfig:
    from crossover_sgd.cli import build_parser, config_from_args

    return config_from_args(build_parser().parse_args(["train", *argv])).validate()


def test_study_command_names_sync_grad_as_without_effect():
    """The study's crossover jobs pass --sync_grad False, which only AllReduce-SGD reads."""
    config = legacy(*STUDY_COMMAND, "--data", "/data/imagenet")
    assert config.ineffective_options() == ["--sync-grad False (only allreduce uses it; the algorithm is crossover)"]


@pytest.mark.parametrize("argv", [[], ["--allreduce", "True"], ["--crossover", "True", "--chromosome", "fine"],
                                  ["--allreduce", "True", "--sync_grad", "False", "--lars_coef", "0.0025"]])
def test_legacy_defaults_and_used_flags_are_not_reported(argv):
    assert legacy(*argv).ineffective_options() == []


@pytest.mark.parametrize("argv,expected", [
    ([], []),                                                              # the default job
    (["--algorithm", "crossover", "--chromosome", "coarse", "--fair", "False", "--gossip-dtype", "bf16"], []),
    (["--algorithm", "sgp", "--sgp-peers", "2", "--gossip-momentum", "True"], []),
    (["--lr-schedule", "poly", "--poly-power", "1.5", "--poly-hold-epochs", "0"], []),
    (["--lars", "True", "--lars-coef", "0.01", "--sync-lars-group-size", "1", "--sync-lars-start-epoch", "3"], []),
    (["--sync-grad", "False", "--algorithm", "sgp"], ["--sync-grad False"]),
    (["--chromosome", "coarse"], ["--chromosome coarse"]),                  # allreduce has no segments
    (["--algorithm", "crossover", "--segments", "3", "--chromosome", "coarse"], ["--chromosome coarse"]),
    (["--sgp-peers", "3", "--gossip-buffers", "True"], ["--sgp-peers 3", "--gossip-buffers True"]),
    (["--algorithm", "crossover", "--groupnum", "2"], ["--groupnum 2"]),
    (["--poly-power", "1.5", "--poly-end", "0.1", "--step-gamma", "0.5"], ["--poly-power 1.5", "--poly-end 0.1",
                                                                           "--step-gamma 0.5"]),
    (["--lr-schedule", "poly", "--step-milestones", "5", "10"], ["--step-milestones 5 10"]),
    (["--lars-coef", "0.01", "--lars-momentum-form", "pytorch"], ["--lars-coef 0.01", "--lars-momentum-form pytorch"]),
    (["--lars", "True", "--sync-lars-start-epoch", "3"], ["--sync-lars-start-epoch 3"]),
    (["--synthetic-samples", "100", "--image-size", "32", "--data-dir", "/data"],
     ["--data-dir /data", "--image-size 32", "--synthetic-samples 100"]),  # digits: fixed size, no files
    (["--poly-power", "2.2", "--chromosome", "fine", "--sync-grad", "True", "--algorithm", "sgp"], []),  # defaults
])
def test_options_without_effect_are_the_non_default_unused_ones(argv, expected):
    """Listed in the order of TrainConfig's fields, each with the reason."""
    found = cli_config(*argv).ineffective_options()
    assert [item.split(" (")[0] for item in found] == expected, found
    assert all(item.endswith(")") and " (" in item for item in found), found  # each says why


def warnings_in(stderr: str) -> List[str]:
    return [line for line in stderr.splitlines() if " WARNING " in line]


@pytest.mark.slow
def test_study_job_line_warns_once_about_sync_grad(tmp_path):
    """The study's flags under --crossover True, with two real ranks: one warning line from rank 0,
    in the legacy script's flag names, before training; the run itself goes on."""
    out = tmp_path / "out"
    result = run([sys.executable, LEGACY, "--crossover", "True", "--allreduce", "False", "--sync_grad", "False",
                  "--chromosome", "fine", "--lars_coef", "0.0025", "--dataset", "digits", "--model", "small_cnn",
                  "--maxepoch", "1", "--warmup_epoch", "0", "--nproc", "2", "--workers", "0", "--out", str(out)],
                 timeout=180)
    assert result.returncode == 0, result.stderr
    (line,) = warnings_in(result.stderr)
    assert "[rank 0]" in line and "options without effect in this run: --sync_grad False (only allreduce uses it; " \
                                   "the algorithm is crossover)" in line, line
    log = (out / "train.log").read_text()
    assert log.count("options without effect") == 1
    assert log.index("options without effect") < log.index("epoch 1/1")  # before training


@pytest.mark.slow
def test_cli_warns_about_options_the_algorithm_and_schedule_ignore(tmp_path):
    out = tmp_path / "out"
    result = run([sys.executable, "-m", "crossover_sgd", "train", "--chromosome", "coarse", "--poly-power", "1.5",
                  "--stop-at-step", "2", "--out", str(out)], timeout=180)
    assert result.returncode == 0, result.stderr
    (line,) = warnings_in(result.stderr)
    assert "--chromosome coarse (only crossover, hierarchical-crossover use it; the algorithm is allreduce)" in line, line
    assert "--poly-power 1.5 (only the poly schedule uses it; the schedule is cosine)" in line, line


@pytest.mark.slow
def test_default_job_has_no_warning(default_job):
    """(The run: the session's ``default_job``, ``crossover-sgd train --nproc 4`` as the README
    gives it, also checked by tests/cli/test_default_job.py.)"""
    result, cwd = default_job
    assert result.returncode == 0, result.stderr
    assert warnings_in(result.stderr) == [], result.stderr
    (out,) = list((cwd / "runs").iterdir())  # the default output directory
    assert "WARNING" not in (out / "train.log").read_text()


def test_every_algorithm_option_is_a_config_field():
    """What each Algorithm declares in its ``options_class`` is a registered option, readable on a
    TrainConfig like a field."""
    from crossover_sgd.algorithms import ALGORITHMS, make_config
    from crossover_sgd.algorithms.registry import option_specs

    names = {spec.name for spec in option_specs()}
    config = make_config()
    for algorithm in ALGORITHMS.values():
        options = set(algorithm.options_class.names())
        assert options <= names, (algorithm.name, options - names)
        assert all(getattr(config, name) == getattr(algorithm.options_class(), name) for name in options)
    options = {name: set(cls.options_class.names()) for name, cls in ALGORITHMS.items()}
    assert options["allreduce"] == {"sync_grad"}
    assert options["crossover"] <= options["hierarchical-crossover"] | {"gossip_overlap"}
