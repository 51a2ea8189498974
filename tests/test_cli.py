import json

import numpy as np
import pytest

from sfhkit.cli import main


def test_demo_writes_spectrum_history_and_figure(grid, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--redshift", "0.05", "--av", "0.2"]) == 0
    report = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    spectrum = np.loadtxt(report["spectrum"], delimiter=",")
    assert spectrum.shape[1] == 2 and np.all(np.isfinite(spectrum)) and np.all(spectrum[:, 1] > 0)
    assert (tmp_path / "model_spectrum.png").read_bytes()[:4] == b"\x89PNG"
    assert np.loadtxt(report["history"], delimiter=",").shape == (64, 3)


def test_bad_arguments_give_an_error_not_a_traceback(grid, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--av", "-1"]) == 2
    assert "av must be" in capsys.readouterr().err


def test_bench_forward_prints_json(capsys):
    assert main(["bench", "forward", "--min-seconds", "0.05", "--no-bagpipes"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["compressed_forward_per_s_batch128"] > 0 and out["grid_build_cold_s"] > 0


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "sfhkit" in capsys.readouterr().out
