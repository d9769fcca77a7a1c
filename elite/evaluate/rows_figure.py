"""Every evaluated row with its 95% interval, one panel per score: the picture of metrics/dreambench.json's
`spread` block (elite/evaluate/spread.py). With a world scorer (toy world) the panels are its accuracies and the
single-attribute oracles are dashed lines on the identity panel; otherwise CLIP-T, CLIP-I and DINO-I. Given
`elite seeds summary`'s table (metrics/seeds.json), each row it has also shows one grey dot per training seed and
their mean +- sd (a black diamond) just below the row."""

from __future__ import annotations

from elite.evaluate.reference import row_block, row_path
from elite.evaluate.report import SCORE_COLUMNS
from elite.evaluate.spread import bar

LABELS = {
    "baseline": "class word",
    "named": "named in the prompt",
    "ti": "TI",
    "xti": "P+ (XTI)",
    "global": "ELITE global only",
    "elite": "ELITE",
    "images2": "ELITE, 2 images",
    "images3": "ELITE, 3 images",
}
WORLD = (("identity_acc", "identity"), ("colour_acc", "colour"), ("pattern_acc", "pattern"), ("scene_acc", "scene"))


def interval_rows(metrics: dict, key: str) -> list[tuple[str, str, float, float, float]]:
    """(row, label, value, lo, hi) of every row that has `key` and its interval, in LABELS' order."""
    out = []
    for name, label in LABELS.items():
        block, bounds = row_block(metrics, name), metrics.get("spread", {}).get(name, {})
        if block and block.get(key) is not None and f"{key}_lo" in bounds:
            out.append((name, label, float(block[key]), bounds[f"{key}_lo"], bounds[f"{key}_hi"]))
    return out


def rows_figure(metrics: dict, seeds: dict | None = None):
    """seeds: metrics/seeds.json's "metrics" table (`row.key` -> {mean, sd, values}). None when no row has an
    interval (an evaluation made before intervals were recorded)."""
    panels = WORLD if metrics["overall"].get("identity_acc") is not None else SCORE_COLUMNS
    panels = tuple((key, title) for key, title in panels if interval_rows(metrics, key))
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 1.6, 3.6), sharey=True, squeeze=False)
    labels = [
        label for label in LABELS.values() if any(r[1] == label for k, _ in panels for r in interval_rows(metrics, k))
    ]
    y_of = {label: len(labels) - 1 - i for i, label in enumerate(labels)}  # first row on top
    for ax, (key, title) in zip(axes[0], panels):
        for name, label, value, lo, hi in interval_rows(metrics, key):
            colour = "tab:red" if label.startswith("ELITE") else "tab:blue"
            below, above = bar(value, lo, hi)
            ax.errorbar(value, y_of[label], xerr=[[below], [above]], fmt="o", color=colour, capsize=3)
            over_seeds = (seeds or {}).get(".".join((*row_path(name), key)))
            if over_seeds:
                y = y_of[label] - 0.3
                ax.plot(over_seeds["values"], [y] * len(over_seeds["values"]), "o", ms=3, color="grey", alpha=0.8)
                ax.errorbar(over_seeds["mean"], y, xerr=over_seeds["sd"], fmt="D", ms=4, color="black", capsize=2)
        if key == "identity_acc":
            for i, (name, oracle) in enumerate(sorted((metrics.get("oracles") or {}).items())):
                ax.axvline(
                    oracle["identity_acc"],
                    ls="--",
                    lw=1,
                    color=f"C{i + 2}",
                    label=f"{name.replace('_', ' ')} {oracle['identity_acc']:.2f}",
                )
            if metrics.get("oracles"):
                ax.legend(fontsize=7, loc="lower right", title="oracles", title_fontsize=7)
        ax.set_yticks([y_of[label] for label in labels], labels)
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
        if key.endswith("_acc"):
            ax.set_xlim(-0.03, 1.03)
    title = "Every row with its 95% interval (subjects, prompts, generation seeds)"
    if seeds:
        n = max(v["n"] for v in seeds.values())
        title += f"; grey: each of {n} training seeds, black: their mean +- sd"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
