"""``crossover-sgd plot``: training curves from real run directories into non-empty PNG files;
the per-node figure of a run with nodes/*.csv (hand-written runs); the server and per-worker
figures of a real parameter-server run (ps/*.csv), alone, side by side with another and beside
an all-reduce run; one-line errors for a directory without metrics, an unreadable node or
worker CSV and a missing matplotlib."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from support import cli, run

from crossover_sgd.errors import ConfigError
from crossover_sgd.plotting import QUANTITIES, load_run, plot_runs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("plot") / "digits-run"
    result = cli("train", "--epochs", "2", "--out", str(out), timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_plots_of_a_real_run(run_dir, tmp_path):
    second = tmp_path / "copy-of-run"
    shutil.copytree(run_dir, second)
    written = plot_runs([run_dir, second], tmp_path / "plots")
    assert [p.name for p in written] == [f"{q.name}.png" for q in QUANTITIES]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, path
    metrics = load_run(run_dir)
    assert metrics.algorithm == "allreduce" and metrics.epochs() == [1.0, 2.0]
    mean, low, high = metrics.band("val_acc")
    assert low == high == mean  # one rank


def test_plot_module_command_line(run_dir, tmp_path):
    out = tmp_path / "cli-plots"
    result = run([sys.executable, "-m", "crossover_sgd.plotting", str(run_dir), "--out", str(out)], timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(str(out / f"{q.name}.png") for q in QUANTITIES)


def test_directory_without_metrics_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="holds no metrics"):
        load_run(tmp_path)
    result = run([sys.executable, "-m", "crossover_sgd.plotting", str(tmp_path)], timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crossover-sgd: error:") and "holds no metrics" in lines[0]


def test_missing_matplotlib_is_one_line(run_dir, tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; from crossover_sgd.plotting import main; "
            f"raise SystemExit(main([{str(run_dir)!r}, '--out', {str(tmp_path / 'p')!r}]))")
    result = run([sys.executable, "-c", code], timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "matplotlib" in lines[0] and "crossover-sgd[plot]" in lines[0]
    assert not (tmp_path / "p").exists()


def test_runs_with_the_same_directory_name_get_distinct_labels(tmp_path):
    from crossover_sgd.plotting import distinct_names

    assert distinct_names([tmp_path / "sgp" / "n8", tmp_path / "crossover" / "n8"]) == ["sgp/n8", "crossover/n8"]
    assert distinct_names([tmp_path / "a", tmp_path / "b"]) == ["a", "b"]


# ------------------------------------------------------------------------------------------ per-node CSVs
def write_csv(path, columns, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(columns)] + [",".join(str(row.get(c, "nan")) for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def node_rows(offset: float, live: list, dropped: list) -> list:
    return [{"epoch": e + 1, "train_loss": 2.0 / (e + 1) + offset, "val_loss": 2.1 / (e + 1),
             "test_loss": 2.2 / (e + 1), "train_acc": 0.3 + 0.1 * e, "val_acc": 0.25 + 0.1 * e + offset,
             "test_acc": 0.2 + 0.1 * e + offset, "comm_bytes_sent": 1000 * (e + 1), "comm_bytes_recv": 1000 * (e + 1),
             "comm_seconds": 0.1 * (e + 1), "wall_time_s": 3.0 * (e + 1), "live_neighbours": live[e],
             "dropped_neighbours": dropped[e]} for e in range(len(live))]


@pytest.fixture
def nodes_run(tmp_path):
    """A hand-written run directory of 3 nodes on a ring: node2 is lost after epoch 2, so node0
    and node1 drop it at epoch 3 (their live neighbours fall from 2 to 1); metrics per rank too."""
    from crossover_sgd.training.outputs import METRIC_COLUMNS, NODE_COLUMNS

    run_dir = tmp_path / "p2p-run"
    write_csv(run_dir / "nodes" / "node0.csv", NODE_COLUMNS, node_rows(0.0, [2, 2, 1, 1], [0, 0, 1, 1]))
    write_csv(run_dir / "nodes" / "node1.csv", NODE_COLUMNS, node_rows(0.02, [2, 2, 1, 1], [0, 0, 1, 1]))
    write_csv(run_dir / "nodes" / "node2.csv", NODE_COLUMNS, node_rows(0.04, [2, 2], [0, 0]))
    for rank, epochs in enumerate((4, 4, 2)):
        write_csv(run_dir / f"metrics_rank{rank}.csv", METRIC_COLUMNS,
                  [{"epoch": e + 1, "step": 10 * (e + 1), "train_loss": 1.0 / (e + 1), "val_loss": 1.1 / (e + 1),
                    "val_acc": 0.5 + 0.1 * e, "lr": 0.1} for e in range(epochs)])
    (run_dir / "config.json").write_text(json.dumps({"algorithm": "dsgd", "nproc": 3}))
    return run_dir


def test_node_csvs_are_drawn_one_line_per_node(nodes_run, tmp_path):
    from crossover_sgd.plotting import NODE_PANELS, neighbour_losses

    metrics = load_run(nodes_run)
    assert list(metrics.nodes) == ["node0", "node1", "node2"] and metrics.algorithm == "dsgd"
    assert metrics.nodes["node2"]["epoch"] == [1.0, 2.0]
    assert neighbour_losses(metrics.nodes["node0"]) == [(2, 1)]  # at the third evaluation, one dropped
    assert neighbour_losses(metrics.nodes["node2"]) == []
    written = plot_runs([nodes_run], tmp_path / "plots")
    assert [p.name for p in written] == [f"{q.name}.png" for q in QUANTITIES] + ["nodes.png"]
    data = (tmp_path / "plots" / "nodes.png").read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000
    assert [panel[0] for panel in NODE_PANELS] == ["test_acc", "val_acc", "train_loss", "live_neighbours"]


def test_neighbour_losses_count_drops_and_finished_neighbours():
    from crossover_sgd.plotting import neighbour_losses

    nan = float("nan")
    columns = {"epoch": [1, 2, 3, 4, 5], "live_neighbours": [3, 3, 2, nan, 1], "dropped_neighbours": [1, 1, 1, nan, 3]}
    # epoch 1: one dropped already; epoch 3: a neighbour finished (none dropped); epoch 5: two dropped
    assert neighbour_losses(columns) == [(0, 1), (2, 0), (4, 2)]
    assert neighbour_losses({"epoch": [1, 2]}) == []  # no neighbour columns: nothing to mark


def test_nodes_of_several_runs_and_a_run_of_nodes_only(nodes_run, tmp_path):
    only_nodes = tmp_path / "only" / "nodes-run"
    shutil.copytree(nodes_run / "nodes", only_nodes / "nodes")
    with open(only_nodes / "nodes" / "node3.csv", "w") as handle:  # a node that never evaluated
        handle.write("epoch,train_loss,test_acc\n")
    (only_nodes / "nodes" / "node0.json").write_text(json.dumps({"config": {"algorithm": "pdmm-sgd"}, "world_size": 4}))
    metrics = load_run(only_nodes)  # no metrics_rank*.csv, no config.json: a node's summary names the method
    assert metrics.ranks == [] and list(metrics.nodes)[-1] == "node3" and metrics.algorithm == "pdmm-sgd"
    assert plot_runs([only_nodes], tmp_path / "one") == [tmp_path / "one" / "nodes.png"]
    written = plot_runs([nodes_run, only_nodes], tmp_path / "both")
    names = [p.name for p in written]
    assert names == [f"{q.name}.png" for q in QUANTITIES] + ["nodes_p2p-run.png", "nodes_nodes-run.png"]
    for path in written:
        assert path.read_bytes().startswith(PNG_SIGNATURE) and path.stat().st_size > 5000, path


def test_a_run_without_nodes_draws_as_before(nodes_run, tmp_path):
    shutil.rmtree(nodes_run / "nodes")
    assert load_run(nodes_run).nodes == {}
    written = plot_runs([nodes_run], tmp_path / "plots")
    assert [p.name for p in written] == [f"{q.name}.png" for q in QUANTITIES]
    assert not (tmp_path / "plots" / "nodes.png").exists()


def test_node_plot_on_the_command_line_and_a_bad_node_csv(nodes_run, tmp_path):
    out = tmp_path / "cli"
    result = run([sys.executable, "-m", "crossover_sgd.plotting", str(nodes_run), "--out", str(out)], timeout=120)
    assert result.returncode == 0, result.stderr
    assert str(out / "nodes.png") in result.stdout.split()
    for content, words in ((b"\xff\xfe\x00garbage\n", "cannot be read as a CSV"),
                           (b"step,loss\n1,2\n", "no 'epoch' column")):
        (nodes_run / "nodes" / "node1.csv").write_bytes(content)
        with pytest.raises(ConfigError, match=words):
            load_run(nodes_run)
        bad_out = tmp_path / "bad"
        result = run([sys.executable, "-m", "crossover_sgd.plotting", str(nodes_run), "--out", str(bad_out)],
                     timeout=120)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("crossover-sgd: error:"), lines
        assert "node1.csv" in lines[0] and words in lines[0]
        assert not bad_out.exists()  # nothing half-written is left behind


# ------------------------------------------------------------------------------------------ parameter server
def assert_image(path, min_bytes: int = 20_000) -> None:
    """``path`` is a PNG that decodes (Pillow, matplotlib's own dependency) to a figure-sized image."""
    from PIL import Image

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > min_bytes, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and image.width > 600 and image.height > 400, (path, image.size)


@pytest.fixture(scope="module")
def ps_run(tmp_path_factory):
    """A real LOSP run: one server shard (rank 0) and two workers, one epoch of digits."""
    out = tmp_path_factory.mktemp("plot-ps") / "losp-run"
    result = cli("train", "--nproc", "3", "--algorithm", "losp", "--epochs", "1", "--out", str(out),
                 "--log-level", "WARNING", timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_server_and_worker_figures_of_a_real_ps_run(ps_run, tmp_path):
    metrics = load_run(ps_run)
    assert metrics.algorithm == "losp" and list(metrics.workers) == ["worker_rank1", "worker_rank2"]
    assert "(losp, 2 workers)" in metrics.label
    rounds = metrics.server["round"]
    assert rounds and rounds == sorted(rounds) and rounds[0] == 1
    assert all(0 <= a <= 1 for a in metrics.server["test_acc"])  # --ps-eval-every 1: every round evaluated
    assert metrics.server["elapsed_s"] == sorted(metrics.server["elapsed_s"])
    assert metrics.server_final["global_iterations"] == metrics.server["global_iterations"][-1]
    for columns in metrics.workers.values():
        assert columns["push"] == list(range(len(columns["push"]))) and columns["final"][-1] == 1
        assert all(k >= 0 for k in columns["k"]) and all(w <= l + 1e-6 for w, l in
                                                          zip(columns["wait_s"], columns["latency_s"]))
    written = plot_runs([ps_run], tmp_path / "plots")
    assert [p.name for p in written] == [f"{q.name}.png" for q in QUANTITIES] + ["server.png", "workers.png"]
    for path in written:
        assert_image(path, 5000)
    assert_image(tmp_path / "plots" / "server.png")
    assert_image(tmp_path / "plots" / "workers.png")


def test_ps_runs_side_by_side_and_beside_an_allreduce_run(ps_run, run_dir, tmp_path):
    second = tmp_path / "osp-run"
    shutil.copytree(ps_run, second)
    config = json.loads((second / "config.json").read_text())
    (second / "config.json").write_text(json.dumps({**config, "algorithm": "osp"}))
    written = plot_runs([ps_run, second, run_dir], tmp_path / "plots")
    names = [p.name for p in written]
    # one server figure for both PS runs (the all-reduce run has no server), one worker figure per PS run
    assert names == [f"{q.name}.png" for q in QUANTITIES] + ["server.png", "workers_losp-run.png",
                                                             "workers_osp-run.png"]
    for path in written:
        assert_image(path, 5000)
    assert_image(tmp_path / "plots" / "server.png")


def test_a_ps_run_of_records_only_and_on_the_command_line(ps_run, tmp_path):
    records = tmp_path / "records-only"
    shutil.copytree(ps_run / "ps", records / "ps")  # no metrics_rank*.csv, no config.json
    (records / "ps" / "shard0.json").unlink()  # no star at the end: the rows alone
    metrics = load_run(records)
    assert metrics.ranks == [] and metrics.server_final == {} and len(metrics.workers) == 2
    assert [p.name for p in plot_runs([records], tmp_path / "one")] == ["server.png", "workers.png"]
    out = tmp_path / "cli"
    result = run([sys.executable, "-m", "crossover_sgd.plotting", str(ps_run), "--out", str(out)], timeout=120)
    assert result.returncode == 0, result.stderr
    assert {str(out / "server.png"), str(out / "workers.png")} <= set(result.stdout.split())
    (records / "ps" / "worker_rank2.csv").write_text("epoch,k\n1,2\n")
    with pytest.raises(ConfigError, match="worker_rank2.csv is not a metrics CSV: it has no 'push' column"):
        load_run(records)
    result = run([sys.executable, "-m", "crossover_sgd.plotting", str(records), "--out", str(tmp_path / "bad")],
                 timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crossover-sgd: error:") and "worker_rank2.csv" in lines[0]
    assert not (tmp_path / "bad").exists()
