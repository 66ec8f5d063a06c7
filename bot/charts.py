"""The performance chart posted under a training summary: per-tag precision/recall/AP bars and, for
Multiclass, the confusion matrix. Drawn with matplotlib's object API on the Agg canvas (no pyplot
global state, so it is safe off the event loop's thread)."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

MAX_TAGS_DRAWN = 30


def performance_chart(perf: dict, title: str = "") -> bytes:
    """PNG bytes of the chart for an `iteration_performance` dict."""
    rows = (perf.get("perTagPerformance") or [])[:MAX_TAGS_DRAWN]
    cm = perf.get("confusionMatrix")
    show_cm = bool(cm and cm.get("labels") and len(cm["labels"]) <= MAX_TAGS_DRAWN)
    n = max(1, len(rows))
    width = max(6.0, 0.9 * n + 2.5) + (max(4.5, 0.45 * n + 3) if show_cm else 0)
    fig = Figure(figsize=(min(width, 24), 4.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2 if show_cm else 1, 1)
    names = [r["name"] if len(r["name"]) <= 16 else r["name"][:15] + "…" for r in rows]
    xs = range(len(rows))
    bw = 0.27
    for k, (key, label, colour) in enumerate((("precision", "precision", "#2e7d32"), ("recall", "recall", "#1565c0"),
                                             ("averagePrecision", "AP", "#ef6c00"))):
        ax.bar([x + (k - 1) * bw for x in xs], [r[key] * 100 for r in rows], bw, label=label, color=colour)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=30 if len(rows) > 4 else 0, ha="right" if len(rows) > 4 else "center")
    ax.set_ylim(0, 119)  # headroom for the legend above the 100% line
    ax.set_yticks([0, 20, 40, 60, 80, 100])
    ax.set_ylabel("%")
    ax.set_title(f"Per tag at threshold {perf.get('threshold', 0.5):g}")
    ax.legend(loc="upper center", ncol=3, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    if show_cm:
        labels = cm["labels"]
        matrix = cm["matrix"]
        ax2 = fig.add_subplot(1, 2, 2)
        im = ax2.imshow(matrix, cmap="Blues")
        short = [x if len(x) <= 12 else x[:11] + "…" for x in labels]
        ax2.set_xticks(range(len(labels)))
        ax2.set_yticks(range(len(labels)))
        ax2.set_xticklabels(short, rotation=30 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
        ax2.set_yticklabels(short)
        ax2.set_xlabel("predicted")
        ax2.set_ylabel("true")
        ax2.set_title("Confusion matrix (out-of-fold)")
        top = max((max(r) for r in matrix), default=0) or 1
        if len(labels) <= 12:
            for i, row in enumerate(matrix):
                for j, v in enumerate(row):
                    ax2.text(j, i, str(v), ha="center", va="center", fontsize=9,
                             color="white" if v > top / 2 else "black")
        fig.colorbar(im, ax=ax2, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
