import json

from posttrain.cli import main


def test_cold_start_build_command(tmp_path, capsys):
    out = tmp_path / "mix"
    assert main(["cold-start", "build", "--out", str(out), "--size", "12", "--seed", "3", "--eval-size", "1",
                 "--video-share", "0"]) == 0
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["size"] == 12 and "video" not in report["counts"]["by_bucket"]
    assert report["targets"]["counts"] == {"no_think": 6, "think": 4, "auto_think": 0, "agentic": 2}
    for bucket, target in report["targets"]["counts"].items():
        assert report["counts"]["by_bucket"].get(bucket, 0) == target
    assert (out / "data" / "train.parquet").exists() and (out / "report" / "token_lengths.png").exists()
    assert "report:" in capsys.readouterr().out
    assert main(["cold-start", "build", "--out", str(out), "--size", "12"]) == 2  # refuses to overwrite
    assert "already holds a mixture" in capsys.readouterr().err


def test_bad_settings_exit_with_a_message(tmp_path, capsys):
    assert main(["cold-start", "build", "--out", str(tmp_path / "x"), "--size", "5", "--flaw-rate", "2"]) == 2
    assert "flaw_rate" in capsys.readouterr().err


def test_cold_start_arithmetic_command(tmp_path, capsys):
    assert main(["cold-start", "arithmetic", "--out", str(tmp_path), "-n", "40", "--n-eval", "10",
                 "--carry-drop-rate", "1.0"]) == 0
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert len(train) == 40 and all(r["flawed"] == r["carry"] for r in train)
    assert len((tmp_path / "eval.jsonl").read_text().splitlines()) == 20
