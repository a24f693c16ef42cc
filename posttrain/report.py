"""`posttrain report RUN`: a self-contained HTML report of a run, with matplotlib PNG plots and a table of the
held-out metrics at the end of each stage.

Reads only what stages wrote (`metrics.jsonl`, `eval.jsonl`, `done.json`, `traces.jsonl`); per-mode reward,
length and the auto_think rollout think-rate come from the traces (metrics hold batch means only). Stages that
have step metrics are laid end to end on one step axis with their boundaries marked. A plot whose metric the
run did not record still appears, saying so, so every report has the same sections. Knows nothing about
training.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from posttrain.viewer.run import resolve_run, stage_dirs
from posttrain.viewer.stats import TraceStats, stream_records


@dataclass
class Stage:
    name: str
    metrics: list[dict]
    evals: list[dict]
    done: dict | None
    traces: TraceStats | None

    @classmethod
    def load(cls, path: Path) -> Stage:
        done = json.loads((path / "done.json").read_text()) if (path / "done.json").exists() else None
        traces = TraceStats.read(path / "traces.jsonl") if (path / "traces.jsonl").exists() else None
        return cls(path.name, _read_jsonl(path / "metrics.jsonl"), _read_jsonl(path / "eval.jsonl"), done, traces)

    @property
    def stepped(self) -> bool:
        """Has per-step RL metrics (SFT stages log their loss only)."""
        return bool(self.traces and self.traces.steps) or bool(self.evals) or bool(self.series("reward/mean")[0])

    @property
    def last_step(self) -> int:
        steps = [m.get("step") for m in self.metrics + self.evals] + list(self.traces.steps if self.traces else [])
        return int(max((s for s in steps if isinstance(s, (int, float))), default=0))

    def series(self, key: str) -> tuple[list[float], list[float]]:
        points = [(m["step"], m[key]) for m in self.metrics if _finite(m.get(key)) and _finite(m.get("step"))]
        return [p[0] for p in points], [p[1] for p in points]

    def keys(self, prefix: str) -> list[str]:
        return sorted({k for m in self.metrics for k in m if k.startswith(prefix)})

    def final_eval(self) -> tuple[dict, dict]:
        """(held-out summary at the end of the stage, at its start) per mode; empty when not evaluated."""
        done = self.done or {}
        after = done.get("eval_after") or done.get("eval") or (self.evals[-1] if self.evals else {})
        before = done.get("eval_before") or (self.evals[0] if len(self.evals) > 1 else {})
        return _modes(after), _modes(before)  # pre-training stages' per-task losses have no accuracy


def _read_jsonl(path: Path) -> list[dict]:
    return list(stream_records(path)) if path.exists() else []


def _modes(record: dict) -> dict:
    return {k: v for k, v in record.items() if isinstance(v, dict) and "accuracy" in v}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------------------------ plotting
class Axis:
    """Stages with step metrics, end to end on one step axis; colours fixed per series label."""

    def __init__(self, stages: list[Stage]):
        self.offsets, offset = {}, 0
        for stage in stages:
            if stage.stepped:
                self.offsets[stage.name] = offset
                offset += stage.last_step + 1
        self.colors: dict[str, str] = {}
        self.labelled: set[str] = set()

    def line(self, ax, stage: Stage, steps, values, label: str, raw: bool = True, marker: str | None = None) -> None:
        if not steps:
            return
        x = [self.offsets.get(stage.name, 0) + s for s in steps]
        color = self.colors.setdefault(label, f"C{len(self.colors) % 10}")
        legend = label if label not in self.labelled else None
        self.labelled.add(label)
        if raw and len(values) > 20:
            ax.plot(x, values, color=color, alpha=0.25, linewidth=0.8)
            values = smooth(values)
        ax.plot(x, values, color=color, label=legend, linewidth=1.6, marker=marker, markersize=4)

    def finish(self, ax, ylabel: str) -> None:
        if len(self.offsets) > 1:
            for name, offset in self.offsets.items():
                ax.axvline(offset, color="grey", linestyle="--", linewidth=0.7)
                ax.text(offset, 1.0, f" {name}", transform=ax.get_xaxis_transform(), va="top", fontsize=7)
        ax.set_xlabel("step" if len(self.offsets) <= 1 else "step (stages end to end)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if self.labelled:
            ax.legend(fontsize=8, loc="best")


def smooth(values: list[float]) -> list[float]:
    """Trailing moving average over ~2% of the points (at least 1).

    >>> smooth([0.0, 2.0, 4.0] * 34)[:4]  # 102 points: a window of 2
    [0.0, 1.0, 3.0, 2.0]
    """
    window = max(1, len(values) // 50)
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_reward(ax, stages, axis) -> None:
    for stage in stages:
        if stage.traces and stage.traces.reward:
            for mode, per_step in sorted(stage.traces.reward.items()):
                axis.line(ax, stage, *TraceStats.series(per_step), mode)
        else:
            axis.line(ax, stage, *stage.series("reward/mean"), "all modes")


def plot_reward_components(ax, stages, axis) -> None:
    """Each component's mean before weighting (math, format, a trained reward model...), as the pool logs it."""
    for stage in stages:
        for key in stage.keys("reward_pool/"):
            if "/components/" in key:
                axis.line(ax, stage, *stage.series(key), key.rsplit("/components/", 1)[1])


def plot_accuracy(ax, stages, axis) -> None:
    for stage in stages:
        for mode in sorted({m for e in stage.evals for m in _modes(e)}):
            points = [(e["step"], e[mode]) for e in stage.evals if mode in e]
            steps = [axis.offsets.get(stage.name, 0) + s for s, _ in points]
            axis.line(ax, stage, [s for s, _ in points], [v["accuracy"] for _, v in points], mode, raw=False,
                      marker="o")
            low = [v.get("interval", [v["accuracy"]] * 2)[0] for _, v in points]
            high = [v.get("interval", [v["accuracy"]] * 2)[1] for _, v in points]
            ax.fill_between(steps, low, high, color=axis.colors[mode], alpha=0.15)
    ax.set_ylim(0, 1.02)


def plot_distill_kl(ax, stages, axis) -> None:
    """A distill stage's reverse KL to each teacher (`distill/kl/<teacher>`), one line per teacher: a teacher whose
    line stays flat is one the student is not learning from."""
    for stage in stages:
        for key in stage.keys("distill/kl/"):
            axis.line(ax, stage, *stage.series(key), key.removeprefix("distill/kl/"))


def plot_length(ax, stages, axis) -> None:
    for stage in stages:
        if stage.traces and stage.traces.length:
            for mode, per_step in sorted(stage.traces.length.items()):
                axis.line(ax, stage, *TraceStats.series(per_step), mode)
        else:
            axis.line(ax, stage, *stage.series("rollout/length_mean"), "mean")


def keyed(*keys: str):
    """A plot of metrics by name, one line per metric."""
    def plot(ax, stages, axis) -> None:
        for stage in stages:
            for key in keys:
                axis.line(ax, stage, *stage.series(key), key.removeprefix("train/"))
    return plot


def plot_think_rate(ax, stages, axis) -> None:
    for stage in stages:
        if stage.traces:
            axis.line(ax, stage, *TraceStats.series(stage.traces.auto_reasoned), "auto_think rollouts")
        points = [(e["step"], e["auto_think"]["think_rate"]) for e in stage.evals
                  if "think_rate" in e.get("auto_think", {})]
        axis.line(ax, stage, [s for s, _ in points], [v for _, v in points], "held-out (eval)", raw=False,
                  marker="o")
    ax.set_ylim(-0.02, 1.02)


def plot_reward_errors(ax, stages, axis) -> None:
    for stage in stages:
        kinds = {k.rsplit("/", 1)[1] for k in stage.keys("reward_pool/") if "/errors/" in k}
        per_kind = {kind: _summed(stage, kind) for kind in sorted(kinds)}
        if not per_kind and stage.traces:
            per_kind = {kind: (sorted(c), [c[s] for s in sorted(c)]) for kind, c in stage.traces.errors.items()}
        for kind, (steps, counts) in per_kind.items():
            axis.line(ax, stage, steps, _cumulative(counts), kind, raw=False)


def _summed(stage: Stage, kind: str) -> tuple[list, list]:
    """Errors of one kind per step, summed over the run's rewards (`reward_pool/<reward>/errors/<kind>`)."""
    totals: dict[float, float] = {}
    for key in stage.keys("reward_pool/"):
        if key.endswith(f"/errors/{kind}"):
            for step, value in zip(*stage.series(key)):
                totals[step] = totals.get(step, 0) + value
    return sorted(totals), [totals[s] for s in sorted(totals)]


def _cumulative(values: list[float]) -> list[float]:
    out, total = [], 0.0
    for value in values:
        total += value
        out.append(total)
    return out


def plot_timing(ax, stages, axis) -> None:
    for stage in stages:
        phases = [k for k in stage.keys("timing/") if k.endswith("_s")]
        steps = sorted({s for k in phases for s in stage.series(k)[0]})
        if not steps:
            continue
        stack = [smooth([dict(zip(*stage.series(k))).get(s, 0.0) for s in steps]) for k in phases]
        share = [sum(v) / (sum(map(sum, stack)) or 1) for v in stack]
        names = [k[len("timing/"):-len("_s")] for k in phases]
        labels = [f"{n} {100 * f:.0f}%" if n not in axis.labelled else None for n, f in zip(names, share)]
        colors = [axis.colors.setdefault(n, f"C{len(axis.colors) % 10}") for n in names]
        axis.labelled.update(names)
        ax.stackplot([axis.offsets.get(stage.name, 0) + s for s in steps], *stack, labels=labels, colors=colors)


# name: (title, y label, plot function)
PLOTS = {
    "reward": ("Rollout reward per mode", "mean reward", plot_reward),
    "reward_components": ("Reward components (unweighted means)", "mean score", plot_reward_components),
    "accuracy": ("Held-out accuracy per mode (95% interval)", "accuracy", plot_accuracy),
    "distill_kl": ("Distillation: KL to each teacher (log p_student − log p_teacher)", "KL (nats/token)",
                   plot_distill_kl),
    "length": ("Response length per mode", "completion tokens", plot_length),
    "kl": ("KL to the reference policy", "KL", keyed("train/kl")),
    "entropy": ("Policy entropy", "entropy (nats/token)", keyed("train/entropy")),
    "clip_fraction": ("Clip fraction", "fraction of tokens", keyed("train/clip_frac_low", "train/clip_frac_high",
                                                                   "train/clip_frac")),
    "think_rate": ("Think-rate in auto_think mode", "fraction that reasoned", plot_think_rate),
    "reward_errors": ("Reward errors by kind (cumulative)", "errors", plot_reward_errors),
    "timing": ("Time per step by phase", "seconds", plot_timing),
}


def render_plot(name: str, stages: list[Stage], path: Path) -> bool:
    """Draw one plot to `path`; returns whether the run had data for it."""
    title, ylabel, function = PLOTS[name]
    figure = Figure(figsize=(7.5, 3.4), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    axis = Axis(stages)
    function(ax, stages, axis)
    has_data = bool(ax.lines or ax.collections)
    if has_data:
        axis.finish(ax, ylabel)
    else:
        ax.text(0.5, 0.5, "not recorded in this run", ha="center", va="center", color="grey",
                transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(title, fontsize=11)
    figure.savefig(path)
    return has_data


# ------------------------------------------------------------------------------------------------ the suite by stage
@dataclass
class SuitePoint:
    """One run of the held-out suite: after an eval stage, or before/after an RL stage."""

    label: str
    modes: dict
    suite: dict


def suite_points(stages: list[Stage]) -> list[SuitePoint]:
    points = []
    for stage in stages:
        records = [e for e in stage.evals if e.get("suite")]
        for record in records:
            label = stage.name if len(records) == 1 else f"{stage.name}: {record.get('label', record.get('step'))}"
            points.append(SuitePoint(label, _modes(record), record["suite"]))
    return points


def suite_rows(points: list[SuitePoint]) -> list[tuple[str, list[dict | None]]]:
    """(metric, one {rate|accuracy, interval, n, score?} or None per point), in the table's order."""
    def union(get) -> list[str]:
        return sorted({k for p in points for k in get(p)})

    rows = [(f"accuracy · {m}", [p.modes.get(m) for p in points]) for m in union(lambda p: p.modes)]
    rows += [(f"task · {t}", [p.suite["tasks"].get(t) for p in points]) for t in union(lambda p: p.suite["tasks"])]
    rows += [("format errors", [p.suite["format_errors"] for p in points]),
             ("repetitive answers", [p.suite["repetitive"] for p in points])]
    for difficulty in union(lambda p: p.suite.get("auto_think", {})):
        for key, name in (("think", "chose to think"), ("accuracy_think", "accuracy when thinking"),
                          ("accuracy_direct", "accuracy when answering directly")):
            rows.append((f"auto_think {difficulty} · {name}",
                         [p.suite.get("auto_think", {}).get(difficulty, {}).get(key) for p in points]))
    return rows


def _value(cell: dict) -> float:
    return cell["accuracy"] if "accuracy" in cell else cell["rate"]


def suite_table(points: list[SuitePoint]) -> str:
    if not points:
        return '<p class="dim" id="suite-table">no stage ran the held-out suite (an eval stage or an RL stage)</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["held-out", *[p.label for p in points]])
    body = []
    for name, cells in suite_rows(points):
        tds = "".join(f"<td>{_suite_cell(c)}</td>" for c in cells)
        body.append(f"<tr><td>{html.escape(name)}</td>{tds}</tr>")
    return f'<table id="suite-table"><tr>{head}</tr>{"".join(body)}</table>'


def _suite_cell(cell: dict | None) -> str:
    if not cell or not cell.get("n"):
        return "—"
    low, high = cell.get("interval", [math.nan, math.nan])
    text = f"<b>{100 * _value(cell):.1f}%</b> <small>[{100 * low:.0f}, {100 * high:.0f}] n={cell['n']}"
    if "score" in cell and abs(cell["score"] - _value(cell)) > 1e-9:  # a graded task (IoU): its mean score too
        text += f" · mean score {cell['score']:.3f}"
    return text + "</small>"


def _suite_panel(name: str) -> int | None:
    """Which panel of the suite plot a table row goes to: modes, tasks, rates (None: the auto_think accuracies
    per choice, too few answers to plot)."""
    if name.startswith("accuracy ·"):
        return 0
    if name.startswith("task ·"):
        return 1
    return None if "accuracy" in name else 2


def render_suite_plot(points: list[SuitePoint], path: Path) -> bool:
    """Accuracy per mode, per task, and the format / repetition / think rates, by stage (nothing drawn when
    no stage ran the suite)."""
    if not points:
        return False
    figure = Figure(figsize=(12, 3.8), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3, sharey=True)
    x = list(range(len(points)))
    for name, cells in suite_rows(points):
        panel = _suite_panel(name)
        if panel is None:
            continue
        values = [(cell.get("score", _value(cell)) if cell and cell.get("n") else math.nan) for cell in cells]
        axes[panel].plot(x, values, marker="o", markersize=4, label=name.split("· ", 1)[-1] if panel < 2 else name)
    for ax, title in zip(axes, ("accuracy per mode", "per task (mean score)", "rates")):
        ax.set_title(title, fontsize=10)
        ax.set_xticks(x, [p.label for p in points], rotation=30, ha="right", fontsize=7)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    figure.suptitle("Held-out suite by stage", fontsize=11)
    figure.savefig(path)
    return True


# ------------------------------------------------------------------------------------------------ the report
class Markup(str):
    """Cell text that is already HTML."""


def stage_table(stages: list[Stage]) -> str:
    """HTML table: one row per stage with its held-out accuracy per mode at its end (and change over it)."""
    evals = {stage.name: stage.final_eval() for stage in stages}
    modes = sorted({m for after, before in evals.values() for m in {**before, **after}})
    head = "".join(f"<th>{html.escape(m)}</th>" for m in ["stage", "steps", "time", "final reward", *modes,
                                                          "think-rate (auto)", "summary"])
    rows = []
    for stage in stages:
        after, before = evals[stage.name]
        done = stage.done or {}
        steps = done.get("steps", len(stage.series("reward/mean")[0]) or "")
        seconds = (f"{done['seconds']:.0f} s" if _finite(done.get("seconds")) else
                   "—" if stage.done is not None else "not finished")
        rewards = stage.series("reward/mean")[1]
        final = f"{sum(rewards[-10:]) / len(rewards[-10:]):.3f}" if rewards else "—"
        think = after.get("auto_think", {}).get("think_rate")
        cells = [stage.name, steps, seconds, final, *[_accuracy_cell(after.get(m), before.get(m)) for m in modes],
                 "—" if think is None else f"{100 * think:.1f}%", done.get("headline", "")]
        rows.append("<tr>" + "".join(f"<td>{c if isinstance(c, Markup) else html.escape(str(c))}</td>"
                                     for c in cells) + "</tr>")
    return f'<table id="stage-table"><tr>{head}</tr>{"".join(rows)}</table>'


def _accuracy_cell(after: dict | None, before: dict | None) -> str:
    if not after:
        return "—"
    low, high = after.get("interval", [math.nan, math.nan])
    cell = (f"<b>{100 * after['accuracy']:.1f}%</b> "
            f"<small>[{100 * low:.1f}, {100 * high:.1f}] n={after.get('n')}</small>")
    if before:
        change = 100 * (after["accuracy"] - before["accuracy"])
        cell += f"<br><small>from {100 * before['accuracy']:.1f}% ({change:+.1f})</small>"
    return Markup(cell)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; padding: 0 16px; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; }} .dim {{ color: #777; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ddd; padding: 4px 8px; text-align: left;
vertical-align: top; }} th {{ background: #f4f4f4; }} td:nth-child(-n+4) {{ white-space: nowrap; }}
.plots {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 12px; }}
figure {{ margin: 0; }} figure img {{ width: 100%; border: 1px solid #eee; }}
</style></head><body>
<h1>{title}</h1>
<p class="dim">{subtitle}</p>
<h2>Held-out metrics at the end of each stage</h2>
{table}
<h2>The held-out suite by stage (95% intervals)</h2>
{suite_table}
{suite_figure}
<h2>Training curves</h2>
<div class="plots">{figures}</div>
</body></html>
"""


def build_report(run: str | Path, out_dir: Path | None = None) -> Path:
    """Write `report.html` (PNGs embedded) and the PNGs themselves; returns the HTML path."""
    run_dir = resolve_run(run)
    stages = [Stage.load(path) for path in stage_dirs(run_dir)]
    if not stages:
        raise FileNotFoundError(f"{run_dir} has no stage directories (NN-name/ with metrics, traces or done.json)")
    out_dir = out_dir or run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for name in PLOTS:
        png = out_dir / f"{name}.png"
        has_data = render_plot(name, stages, png)
        data = base64.b64encode(png.read_bytes()).decode()
        figures.append(f'<figure id="plot-{name}" data-has-data="{str(has_data).lower()}">'
                       f'<img alt="{html.escape(PLOTS[name][0])}" src="data:image/png;base64,{data}"></figure>')
    points = suite_points(stages)
    suite_figure = ""
    if render_suite_plot(points, out_dir / "suite.png"):
        data = base64.b64encode((out_dir / "suite.png").read_bytes()).decode()
        suite_figure = (f'<figure id="plot-suite"><img alt="Held-out suite by stage" '
                        f'src="data:image/png;base64,{data}"></figure>')
    subtitle = f"{run_dir.resolve()} · stages: {', '.join(s.name for s in stages)}"
    page = PAGE.format(title=html.escape(f"run report · {run_dir.name}"), subtitle=html.escape(subtitle),
                       table=stage_table(stages), suite_table=suite_table(points), suite_figure=suite_figure,
                       figures="\n".join(figures))
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
