"""Markdown tables (and optional PNG plots) of experiment results: ``structkd report results/``.

Reads ``RESULTS/NAME/experiment.json`` and ``RESULTS/NAME/RUN_ID/{metrics,run}.json`` as written
by :mod:`structkd.lab.experiment` (through :mod:`structkd.lab.results`). One table per
experiment and student case (only the training-cost table for an experiment file with
``report: cost``): rows are the teacher,
the student without KD and each KD method (planned runs without results are marked *not run*);
scores are mean ± sample standard deviation over seeds. A hand-written
``RESULTS/NAME/NOTES.md`` (what was cut, analysis) is copied under the experiment's tables, and
``RESULTS/NOTES.md`` (an overview) above all experiments, so the whole Markdown file can be
regenerated at any time.

Plots need matplotlib (``pip install matplotlib``); without it the tables are still written and the
report says the plots were skipped.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from structkd.io import atomic_write_json
from structkd.lab import results as recorded
from structkd.lab.results import LABELS, load_results
from structkd.lab.summary import case_tests, pareto_plot, significance_table, summary_rows

__all__ = ["load_results", "render_experiment", "write_report"]


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def render_experiment(
    name: str,
    meta: dict[str, Any],
    runs: dict[str, dict[str, Any]],
    measured: dict[str, Any] | None = None,
    tests: dict[tuple[str, str], dict[str, Any]] | None = None,
) -> str:
    """The Markdown section of one experiment: a table per student case (with its paired
    significance tests where runs recorded per-sentence test counts; ``tests`` as
    :func:`structkd.lab.summary.case_tests` returns them, computed here when None), the speed table
    (when ``speed.json`` was written by ``structkd speed``) and the training-cost table."""
    spec = recorded.recorded_spec(meta)
    task = recorded.reported_task(runs)
    keys = task.score_metrics
    rows = recorded.rows(meta, spec, runs)
    if tests is None:
        tests = case_tests(meta, runs) if any("counts" in r for r in runs.values()) else {}
    # teachers trained outside the grid record no commit or thread count
    commits = sorted({r["run"]["commit"] for r in runs.values() if r["run"].get("commit")})
    data = sorted({d for r in runs.values() for d in r["run"].get("data", [])})
    threads = ", ".join(
        sorted({str(r["run"]["threads"]) for r in runs.values() if r["run"].get("threads")})
    )
    command = (
        f"structkd experiment {meta.get('file', '?')} --data-root {meta.get('data_root', '?')}"
    )
    lines = [
        f"## {name}",
        "",
        f"- command: `{command}`; one row's run: the same with `--only RUN_ID` (run ids "
        f"`GROUP-METHOD-sSEED`, e.g. `case2a-structural-s1`; each run's exact command is in "
        f"`results/{name}/RUN_ID/run.json`)",
        f"- commit: {', '.join(f'`{c}`' for c in commits) or '–'}",
        f"- machine: {meta.get('machine', '–')}; {threads} thread(s) per run",
        f"- data: {', '.join(f'`{d}`' for d in data) or '–'}",
        "",
    ]
    cols = [f"{split} {task.metric_labels[k]}" for split in ("dev", "test") for k in keys]
    # scores on the experiment's also_evaluate corpora (e.g. a source language's dev set)
    extra = sorted({label for r in runs.values() for label in r.get("also", {})})
    metric_name = task.metric_labels[keys[-1]]
    head = [
        "model",
        *cols,
        *(f"{label} {metric_name}" for label in extra),
        "n",
        "tokens/s",
        "speed ×T",
        f"test {metric_name} / T",
        "params",
    ]
    teachers = {r["group"]: r for r in rows if r["role"] == "teacher"}
    cases = sorted({r["group"] for r in rows if r["role"] == "student"}, key=str)
    if spec.report == "cost":  # a timing grid: its scores mean nothing
        return "\n".join([*lines, *_cost_table(rows)])
    main_key = f"test_{keys[-1]}"
    for case in cases:
        members = [r for r in rows if r["role"] == "student" and r["group"] == case]
        teacher_ids = recorded.case_teachers(spec, rows, case)
        teacher_rows = [
            teachers[t[len("teacher-") :]]
            for t in sorted(teacher_ids)
            if t[len("teacher-") :] in teachers
        ] or list(teachers.values())
        t_speed = recorded.mean(
            [x["run"]["tokens_per_second"] for t in teacher_rows for x in t["runs"]]
        )
        t_score = recorded.mean(
            [
                recorded.scores(keys, x["metrics"]).get(main_key, 0.0)
                for t in teacher_rows
                for x in t["runs"]
            ]
        )
        lines += [f"### {name} / {case}", "", "| " + " | ".join(head) + " |"]
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
        for row in [*teacher_rows, *members]:
            label = (
                f"teacher ({row['group']})"
                if row["role"] == "teacher"
                else LABELS.get(row["method"], row["method"])
            )
            if not row["runs"]:
                lines.append(
                    f"| {label} | " + " | ".join(["not run"] + [""] * (len(head) - 2)) + " |"
                )
                continue
            scores = [recorded.scores(keys, x["metrics"]) for x in row["runs"]]
            speed = recorded.mean([x["run"]["tokens_per_second"] for x in row["runs"]])
            score = recorded.mean([s.get(main_key, 0.0) for s in scores])
            cells = [_mean_std([s[c] for s in scores if c in s]) for c in _col_keys(keys)]
            cells += [
                _mean_std([x["also"][a]["score"] for x in row["runs"] if a in x.get("also", {})])
                for a in extra
            ]
            lines.append(
                "| "
                + " | ".join(
                    [
                        label,
                        *cells,
                        str(len(row["runs"])),
                        f"{speed:,.0f}",
                        f"{speed / t_speed:.2f}" if t_speed else "–",
                        f"{score / t_score:.3f}" if t_score else "–",
                        f"{row['runs'][0]['run']['parameters']:,}",
                    ]
                )
                + " |"
            )
        lines.append("")
        if tests:
            lines += significance_table(meta, case, tests, metric_name)
    lines.append(
        "Scores are mean ± sample standard deviation over the n seeds; tokens/s is the test-set "
        "prediction speed of each run (same machine, shared with other jobs: a noisy figure); "
        "speed ×T and the score ratio are relative to the teacher."
    )
    lines.append("")
    if extra:
        given = spec.also_evaluate
        named = ", ".join(f"{a}: `{given.get(a, '?')}`" for a in extra)
        lines += [f"Also scored on (students only; `also_evaluate`): {named}.", ""]
    if measured:
        lines += _speed_table(meta, runs, measured)
    lines += _cost_table(rows)
    return "\n".join(lines)


def _speed_table(
    meta: dict[str, Any], runs: dict[str, dict[str, Any]], speed: dict[str, Any]
) -> list[str]:
    """Teachers and one student per case measured alone (``speed.json``), with each student's
    speed and score ratios against its teacher (w/o KD and with Structural KD)."""
    keys = recorded.score_metrics(runs)
    main_key = f"test_{keys[-1]}"
    spec = recorded.recorded_spec(meta)
    rows = recorded.rows(meta, spec, runs)

    def runs_of(role: str, group: str, method: str) -> list[dict[str, Any]]:
        key = (role, group, method)
        return [x for r in rows if (r["role"], r["group"], r["method"]) == key for x in r["runs"]]

    def score(role: str, group: str, method: str) -> float | None:
        values = [
            recorded.scores(keys, x["metrics"]).get(main_key) for x in runs_of(role, group, method)
        ]
        clean = [v for v in values if v is not None]
        return statistics.mean(clean) if clean else None

    def kd_parameters(group: str) -> int | None:
        """Parameters of the case's Structural KD students (the largest, if seeds differ)."""
        counts = [x["run"].get("parameters") for x in runs_of("student", group, "structural")]
        return max((c for c in counts if c), default=None)

    metric = recorded.score_label(runs)
    lines = [
        f"Prediction speed, measured alone: `{speed.get('command', '?')}` "
        f"({speed.get('threads')} threads, batch {speed.get('batch_size')}, "
        f"{speed.get('machine')}). A student's speed and parameters are those of its first run "
        "(without KD); a distilled student has the same layers, but its word table also holds "
        "the words of the unlabeled text (params KD), which costs no time per token.",
        "",
        f"| model | params | params KD | tokens/s | speed ×T | test {metric} (w/o KD) | ×T "
        f"| test {metric} (structural KD) | ×T |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    models = speed.get("models", {})
    for run_id, m in models.items():
        if not run_id.startswith("teacher-"):
            continue
        t_score = score("teacher", run_id[len("teacher-") :], "teacher")
        lines.append(
            f"| {run_id} | {m['parameters']:,} | | {m['tokens_per_second']:,.0f} | 1.00 | "
            f"{_fmt(t_score)} | | | |"
        )
    for run_id, m in models.items():
        if run_id.startswith("teacher-"):
            continue
        group = recorded.group_of(run_id, spec, runs)
        teacher = min(recorded.case_teachers(spec, rows, group), default=None)
        t = models.get(teacher or "", {})
        t_score = score("teacher", (teacher or "")[len("teacher-") :], "teacher")
        plain, kd = score("student", group, "none"), score("student", group, "structural")
        ratio = m["tokens_per_second"] / t["tokens_per_second"] if t else None
        distilled = kd_parameters(group)
        lines.append(
            f"| student {group} ({teacher or '?'}) | {m['parameters']:,} | "
            f"{'–' if distilled is None else f'{distilled:,}'} | "
            f"{m['tokens_per_second']:,.0f} | {_fmt(ratio)} | {_fmt(plain)} | "
            f"{_fmt(plain / t_score if plain and t_score else None, 3)} | {_fmt(kd)} | "
            f"{_fmt(kd / t_score if kd and t_score else None, 3)} |"
        )
    return [*lines, ""]


def _cost_table(rows: list[dict[str, Any]]) -> list[str]:
    """Seconds per training epoch of each student method (median over epochs, mean over seeds)
    against the same case without KD; runs recorded before epoch timing existed are left out."""
    lines = [
        "Training cost: seconds per epoch (median over epochs, mean over seeds; updates only, "
        "no evaluation) and milliseconds per batch of 32 sentences. Without KD an epoch covers "
        "the labeled sentences only; with KD also the unlabeled ones. Structural KD reads the "
        "teacher's marginals cached before training. Top-1/Top-K/Top-WK runs from commit "
        "302c741 on read the teacher's k-best lists cached likewise, and token and posterior KD "
        "runs from commit d57f8d9 on their per-token targets; earlier runs of "
        "these methods, and sub-structure MSE, read the teacher's cached encoder features and "
        "ran its head (and decoder) per batch (runs from before the feature cache ran the whole "
        "teacher on every batch). Building the caches is not included. In a grid, runs share "
        "the CPU with other runs: a noisy figure. '–': the runs a figure needs predate its "
        "timing (runs with no timing at all are left out).",
        "",
        "| case | method | s/epoch | × w/o KD | ms/batch | × w/o KD | epochs | n |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    base: dict[str, float] = {}
    base_step: dict[str, float] = {}
    body = []
    for row in rows:
        if row["role"] != "student":
            continue
        timed = [x["run"]["epoch_seconds"] for x in row["runs"] if x["run"].get("epoch_seconds")]
        if not timed:
            continue
        per_epoch = statistics.mean(statistics.median(t) for t in timed)
        epochs = statistics.mean(len(t) for t in timed)
        stepped = [x["run"] for x in row["runs"] if x["run"].get("steps")]
        per_step = (
            statistics.mean(1000 * sum(r["epoch_seconds"]) / r["steps"] for r in stepped)
            if stepped
            else None
        )
        if row["method"] == "none":
            base[row["group"]] = per_epoch
            if per_step is not None:
                base_step[row["group"]] = per_step
        body.append((row["group"], row["method"], per_epoch, per_step, epochs, len(timed)))
    if not body:
        return []
    for group, method, per_epoch, per_step, epochs, n in body:
        ratio = per_epoch / base[group] if group in base else None
        step_ratio = (
            per_step / base_step[group] if per_step is not None and group in base_step else None
        )
        lines.append(
            f"| {group} | {LABELS.get(method, method)} | {per_epoch:.1f} | {_fmt(ratio)} | "
            f"{_fmt(per_step, 1)} | {_fmt(step_ratio)} | {epochs:.1f} | {n} |"
        )
    return [*lines, ""]


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _col_keys(keys: tuple[str, ...]) -> list[str]:
    return [f"{split}_{k}" for split in ("dev", "test") for k in keys]


def _plots(
    name: str, meta: dict[str, Any], runs: dict[str, dict[str, Any]], folder: Path
) -> list[str]:
    """Per student case: a bar chart of the methods' test score (error bars: std over seeds) and
    a score-vs-speed scatter. Returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = recorded.score_metrics(runs)
    main_key = f"test_{keys[-1]}"
    folder.mkdir(parents=True, exist_ok=True)
    spec = recorded.recorded_spec(meta)
    done = [r for r in recorded.rows(meta, spec, runs) if r["runs"]]
    pngs: list[str] = []
    for case in sorted({r["group"] for r in done if r["role"] == "student"}):
        students = [r for r in done if r["role"] == "student" and r["group"] == case]
        used = recorded.case_teachers(spec, done, case)  # as in its table
        rows = [
            r for r in done if r["role"] == "teacher" and f"teacher-{r['group']}" in used
        ] + students
        labels = [
            f"teacher ({r['group']})"
            if r["role"] == "teacher"
            else LABELS.get(r["method"], r["method"])
            for r in rows
        ]
        values = [[recorded.scores(keys, x["metrics"])[main_key] for x in r["runs"]] for r in rows]
        means = [statistics.mean(v) for v in values]
        errors = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        colors = ["tab:gray" if r["role"] == "teacher" else "tab:blue" for r in rows]
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.bar(range(len(rows)), means, yerr=errors, capsize=4, color=colors)
        ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right")
        ax.set_ylabel(main_key.replace("_", " "))
        ax.set_title(f"{name} / {case} (error bars: std over seeds)")
        fig.tight_layout()
        pngs.append(str(folder / f"{name}-{case}-methods.png"))
        fig.savefig(pngs[-1], dpi=100)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(6, 4))
        for row, label in zip(rows, labels, strict=True):
            speeds = [x["run"]["tokens_per_second"] for x in row["runs"]]
            scores = [recorded.scores(keys, x["metrics"])[main_key] for x in row["runs"]]
            marker = "s" if row["role"] == "teacher" else "o"
            ax.scatter(speeds, scores, label=label, marker=marker)
        ax.set_xlabel("test prediction speed (tokens/s, one point per run)")
        ax.set_ylabel(main_key.replace("_", " "))
        ax.legend(fontsize=7)
        ax.set_title(f"{name} / {case}: score vs speed")
        fig.tight_layout()
        pngs.append(str(folder / f"{name}-{case}-speed.png"))
        fig.savefig(pngs[-1], dpi=100)
        plt.close(fig)
    return pngs


def write_report(results: str | Path, out: str | Path, plots: bool = True) -> str:
    """Writes the Markdown report of every experiment under ``results`` to ``out``.

    Plots go to ``OUT_STEM/`` next to ``out`` (``docs/results/`` for ``docs/results.md``); an
    experiment file with ``report: pareto`` (a student size sweep) also gets
    ``NAME-pareto.png``, test score against alone-measured tokens/s with the teacher marked.
    Each experiment's ``summary.json`` (:func:`structkd.lab.summary.summary_rows`) is written next
    to its runs.

    Returns:
        The Markdown text.
    """
    results, out = Path(results), Path(out)
    sections = ["# Results", "", f"Generated by `structkd report {results} --out {out}`.", ""]
    overview = results / "NOTES.md"  # hand-written, above every experiment
    if overview.exists():
        sections += [overview.read_text(encoding="utf-8").strip(), ""]
    for directory in sorted(p for p in results.iterdir() if p.is_dir()):
        meta, runs = load_results(directory)
        if not runs:
            continue
        speed_file = directory / "speed.json"
        speed = json.loads(speed_file.read_text(encoding="utf-8")) if speed_file.exists() else None
        tests = case_tests(meta, runs) if any("counts" in r for r in runs.values()) else {}
        summary = summary_rows(meta, runs, speed, tests)
        atomic_write_json(directory / "summary.json", summary)
        sections.append(render_experiment(directory.name, meta, runs, speed, tests))
        report = recorded.recorded_spec(meta).report
        if plots and report != "cost":
            try:
                pngs = _plots(directory.name, meta, runs, out.parent / out.stem)
                pareto = out.parent / out.stem / f"{directory.name}-pareto.png"
                label = recorded.score_label(runs)
                if report == "pareto" and pareto_plot(directory.name, summary, label, pareto):
                    pngs.append(str(pareto))
            except ImportError:
                sections += [
                    "Plots skipped: matplotlib is not installed (pip install matplotlib).",
                    "",
                ]
            else:
                sections += [f"![{Path(p).stem}]({Path(p).relative_to(out.parent)})" for p in pngs]
                sections.append("")
        notes = directory / "NOTES.md"
        if notes.exists():
            sections += [notes.read_text(encoding="utf-8").strip(), ""]
    text = "\n".join(sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return text
