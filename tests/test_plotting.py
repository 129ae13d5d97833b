"""``crossover-sgd plot``: training curves from real run directories into non-empty PNG files;
one-line errors for a directory without metrics and for a missing matplotlib."""

from __future__ import annotations

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
