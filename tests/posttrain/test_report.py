"""`posttrain report`: every plot and the stage table, on a synthetic three-stage run (SFT, RL, eval)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from posttrain.cli import main
from posttrain.report import PLOTS


def acc(accuracy: float, think_rate: float | None = None) -> dict:
    out = {"accuracy": accuracy, "interval": [accuracy - 0.05, accuracy + 0.05], "n": 200}
    return out if think_rate is None else {**out, "think_rate": think_rate}


def write_jsonl(path: Path, rows: list[dict], tail: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def rl_metrics(step: int) -> dict:
    return {"step": step, "reward/mean": step / 30, "train/kl": 0.001 * step, "train/entropy": 1 - step / 60,
            "train/clip_frac_low": 0.01, "train/clip_frac_high": 0.02, "rollout/length_mean": 40 + step,
            "reward_pool/math/errors/timeout": int(step == 5), "reward_pool/math/errors/exception": 0,
            "reward_pool/reward/components/math": step / 30, "reward_pool/reward/components/format": 1.0,
            "timing/generate_s": 1.0, "timing/reward_s": 0.2, "timing/train_s": 1.5, "timing/sync_s": 0.1}


def trace(step: int, mode: str, sample: int) -> dict:
    completion = "<analysis>easy</analysis><answer>4</answer>" if mode == "auto_think" and sample else \
        "<think>2+2</think><answer>\\boxed{4}</answer>"
    return {"step": step, "mode": mode, "group": 0, "sample_index": sample, "prompt_id": f"{mode}-{step}",
            "completion": completion, "completion_tokens": 10 + sample, "reward": float(sample),
            "reward_error": "timeout" if (step, mode, sample) == (5, "think", 0) else None}


def make_run(root: Path) -> Path:
    run = root / "synthetic"
    write_jsonl(run / "00-sft" / "metrics.jsonl", [{"step": s, "loss": 2 / s} for s in range(1, 21)])
    (run / "00-sft" / "done.json").write_text(json.dumps({"stage": "00-sft", "steps": 20, "headline": "loss 0.100",
                                                          "seconds": 12.0}))
    evals = [{"step": s, "label": label, "think": acc(a), "no_think": acc(a - 0.1), "auto_think": acc(a, 0.6)}
             for s, label, a in [(0, "before", 0.5), (15, "step 15", 0.7), (30, "after", 0.9)]]
    metrics = [rl_metrics(s) for s in range(30)]
    metrics.insert(15, {"step": 14, "eval/accuracy/think": 0.7, "eval/think_rate": 0.6})
    write_jsonl(run / "01-rl" / "metrics.jsonl", metrics)
    write_jsonl(run / "01-rl" / "eval.jsonl", evals)
    write_jsonl(run / "01-rl" / "traces.jsonl", [trace(s, m, i) for s in range(30)
                                                  for m in ("think", "no_think", "auto_think") for i in (0, 1)],
                tail='{"step": 30, "mode": "thi')  # a crash mid-write
    (run / "01-rl" / "done.json").write_text(json.dumps({
        "stage": "01-rl", "eval_before": {k: v for k, v in evals[0].items() if isinstance(v, dict)},
        "eval_after": {k: v for k, v in evals[-1].items() if isinstance(v, dict)}, "headline": "think 50% -> 90%",
        "seconds": 95.0}))
    write_jsonl(run / "02-eval" / "eval.jsonl", [{"step": 0, "label": "02-eval", "think": acc(0.85)}])
    (run / "02-eval" / "done.json").write_text(json.dumps({"eval": {"think": acc(0.85)}, "headline": "think 85%"}))
    return run


def figures(html: str) -> dict[str, tuple[str, bytes]]:
    found = re.findall(r'<figure id="plot-(\w+)" data-has-data="(\w+)"><img alt="[^"]*" '
                       r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"></figure>', html)
    return {name: (has_data, base64.b64decode(data)) for name, has_data, data in found}


def test_report_has_every_plot_and_the_stage_table(tmp_path, capsys):
    run = make_run(tmp_path)
    assert main(["report", str(run)]) == 0
    path = run / "report" / "report.html"
    assert str(path) in capsys.readouterr().out
    html = path.read_text()
    plots = figures(html)
    assert set(plots) == set(PLOTS)
    for name, (has_data, png) in plots.items():
        assert has_data == ("false" if name == "distill_kl" else "true"), f"plot {name}"  # an RL run has no teacher
        assert png.startswith(b"\x89PNG") and (run / "report" / f"{name}.png").read_bytes() == png
    assert not re.search(r"(src|href)=\"?https?:", html)  # self-contained
    table = re.search(r'<table id="stage-table">(.*?)</table>', html, re.DOTALL).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.DOTALL)
    assert [re.search(r"<td>(.*?)</td>", r).group(1) for r in rows[1:]] == ["00-sft", "01-rl", "02-eval"]
    assert re.findall(r"<th>(.*?)</th>", rows[0]) == ["stage", "steps", "time", "final reward", "auto_think",
                                                      "no_think", "think", "think-rate (auto)", "summary"]
    rl = rows[2]
    assert "<b>90.0%</b>" in rl and "from 50.0% (+40.0)" in rl and "<b>80.0%</b>" in rl and "60.0%" in rl
    assert "<td>30</td>" in rl and "95 s" in rl and "think 50% -&gt; 90%" in rl
    assert "<b>85.0%</b>" in rows[3] and "loss 0.100" in rows[1]


def test_run_without_rl_still_gets_every_section(tmp_path):
    from posttrain.report import build_report

    run = make_run(tmp_path)
    for stage in ("01-rl", "02-eval"):
        for file in (run / stage).iterdir():
            file.unlink()
        (run / stage).rmdir()
    plots = figures(build_report(run).read_text())
    assert set(plots) == set(PLOTS) and {has for has, _ in plots.values()} == {"false"}


def test_suite_by_stage_is_one_table_and_one_plot(tmp_path):
    """The suite's numbers come from `suite_summary` on real answers; the table puts each metric by stage."""
    from posttrain.evaluation import Answer, suite_summary
    from posttrain.report import build_report

    def answers(correct_think: int) -> list[Answer]:
        out = [Answer("think", "counting", float(i < correct_think), True, True, 0.0) for i in range(4)]
        out += [Answer("no_think", "grounding", 0.6, False, i > 0, 0.5 * (i == 0)) for i in range(2)]
        out += [Answer("auto_think", "arithmetic", 1.0, i < 2, True, 0.0, "hard") for i in range(3)]
        out.append(Answer("auto_think", "arithmetic", 0.0, False, True, 0.0, "easy"))
        return out

    run = tmp_path / "suite-run"
    for stage, correct in (("00-pretrained", 0), ("01-round-1", 3)):
        write_jsonl(run / stage / "eval.jsonl", [{"step": 0, "label": stage, "think": acc(correct / 4),
                                                 "suite": suite_summary(answers(correct))}])
        (run / stage / "done.json").write_text(json.dumps({"eval": {"think": acc(correct / 4)}}))
    page = build_report(run).read_text()
    table = re.search(r'<table id="suite-table">(.*?)</table>', page, re.DOTALL).group(1)
    rows = {re.search(r"<td>(.*?)</td>", r).group(1): re.findall(r"<td>(.*?)</td>", r)[1:]
            for r in re.findall(r"<tr>(.*?)</tr>", table, re.DOTALL)[1:]}
    assert rows["task · counting"][0].startswith("<b>0.0%</b>") and rows["task · counting"][1].startswith("<b>75.0%")
    assert "mean score 0.600" in rows["task · grounding"][0]  # IoU 0.6 passes (>= 0.5) and is shown as a score
    assert rows["format errors"][0].startswith("<b>10.0%</b>")  # 1 of 10
    assert rows["repetitive answers"][0].startswith("<b>10.0%</b>")  # rate 0.5 > 0.2
    assert rows["auto_think hard · chose to think"][1].startswith("<b>66.7%</b>")
    assert rows["auto_think easy · accuracy when thinking"][0] == "—"  # no easy answer reasoned
    assert '<figure id="plot-suite">' in page and (run / "report" / "suite.png").read_bytes().startswith(b"\x89PNG")


def test_a_distill_stage_plots_its_kl_to_each_teacher(tmp_path):
    from posttrain.report import build_report

    run = tmp_path / "distill-run"
    metrics = [{"step": s, "reward/mean": 0.5, "distill/kl/base": 1 / (s + 1), "distill/samples/base": 2.0,
                **({"distill/kl/thinker": 2 / (s + 1), "distill/samples/thinker": 2.0} if s % 2 else {})}
               for s in range(10)]  # the thinker has samples every other step only
    write_jsonl(run / "01-distill" / "metrics.jsonl", metrics)
    plots = figures(build_report(run).read_text())
    assert list(PLOTS).index("distill_kl") == list(PLOTS).index("accuracy") + 1  # beside held-out accuracy
    has_data, png = plots["distill_kl"]
    assert has_data == "true" and (run / "report" / "distill_kl.png").read_bytes() == png


def test_the_kl_plot_draws_one_line_per_teacher():
    from matplotlib.figure import Figure

    from posttrain.report import Axis, Stage, plot_distill_kl

    stage = Stage("01-distill", [{"step": s, "distill/kl/base": 0.5, "distill/kl/thinker": 0.25 * s}
                                 for s in range(3)], [], None, None)
    ax = Figure().add_subplot()
    plot_distill_kl(ax, [stage], Axis([stage]))
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.lines}
    assert lines == {"base": [0.5, 0.5, 0.5], "thinker": [0.0, 0.25, 0.5]}
