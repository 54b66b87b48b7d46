"""benchmark.py runs and reports every measurement."""

import benchmark


def test_benchmark_reports_positive_timings(capsys):
    results = benchmark.main(["--device", "cpu", "--resnet", "18", "--ndepths", "4",
                              "--height", "128", "--width", "128", "--iters", "1"])
    assert set(results) >= {"estm_window_s", "joint_window_s", "train_step_s"}
    assert all(v > 0 for v in results.values())
    assert "ESTM window" in capsys.readouterr().out
