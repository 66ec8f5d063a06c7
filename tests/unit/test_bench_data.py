"""Without Debian's data packages the benchmarks that need them are skipped, saying what to install, instead of
crashing (`StopIteration` once); the others still run."""
import json

import pytest

import benchmarks.__main__ as bench
from benchmarks import common
from tests import helpers

INSTALL = "apt-get install tuxpaint-stamps-default dataset-fashion-mnist (or `make testdata` as root)"


@pytest.fixture
def no_debian_data(tmp_path, monkeypatch):
    monkeypatch.setattr(helpers, "TUXPAINT", tmp_path / "no-stamps")
    monkeypatch.setattr(common, "FASHION_MNIST", tmp_path / "no-fashion-mnist")


def test_the_data_loaders_name_the_package_and_how_to_install_it(no_debian_data):
    with pytest.raises(common.MissingData, match="needs Debian's tuxpaint-stamps-default") as e:
        common.tuxpaint_dataset()
    assert INSTALL in str(e.value)
    with pytest.raises(common.MissingData, match="needs Debian's dataset-fashion-mnist"):
        common.fashion_mnist_test()


def test_a_run_skips_those_benchmarks_and_says_what_to_install(no_debian_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "machine", lambda: {"cores": 2})
    out_json, out_md = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    assert bench.main(["--quick", "--only", "3", "--json", str(out_json), "--markdown", str(out_md)]) == 0
    skipped = json.loads(out_json.read_text())["benchmarks"]["incremental"]["skipped"]
    assert "tuxpaint-stamps-default" in skipped and INSTALL in skipped
    assert f"Skipped: {skipped}." in out_md.read_text()
    assert f"benchmark 3 skipped: {skipped}" in capsys.readouterr().err
