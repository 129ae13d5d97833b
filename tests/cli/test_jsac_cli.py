"""``crossover-sgd jsac``: the original parameter-server code's command line (``python3 main.py
--ws N --psip IP --psport P --algorithm A --rank R`` and a ``config.json``), mapped onto
:class:`TrainConfig` (:mod:`crossover_sgd.jsac`)."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from crossover_sgd import cli
from crossover_sgd.config import TrainConfig
from crossover_sgd.errors import ConfigError
from crossover_sgd.jsac import (FIELDS, JSAC_NAMES, REQUIRED, Translation, epochs_for, main, parse, read_config,
                                translate)
from crossover_sgd.runtime.launch import LOCAL_LAUNCHER_ENV, free_port
from support import child_env, cli as run_cli

#: The seed README's two lines, verbatim after ``python3 main.py``.
README_SERVER = "--ws 2 --psip 172.16.167.32 --psport 8880 --algorithm LOSP --rank 0"
README_WORKER = "--ws 2 --psip 172.16.167.32 --psport 8880 --algorithm LOSP --rank 1"

#: The original's config.json values (the notes on the seed), MNIST + CNN, 100 epochs at batch 32.
ORIGINAL = {"initial_lr": 4e-4, "gamma": 6e-4, "K": 256, "batch_size": 32, "all_iterations": 187500,
            "model_type": "CNN", "dataset_type": "MNIST"}
#: digits' training set (1797 images, 20 % held out).
DIGITS_TRAIN = 1438
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                      "MASTER_PORT", LOCAL_LAUNCHER_ENV)


def jsac(line: str, length: int = 60000, **fields: Any) -> Translation:
    """Translate a command line with the original's config.json (``fields`` changed), the training
    set ``length`` samples long."""
    return translate(parse(shlex.split(line)), {**ORIGINAL, **fields}, length=length)


def write_config(folder: Path, name: str = "config.json", **fields: Any) -> Path:
    path = folder / name
    path.write_text(json.dumps(fields))
    return path


@pytest.fixture
def launcher_env(monkeypatch):
    """main() sets the launcher variables of this process: restore them afterwards."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.setenv(name, "")
    yield


# ----------------------------------------------------------------------------- (1) the mapping
def test_readme_lines_are_the_server_and_a_worker():
    for line, rank in ((README_SERVER, 0), (README_WORKER, 1)):
        t = jsac(line, data_dir="/data")
        assert t.env == {"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                         "GROUP_RANK": str(rank), "MASTER_ADDR": "172.16.167.32", "MASTER_PORT": "8880",
                         LOCAL_LAUNCHER_ENV: "hosts"}
        c = t.config
        assert (c.algorithm, c.world_size, c.ps_shards, c.out) == ("losp", 2, 1, "runs/jsac-losp-config")


def test_the_original_config_maps_onto_the_train_config():
    c = jsac(README_SERVER, data_dir="/data").config
    c.validate()
    assert (c.lr, c.ps_lr, c.losp_gamma, c.local_steps, c.batch_size) == (4e-4, 4e-4, 6e-4, 256, 32)
    assert (c.model, c.dataset, c.data_dir, c.seed) == ("mnist_cnn", "mnist", "/data", 0)
    # plain SGD on the workers, constant rates, an evaluation after every aggregation
    assert (c.momentum, c.weight_decay, c.nesterov, c.lr_schedule, c.warmup_epochs) == (0.0, 0.0, False, "constant", 0)
    assert (c.ps_lr_schedule, c.losp_gamma_schedule, c.ps_eval_every) == ("constant", "constant", 1)
    # one worker, 60000 // 32 = 1875 steps an epoch: 187500 iterations are exactly 100 epochs
    assert c.epochs == 100


@pytest.mark.parametrize("given,algorithm", [("localSGD", "localsgd"), ("LOCALSGD", "localsgd"), ("OSP", "osp"),
                                             ("osp", "osp"), ("LOSP", "losp"), ("Losp", "losp"),
                                             ("DQLOSP", "dqlosp")])
def test_algorithm_names_in_any_case(given, algorithm):
    c = jsac(f"--ws 3 --psip h --psport 1 --algorithm {given} --rank 2", data_dir="/d").config
    c.validate()
    assert c.algorithm == algorithm
    losp = algorithm in ("losp", "dqlosp")
    assert c.losp_gamma == (6e-4 if losp else None)  # gamma: LOSP's only (None: the option's default)
    assert c.quant_bits == (16 if algorithm == "dqlosp" else 8)  # bit_width: DQLOSP's only (8: the default)
    assert c.ineffective_options(JSAC_NAMES) == []  # nothing to warn about: the run prints nothing extra


def test_dqlosp_takes_bit_width_and_quant_type():
    line = "--ws 3 --psip h --psport 1 --algorithm DQLOSP --rank 1"
    c = jsac(line, data_dir="/d").config
    assert (c.quant_bits, c.stochastic_rounding) == (16, False)  # the original's 16-bit quantizer, nearest level
    c = jsac(line, data_dir="/d", bit_width=4, quant_type="stochastic").config
    assert (c.quant_bits, c.stochastic_rounding, c.losp_gamma) == (4, True, 6e-4)
    # one config.json served every algorithm: LOSP accepts (and does not use) them
    assert jsac(line.replace("DQLOSP", "LOSP"), data_dir="/d", bit_width=4).config.quant_bits == 8


@pytest.mark.parametrize("model_type,model", [("CNN", "mnist_cnn"), ("AlexNet", "alexnet_cifar"),
                                              ("ResNet", "resnet18")])
@pytest.mark.parametrize("dataset_type,dataset", [("MNIST", "mnist"), ("Cifar10", "cifar10"), ("digits", "digits")])
def test_models_and_datasets(model_type, model, dataset_type, dataset):
    c = jsac(README_WORKER, model_type=model_type, dataset_type=dataset_type, data_dir="/d").config
    assert (c.model, c.dataset, c.data_dir) == (model, dataset, None if dataset == "digits" else "/d")


def test_optional_fields_and_flags():
    c = jsac(README_WORKER + " --out here --data-dir /flag --config other/conf.json", data_dir="/conf",
             lr_schedule="cosine", gamma_schedule="linear", seed=7).config
    assert (c.out, c.data_dir, c.seed) == ("here", "/flag", 7)  # --data-dir overrides data_dir
    assert (c.ps_lr_schedule, c.losp_gamma_schedule, c.lr_schedule) == ("cosine", "linear", "constant")
    assert jsac(README_WORKER.replace("LOSP", "OSP") + " --config other/conf.json", data_dir="/d").config.out == \
        "runs/jsac-osp-conf"


def test_all_iterations_round_up_to_whole_epochs():
    # the README: 100 Cifar10 epochs at batch 32 are 156250 iterations; with 8 workers an epoch is
    # 8 x (50000 // 256) = 1560 iterations here (each worker drops its last partial batch): 101 epochs
    assert epochs_for(156250, 50000, 32, 8) == 101
    assert epochs_for(1560 * 100, 50000, 32, 8) == 100 and epochs_for(1560 * 100 + 1, 50000, 32, 8) == 101
    assert epochs_for(1, 50000, 32, 8) == 1
    with pytest.raises(ConfigError, match="batch_size 32 x 8 worker"):
        epochs_for(100, 255, 32, 8)


def test_epochs_come_from_the_data_read():
    # digits: 1438 // (16 x 2) = 44 steps per worker and epoch, 88 global iterations
    fields = {**ORIGINAL, "dataset_type": "digits", "batch_size": 16, "all_iterations": 89}
    assert translate(parse(shlex.split("--ws 3 --psip h --psport 1 --algorithm OSP --rank 0")), fields).config.epochs \
        == 2


@pytest.mark.parametrize("line,fields,message", [
    ("--ws 2 --psip h --psport 1 --algorithm LOSP --rank 2", {}, "--rank 2 is invalid: use 0 (the server) to 1"),
    (README_WORKER, {}, "dataset_type MNIST reads files: give --data-dir DIR"),
])
def test_what_cannot_be_honoured_is_a_config_error(line, fields, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        jsac(line, **fields)


# ----------------------------------------------------------------------------- (2) config.json
def test_every_field_is_documented_in_the_module():
    import crossover_sgd.jsac as module

    for name in FIELDS:
        assert f"\n{name} " in module.__doc__, name
    assert set(REQUIRED) < set(FIELDS)


def test_read_config_returns_the_fields(tmp_path):
    path = write_config(tmp_path, **ORIGINAL, bit_width=8)
    assert read_config(str(path)) == {**ORIGINAL, "bit_width": 8}


GOOD = {**ORIGINAL, "dataset_type": "digits", "all_iterations": 10}


@pytest.mark.parametrize("content,line", [
    ({**GOOD, "lr": 0.1}, 'unknown field "lr": the fields are initial_lr, gamma, K, batch_size, all_iterations, '
                          "model_type, dataset_type, bit_width, quant_type, lr_schedule, gamma_schedule, seed, "
                          "data_dir"),
    ({**GOOD, "k": 4}, 'unknown field "k" (did you mean K?)'),
    ({**GOOD, "K": "256"}, '"K": "256" is invalid: use an integer >= 1 (the most local steps per push)'),
    ({**GOOD, "K": 2.5}, '"K": 2.5 is invalid: use an integer >= 1'),
    ({**GOOD, "initial_lr": -0.1}, '"initial_lr": -0.1 is invalid: use a number > 0 (the learning rate'),
    ({**GOOD, "gamma": True}, '"gamma": true is invalid: use a number >= 0'),
    ({**GOOD, "model_type": "VGG"}, '"model_type": "VGG" is invalid: use one of CNN, AlexNet, ResNet (case as '
                                    "written) (the model)"),
    ({**GOOD, "model_type": "cnn"}, '"model_type": "cnn" is invalid: use one of CNN, AlexNet, ResNet'),
    ({**GOOD, "dataset_type": "cifar10"}, '"dataset_type": "cifar10" is invalid: use one of MNIST, Cifar10, digits'),
    ({**GOOD, "bit_width": 32}, '"bit_width": 32 is invalid: use an integer from 1 to 16'),
    ({**GOOD, "quant_type": "random"}, '"quant_type": "random" is invalid: use one of deterministic, stochastic'),
    ({k: v for k, v in GOOD.items() if k not in ("gamma", "K")}, "missing fields gamma, K (required: initial_lr, "
                                                                  "gamma, K, batch_size, all_iterations, model_type, "
                                                                  "dataset_type)"),
    ([1, 2], "a JSON object of fields is expected, not list"),
    (None, "no such file (the original read config.json from the working directory; give --config PATH)"),
    ("{\"K\": 4,}", "not valid JSON: "),
])
def test_a_bad_config_is_one_line_exit_2_and_nothing_written(content, line, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / "config.json").write_text(content if isinstance(content, str) else json.dumps(content))
    before = sorted(p.name for p in tmp_path.iterdir())
    calls: List[TrainConfig] = []
    code = main(README_SERVER.split(), train=lambda config, *a, **k: calls.append(config) or 0)
    captured = capsys.readouterr()
    assert (code, calls, captured.out) == (2, [], "")
    assert captured.err.startswith(f"crossover-sgd jsac: error: --config config.json: {line}")
    assert captured.err.count("\n") == 1 and captured.err.endswith("\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_good_config_is_handed_to_run_train_with_the_original_names(tmp_path, monkeypatch, capsys, launcher_env):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path, **GOOD)
    calls = []
    code = main(README_WORKER.split(), train=lambda config, command, flag_names: calls.append(
        (config, command, flag_names, {k: os.environ[k] for k in LAUNCHER_VARIABLES})) or 0)
    assert code == 0 and capsys.readouterr() == ("", "")
    ((config, command, flag_names, env),) = calls
    assert (config.algorithm, config.dataset, config.epochs, config.out) == ("losp", "digits", 1, "runs/jsac-losp-config")
    assert command[-11:] == ["jsac", *README_WORKER.split()] and flag_names is JSAC_NAMES
    assert (env["RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"], env["MASTER_PORT"], env[LOCAL_LAUNCHER_ENV]) == \
        ("1", "2", "172.16.167.32", "8880", "hosts")


def test_an_out_dir_holding_a_run_is_refused_without_resume_advice(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path, **GOOD)
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "summary.json").write_text("{}")
    assert main([*README_SERVER.split(), "--out", "done"], train=lambda *a, **k: 0) == 2
    assert capsys.readouterr().err == ("crossover-sgd jsac: error: --out done already holds a run (summary.json): "
                                       "remove it or give another --out (a parameter-server run cannot be resumed)\n")


def test_settings_in_messages_are_the_original_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path, **GOOD)
    monkeypatch.setattr("crossover_sgd.jsac.epochs_for", lambda *a: 0)  # a value the TrainConfig refuses
    assert main(README_SERVER.split(), train=lambda *a, **k: 0) == 2
    assert capsys.readouterr().err == "crossover-sgd jsac: error: all_iterations 0 is invalid: use an integer >= 1\n"


def test_the_subcommand_is_registered_on_crossover_sgd(monkeypatch, tmp_path, launcher_env):
    calls = []
    monkeypatch.setattr(cli, "run_train", lambda config, command, flag_names=None: calls.append(config) or 0)
    path = write_config(tmp_path, **{**GOOD, "model_type": "AlexNet"})
    assert cli.main(["jsac", *README_WORKER.split(), "--config", str(path)]) == 0
    assert [(c.algorithm, c.model) for c in calls] == [("losp", "alexnet_cifar")]


# ----------------------------------------------------------------------------- (3) real processes
@pytest.mark.slow
def test_bad_input_from_the_command_line_is_one_line_and_exit_2(tmp_path):
    write_config(tmp_path, **{**GOOD, "model_type": "VGG"})
    result = run_cli("jsac", *README_SERVER.split(), timeout=120, cwd=tmp_path)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ('crossover-sgd jsac: error: --config config.json: "model_type": "VGG" is invalid: use '
                             "one of CNN, AlexNet, ResNet (case as written) (the model)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


@pytest.mark.slow
def test_a_server_and_two_workers_started_by_hand(tmp_path):
    """The README's way: every process by hand, the same flags but --rank, one config.json."""
    config = write_config(tmp_path, "cfg.json", initial_lr=0.05, gamma=0.05, K=4, batch_size=32, all_iterations=40,
                          model_type="CNN", dataset_type="digits")
    out = tmp_path / "run"
    port = free_port()
    procs: Dict[int, subprocess.Popen] = {}
    for rank in range(3):
        argv = ["--ws", "3", "--psip", "127.0.0.1", "--psport", str(port), "--algorithm", "LOSP", "--rank", str(rank),
                "--config", str(config), "--out", str(out)]
        with open(tmp_path / f"rank{rank}.out", "w") as stdout, open(tmp_path / f"rank{rank}.err", "w") as stderr:
            procs[rank] = subprocess.Popen([sys.executable, "-m", "crossover_sgd", "jsac", *argv], cwd=tmp_path,
                                           env=child_env(), stdout=stdout, stderr=stderr)
    try:
        codes = {rank: proc.wait(timeout=240) for rank, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = {rank: (tmp_path / f"rank{rank}.err").read_text()[-3000:] for rank in procs}
    assert codes == {0: 0, 1: 0, 2: 0}, logs
    assert all((tmp_path / f"rank{rank}.out").read_text() == "" for rank in procs)  # nothing extra printed
    with open(out / "ps" / "shard0.csv", newline="") as handle:
        rounds = list(csv.DictReader(handle))
    # digits: 1438 // (32 x 2) = 22 steps per worker and epoch, 44 iterations >= 40: one epoch
    assert rounds and int(rounds[-1]["global_iterations"]) == 44, logs
    with open(out / "ps" / "worker_rank1.csv", newline="") as handle:
        pushes = list(csv.DictReader(handle))
    assert pushes and all(0 <= int(p["k"]) <= 4 for p in pushes) and float(pushes[0]["gamma"]) == 0.05
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["status"], summary["world_size"], summary["launcher"]) == ("finished", 3, "hosts"), summary
    c = summary["config"]
    assert (c["algorithm"], c["model"], c["epochs"], c["local_steps"], c["lr"], c["momentum"]) == \
        ("losp", "mnist_cnn", 1, 4, 0.05, 0.0)
