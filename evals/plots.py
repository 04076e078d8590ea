"""The report's PNG plots (matplotlib, no display): accuracy per model and per topic, a reliability diagram of the
app's confidence, speed against accuracy.

Each function takes the comparison's results, a list of `EvalResult`s named by model and data (see
evals/compare.py), and writes one PNG; it returns the file name, or None when there is nothing to draw.
"""
from __future__ import annotations

from pathlib import Path
from edgedistill.results import PASS_AT_1, EvalResult


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")   # files only: no display on a workstation service or in CI
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> str:
    """Write the figure (atomically: a reader never sees half a PNG), close it, return the file name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    _pyplot().close(fig)
    return path.name


def _names(results: list[EvalResult], field: str) -> list[str]:
    return list(dict.fromkeys(getattr(r, field) for r in results))


def accuracy_by_model(results: list[EvalResult], path: Path) -> str | None:
    """Grouped bars: pass@1 of each model on each benchmark, with the 95% interval as an error bar."""
    if not results:
        return None
    plt = _pyplot()
    models, datasets = _names(results, "model"), _names(results, "data")
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(datasets) * len(models) / 2 + 3), 4))
    for m, model in enumerate(models):
        xs, ys, errors = [], [], [[], []]
        for d, data in enumerate(datasets):
            r = next((r for r in results if r.model == model and r.data == data), None)
            if r:
                xs.append(d + (m - (len(models) - 1) / 2) * width)
                ys.append(r.pass_at_1)
                errors[0].append(r.pass_at_1 - r.ci95[0])
                errors[1].append(r.ci95[1] - r.pass_at_1)
        ax.bar(xs, ys, width, yerr=errors, capsize=3, label=model)
    ax.set_xticks(range(len(datasets)), datasets, rotation=15, ha="right")
    ax.set_ylabel("pass@1 (greedy, calculator on)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Accuracy per model (95% Wilson interval)")
    return _save(fig, path)


def accuracy_by_topic(results: list[EvalResult], path: Path) -> str | None:
    """One panel per benchmark that has topics: pass@1 per topic and model, as horizontal bars, so every topic's
    name reads level on its own line however long it is or however many topics there are."""
    with_topics = [d for d in _names(results, "data") if any(r.data == d and r.topics for r in results)]
    if not with_topics:
        return None
    plt = _pyplot()
    panels = []
    for data in with_topics:
        rows = [r for r in results if r.data == data]
        topics = sorted({t for r in rows for t in r.topics})
        panels.append((data, rows, topics))
    # a topic's bars take 0.22 inch per model (at least the height of its label), a panel its title and axis more
    heights = [len(topics) * max(0.3, 0.22 * len(rows)) + 0.9 for _, rows, topics in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (data, rows, topics) in zip(axes[:, 0], panels):
        height = 0.8 / len(rows)
        for m, r in enumerate(rows):
            ax.barh([t + (m - (len(rows) - 1) / 2) * height for t in range(len(topics))],
                    [r.topics.get(topic, {}).get(PASS_AT_1, 0) for topic in topics], height, label=r.model)
        counts = [next((r.topics[t]["n"] for r in rows if t in r.topics), 0) for t in topics]
        ax.set_yticks(range(len(topics)), [f"{t} (n={n})" for t, n in zip(topics, counts)], fontsize=7)
        ax.invert_yaxis()   # topics top to bottom in order, each model's bar in the legend's order
        ax.set_xlim(0, 1)
        ax.set_xlabel("pass@1 (greedy, calculator on)", fontsize=8)
        ax.set_title(data, fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(fig, path)


def reliability_diagram(results: list[EvalResult], path: Path) -> str | None:
    """Accuracy against confidence per benchmark: raw agreement / k (dotted) and the cross-fitted calibrated
    probability (solid) for each model; the diagonal is perfect calibration, marker area the bin's size."""
    rated = [r for r in results if r.figure("reliability")]
    if not rated:
        return None
    plt = _pyplot()
    datasets = _names(rated, "data")
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 4.2), squeeze=False)
    for ax, data in zip(axes[0], datasets):
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
        for i, r in enumerate(x for x in rated if x.data == data):
            colour = f"C{i}"
            for key, style, tag in (("reliability_raw", ":", "raw"), ("reliability", "-", "calibrated")):
                bins = r.figure(key) or []
                ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], style, color=colour,
                        label=f"{r.model} {tag}")
                ax.scatter([b["confidence"] for b in bins], [b["accuracy"] for b in bins], color=colour,
                           s=[8 + 120 * b["n"] / r.n for b in bins])
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
        ax.set_title(data, fontsize=9)
        ax.legend(fontsize=6)
    return _save(fig, path)


def speed_vs_accuracy(results: list[EvalResult], path: Path) -> str | None:
    """pass@1 against seconds per question to the answer: up and to the left is better."""
    if not results:
        return None
    plt = _pyplot()
    models, datasets = _names(results, "model"), _names(results, "data")
    markers = "osD^vP*X"
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in results:
        ax.scatter(r.seconds_to_answer, r.pass_at_1, color=f"C{datasets.index(r.data) % 10}",
                   marker=markers[models.index(r.model) % len(markers)], s=50)
    for m, model in enumerate(models):
        ax.scatter([], [], color="black", marker=markers[m % len(markers)], label=model)
    for d, data in enumerate(datasets):
        ax.scatter([], [], color=f"C{d % 10}", marker="s", label=data)
    ax.set(xlabel="seconds per question to the answer (batched)", ylabel=PASS_AT_1, ylim=(0, 1))
    ax.set_xlim(left=0)
    ax.legend(fontsize=7)
    ax.set_title("Speed against accuracy")
    return _save(fig, path)


def write_plots(results: list[EvalResult], folder: Path) -> dict:
    """All four plots into `folder`; {what: file name} for those drawn."""
    plots = {"accuracy": accuracy_by_model(results, folder / "accuracy.png"),
             "topics": accuracy_by_topic(results, folder / "accuracy_by_topic.png"),
             "reliability": reliability_diagram(results, folder / "reliability.png"),
             "speed": speed_vs_accuracy(results, folder / "speed_vs_accuracy.png")}
    return {what: name for what, name in plots.items() if name}
