"""``crossover-sgd ecl``: the original peer-to-peer code's command line (``python main.py ...``),
mapped onto :class:`TrainConfig` (:mod:`crossover_sgd.ecl`)."""

from __future__ import annotations

import csv
import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from crossover_sgd import cli
from crossover_sgd.config import TrainConfig
from crossover_sgd.ecl import ALGORITHM_OF, ECL_NAMES, SWAP_TIMEOUT, Translation, main, parse, translate
from crossover_sgd.errors import ConfigError
from crossover_sgd.runtime.launch import free_port
from support import ROOT, child_env, cli as run_cli

#: The seed's Quickstart (its README), verbatim after ``python main.py``; the shell redirection
#: at the end is the shell's, not an argument.
QUICKSTART = [
    "./data ./output/ring1 --epochs 200 --batch_size 100 --l2_lambda 0.01 --model_name resnet50 --dataset_name "
    "cifar10 --group_channels 32 --drop_rate 0.1 --last_drop_rate 0.5 --loglevel INFO --train_data_length 10000 "
    "--cuda_device_no 1 --skip_plots --scheduler StepLR --step_size 410 --gamma 0.9 --sleep_factor 0 DSGD node0 "
    "./conf/node_list.json ./conf/hosts.json --lr 0.002 --swap_timeout 10 --async_step > ./output/ring1/node0.txt",
    "./data ./output/ring2 --epochs 200 --batch_size 100 --l2_lambda 0.01 --model_name resnet50 --dataset_name "
    "cifar10 --group_channels 32 --drop_rate 0.1 --last_drop_rate 0.5 --loglevel INFO --train_data_length 10000 "
    "--cuda_device_no 2 --skip_plots --scheduler StepLR --step_size 410 --gamma 0.9 --sleep_factor 0 DSGD node1 "
    "./conf/node_list.json ./conf/hosts.json --lr 0.002 --swap_timeout 10 --async_step > ./output/ring2/node1.txt ",
    "./data ./output/ring3 --epochs 200 --batch_size 100 --l2_lambda 0.01 --model_name resnet50 --dataset_name "
    "cifar10 --group_channels 32 --drop_rate 0.1 --last_drop_rate 0.5 --loglevel INFO --train_data_length 10000 "
    "--cuda_device_no 3 --skip_plots --scheduler StepLR --step_size 410 --gamma 0.9 --sleep_factor 0 DSGD node2 "
    "./conf/node_list.json ./conf/hosts.json --lr 0.002 --swap_timeout 10 --async_step > ./output/ring3/node2.txt ",
]

#: The original's CSV columns (the per-node CSV starts with them).
ORIGINAL_COLUMNS = ["epoch", "train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc"]

#: The seed fork's conf/node_list.json, verbatim (3 nodes, a round of 10 steps, asymmetric slots).
NODE_LIST = {"nodes": {
    "node0": {"device": "cuda", "round": 10, "edges": {"node2": 0, "node1": 4}},
    "node1": {"device": "cuda", "round": 10, "edges": {"node0": 1, "node2": 5}},
    "node2": {"device": "cuda", "round": 10, "edges": {"node1": 2, "node0": 6}},
}}


def write_conf(folder: Path, port: int = 29500) -> Tuple[str, str]:
    """The seed's node_list.json and a hosts.json on 127.0.0.1 (first port: ``port``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "node_list.json").write_text(json.dumps(NODE_LIST, indent=2))
    hosts = [{"name": f"node{i}", "addr": "127.0.0.1", "port": str(port + i)} for i in range(3)]
    (folder / "hosts.json").write_text(json.dumps({"hosts": hosts}, indent=2))
    return str(folder / "node_list.json"), str(folder / "hosts.json")


def quickstart(line: str) -> Tuple[List[str], str]:
    """(the arguments, the file stdout is redirected to) of a Quickstart line."""
    words = shlex.split(line)
    cut = words.index(">")
    return words[:cut], words[cut + 1]


def ecl(*argv: str, gpus: int = 0) -> Translation:
    return translate(parse(list(argv)), gpus=gpus)


def node(optimizer: str, *flags: str, general: Tuple[str, ...] = ()) -> Translation:
    """A peer-to-peer node's command line (or sgd's) on the CPU, the original's defaults elsewhere."""
    positionals = () if optimizer in ("sgd", "adam") else ("node0", "conf.json", "hosts.json")
    return ecl("DATA", "OUT", "--cpu", *general, optimizer, *positionals, *flags)


# ----------------------------------------------------------------------------- (1) the Quickstart
@pytest.mark.parametrize("index", range(3))
def test_quickstart_command_translates_to_the_train_config(index, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    argv, redirected = quickstart(QUICKSTART[index])
    assert redirected == f"./output/ring{index + 1}/node{index}.txt"
    translation = translate(parse(argv), gpus=4)
    c = translation.config
    assert translation.warnings == []
    assert (c.algorithm, c.node_name, c.node_list, c.hosts) == \
        ("dsgd", f"node{index}", "./conf/node_list.json", "./conf/hosts.json")
    assert (c.data_dir, c.out, c.dataset) == ("./data", f"./output/ring{index + 1}", "cifar10")
    assert (c.model, c.norm, c.group_channels, c.drop_rate, c.last_drop_rate) == ("resnet50", "group", 32, 0.1, 0.5)
    assert (c.l2_lambda, c.partition, c.train_data_length) == (0.01, "noniid", 10000)
    # StepLR stepped per epoch: a decay every 410 epochs, none of which falls inside 200 epochs
    assert (c.lr_schedule, tuple(c.step_milestones), c.step_gamma, c.step_size, c.warmup_epochs) == \
        ("step", (), 0.9, None, 0.0)
    assert (c.lr, c.momentum, c.weight_decay, c.nesterov) == (0.002, 0.0, 0.0, False)
    assert (c.swap_timeout, c.async_step, c.sleep_factor) == (10.0, True, 0.0)
    assert (c.epochs, c.batch_size, c.seed, c.log_level) == (200, 100, 569, "INFO")
    # --cuda_device_no N: the N-th GPU, the only one the process then sees
    assert c.device == "cuda" and translation.env == {"CUDA_VISIBLE_DEVICES": str(index + 1)}


def test_quickstart_without_a_gpu_runs_on_the_cpu_with_one_warning():
    argv, _ = quickstart(QUICKSTART[1])
    translation = translate(parse(argv), gpus=0)
    assert translation.config.device == "cpu" and translation.env == {}
    assert translation.warnings == ["no CUDA GPU is visible: running on the CPU (--cuda_device_no 2 ignored; "
                                    "give --cpu to say so)"]


def test_cuda_device_number_indexes_the_visible_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6,7")
    assert ecl("D", "O", "--cuda_device_no", "2", "sgd", gpus=3).env == {"CUDA_VISIBLE_DEVICES": "7"}
    with pytest.raises(ConfigError, match=r"--cuda_device_no 3 is invalid: this process sees 3 GPU\(s\)"):
        ecl("D", "O", "--cuda_device_no", "3", "sgd", gpus=3)
    assert ecl("D", "O", "--cpu", "--cuda_device_no", "3", "sgd", gpus=3).config.device == "cpu"


# ----------------------------------------------------------------------------- (2) every optimizer
@pytest.mark.parametrize("optimizer,algorithm", sorted(ALGORITHM_OF.items()))
def test_every_optimizer_maps_to_its_algorithm(optimizer, algorithm, tmp_path):
    conf, host = write_conf(tmp_path)
    positionals = () if optimizer == "sgd" else ("node2", conf, host)
    c = ecl("DATA", "OUT", "--cpu", optimizer, *positionals).config
    assert c.algorithm == algorithm
    c.validate()  # the options it was given are the algorithm's, and valid (the files are read)
    if optimizer == "sgd":  # one process, plain SGD, on the whole (capped) training set
        assert (c.node_name, c.partition, c.swap_timeout) == (None, "iid", None)
    else:
        assert (c.node_name, c.node_list, c.hosts, c.partition) == ("node2", conf, host, "noniid")
        assert (c.swap_timeout, c.async_step) == (float(SWAP_TIMEOUT[optimizer]), False)


def test_the_original_defaults_apply_when_flags_are_absent():
    c = node("DSGD").config
    assert (c.epochs, c.batch_size, c.seed, c.lr, c.l2_lambda) == (1000, 64, 569, 0.002, 0.001)
    assert (c.model, c.norm, c.group_channels, c.drop_rate, c.last_drop_rate) == ("resnet50", "group", 32, 0.1, 0.5)
    assert (c.train_data_length, c.lr_schedule, c.warmup_epochs, c.log_level) == (12800, "constant", 0.0, "DEBUG")
    assert (c.momentum, c.weight_decay, c.nesterov, c.sleep_factor, c.dataset) == (0.0, 0.0, False, 0.0, "cifar10")
    assert {name: node(name).config.swap_timeout for name in SWAP_TIMEOUT} == \
        {"DSGD": 1.0, "GossipSGD": 1.0, "PdmmSGD": 1.0, "AdmmSGD": 1.0, "PdmmISVR": 100.0, "AdmmISVR": 1000.0,
         "CADMM": 1.0}


def test_optimizer_flags_land_in_their_settings():
    c = node("sgd", "--lr", "0.1", "--momentum", "0.9", "--weight_decay", "5e-4", "--nesterov").config
    assert (c.lr, c.momentum, c.weight_decay, c.nesterov) == (0.1, 0.9, 5e-4, True)
    c = node("GossipSGD", "--momentum", "0.5", "--swap_timeout", "7", "--async_step").config
    assert (c.momentum, c.swap_timeout, c.async_step) == (0.5, 7.0, True)
    c = node("PdmmSGD", "--lr", "0.005", "--eta", "2", "--rho", "0.3").config
    assert (c.lr, c.eta, c.rho, c.momentum) == (0.005, 2.0, 0.3, 0.0)
    c = node("AdmmISVR", "--piw", "2", "--use_gcoef").config
    assert (c.piw, c.use_gcoef, c.swap_timeout) == (2.0, True, 1000.0)
    c = node("CADMM", "--rho_init", "0.5", "--rho_scaling", "1.1", "--primal_iterations", "4").config
    assert (c.rho_init, c.rho_scaling, c.primal_iterations) == (0.5, 1.1, 4)


def test_step_lr_decays_after_every_step_size_epochs():
    c = node("DSGD", general=("--epochs", "20", "--scheduler", "StepLR", "--step_size", "5", "--gamma", "0.5")).config
    assert (c.lr_schedule, tuple(c.step_milestones), c.step_gamma) == ("step", (5, 10, 15), 0.5)


def test_logistics_is_the_logistic_model_without_dropout():
    t = node("DSGD", general=("--model_name", "logistics"))
    assert (t.config.model, t.config.norm, t.config.drop_rate, t.config.last_drop_rate) == ("logistic", "batch", 0, 0)
    assert t.warnings == []
    t = node("DSGD", general=("--model_name", "logistics", "--drop_rate", "0.3"))
    assert t.warnings == ["--drop_rate 0.3 has no effect with --model_name logistics (a single linear layer)"]


@pytest.mark.parametrize("dataset,data_dir", [("cifar10", "DATA"), ("CIFAR10", "DATA"), ("mnist", "DATA"),
                                              ("digits", None), ("synthetic", None)])
def test_dataset_name_takes_the_package_datasets(dataset, data_dir):
    c = node("sgd", general=("--dataset_name", dataset)).config
    assert (c.dataset, c.data_dir) == (dataset.lower(), data_dir)


@pytest.mark.parametrize("text,level", [("info", "INFO"), ("Warning", "WARNING"), ("WARN", "WARNING"),
                                        ("fatal", "CRITICAL"), ("debug", "DEBUG")])
def test_loglevel_names(text, level):
    assert node("sgd", general=("--loglevel", text)).config.log_level == level


def test_flags_without_effect_are_accepted_with_one_warning_each():
    t = node("DSGD", "--weight", "0.5", general=("--data_init_seed", "1", "--model_init_seed", "13", "--logfile",
                                                 "x.log"))
    assert t.warnings == ["--weight 0.5 has no effect (the original ignored it too)",
                          "--data_init_seed 1 has no effect: --seed drives the data split",
                          "--logfile x.log is not written: the log goes to stderr (and OUTDIR/train.log of the "
                          "first node)"]
    assert node("AdmmSGD", "--mu", "100").warnings == ["--mu 100 has no effect: mu = 1/--lr (in the original as well)"]
    assert node("DSGD", "--dampening", "0", "--weight", "1").warnings == []


@pytest.mark.parametrize("argv,message", [
    (("D", "O", "adam"), "OPTIMIZER adam cannot be honoured"),
    (("D", "O", "DSGD", "n", "c", "h", "--dampening", "0.1"), "--dampening 0.1 cannot be honoured"),
    (("D", "O", "--scheduler", "StepLR", "--step_size", "0", "sgd"), "--step_size 0 is invalid"),
    (("D", "O", "--cuda_device_no", "-1", "sgd"), "--cuda_device_no -1 is invalid"),
])
def test_what_cannot_be_honoured_is_a_config_error(argv, message):
    with pytest.raises(ConfigError, match=message):
        ecl(*argv)


def test_settings_in_messages_are_the_original_flags(capsys):
    calls = []
    code = main(["D", "O", "--cpu", "--epochs", "0", "sgd"], train=lambda *a, **k: calls.append(a) or 0)
    assert (code, calls) == (2, [])
    assert capsys.readouterr().err == "crossover-sgd ecl: error: --epochs 0 is invalid: use an integer >= 1\n"


def test_a_good_command_is_handed_to_run_train_with_the_original_names(capsys):
    calls = []
    code = main(["D", "O", "--cpu", "--dataset_name", "digits", "--model_name", "logistics", "sgd", "--lr", "0.1"],
                train=lambda config, command, flag_names: calls.append((config, command, flag_names)) or 0)
    assert code == 0 and capsys.readouterr().err == ""
    ((config, command, flag_names),) = calls
    assert isinstance(config, TrainConfig) and (config.algorithm, config.lr, config.device) == ("allreduce", 0.1, "cpu")
    assert command[-4:] == ["logistics", "sgd", "--lr", "0.1"] and flag_names is ECL_NAMES


def test_the_subcommand_is_registered_on_crossover_sgd(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cli, "run_train", lambda config, command, flag_names=None: calls.append(config) or 0)
    conf, host = write_conf(tmp_path)
    assert cli.main(["ecl", "D", "O", "--cpu", "--dataset_name", "digits", "GossipSGD", "node1", conf, host]) == 0
    assert [(c.algorithm, c.node_name) for c in calls] == [("gossip-sgd", "node1")]


# ----------------------------------------------------------------------------- (3) bad input
@pytest.mark.slow
@pytest.mark.parametrize("argv,words", [
    (["D", "O", "Adagrad"], "argument OPTIMIZER: invalid choice: 'Adagrad'"),
    (["D", "O", "PdmmISVR", "n", "c", "h", "--piw", "3"], "argument --piw: invalid choice: 3.0"),
    (["D", "O"], "the following arguments are required: OPTIMIZER"),
    (["D", "O", "DSGD", "node0", "conf.json"], "the following arguments are required: host"),
    (["D", "O", "DSGD", "n", "c", "h", "--swap_timeout", "-1"], "argument --swap_timeout: -1 is invalid"),
    (["D", "O", "DSGD", "n", "c", "h", "--epochs", "3"], "--epochs is a general flag: give it before OPTIMIZER"),
])
def test_bad_input_is_one_line_and_exit_2(argv, words):
    result = run_cli("ecl", *argv, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("crossover-sgd ecl: error: ") and words in lines[0], lines


# ----------------------------------------------------------------------------- (4) three nodes by hand
def write_cifar10(root: Path, per_class: int) -> None:
    """The CIFAR-10 writer of tests/training/test_data_models.py (a test module: loaded by path)."""
    spec = importlib.util.spec_from_file_location("_ecl_cifar10_writer",
                                                  ROOT / "tests" / "training" / "test_data_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_cifar10(root, per_class=per_class)


#: Small overrides, given where the original's parser takes general flags: before OPTIMIZER.
OVERRIDES = ["--epochs", "1", "--train_data_length", "60", "--batch_size", "20", "--model_name", "logistics", "--cpu"]


@pytest.mark.slow
def test_three_nodes_started_by_hand_with_the_seeds_dsgd_lines(tmp_path):
    write_cifar10(tmp_path / "data", per_class=6)
    write_conf(tmp_path / "conf", port=free_port())  # the other nodes' ports are not used
    procs: Dict[str, Tuple[subprocess.Popen, Path, Path]] = {}
    for i, line in enumerate(QUICKSTART):
        argv, redirected = quickstart(line)
        at = argv.index("DSGD")
        argv = argv[:at] + OVERRIDES + argv[at:]
        stdout = tmp_path / redirected
        stdout.parent.mkdir(parents=True)  # as the shell's redirection needs
        stderr = tmp_path / f"node{i}.stderr"
        with open(stdout, "w") as out, open(stderr, "w") as err:
            procs[f"node{i}"] = (subprocess.Popen([sys.executable, "-m", "crossover_sgd", "ecl", *argv], cwd=tmp_path,
                                                  env=child_env(), stdout=out, stderr=err),
                                 stderr, tmp_path / "output" / f"ring{i + 1}")
    try:
        codes = {name: proc.wait(timeout=120) for name, (proc, _, _) in procs.items()}
    finally:
        for proc, _, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = {name: stderr.read_text()[-3000:] for name, (_, stderr, _) in procs.items()}
    assert codes == {"node0": 0, "node1": 0, "node2": 0}, logs
    for name, (_, _, outdir) in procs.items():
        with open(outdir / "nodes" / f"{name}.csv", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
        assert reader.fieldnames[:len(ORIGINAL_COLUMNS)] == ORIGINAL_COLUMNS, logs[name]
        assert [int(r["epoch"]) for r in rows] == [1]
        assert all(0.0 <= float(rows[0][k]) <= 1.0 for k in ("train_acc", "val_acc", "test_acc"))
        config = json.loads((outdir / "nodes" / f"{name}.json").read_text())["config"]
        assert (config["algorithm"], config["node_name"], config["model"], config["device"]) == \
            ("dsgd", name, "logistic", "cpu")
