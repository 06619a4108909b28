"""The report's plots, drawn with matplotlib on an Agg canvas (no pyplot, no display, no global
backend switch) and returned as PNG bytes. Every point drawn comes from the caller's numbers;
nothing is computed here except the Pareto front and the axis layout."""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
WIDTH = 10.5  # inches: 1050 px, the page's content width
SOURCE_COLORS = {"device": "#1b7837", "host": "#2166ac", "predicted": "#762a83", "estimate": "#b2182b"}
STAGE_COLOR, ARTIFACT_COLOR = "#5e81ac", "#d08770"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower latency, higher accuracy),
    ordered by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def accuracy_vs_latency(points: list[dict]) -> bytes:
    """``points``: {label, source, latency_ms, top1}. One Pareto front per latency source: host,
    device and estimated latencies are not comparable with each other."""
    fig = Figure(figsize=(WIDTH, 4.8), layout="constrained")
    ax = fig.add_subplot()
    labels = []
    for source in sorted({p["source"] for p in points}):
        pts = [p for p in points if p["source"] == source]
        color = SOURCE_COLORS.get(source, "#555555")
        xs, ys = [p["latency_ms"] for p in pts], [p["top1"] * 100 for p in pts]
        ax.scatter(xs, ys, color=color, s=36, zorder=3, label=f"{source} latency")
        front = pareto_front(list(zip(xs, ys)))
        fx, fy = [xs[i] for i in front], [ys[i] for i in front]
        ax.scatter(fx, fy, s=150, facecolors="none", edgecolors=color, linewidths=1.5, zorder=4)
        if len(front) > 1:
            ax.step(fx, fy, where="post", color=color, alpha=0.6, linewidth=1.2, zorder=2)
        labels += [(xs[i], ys[i], pts[i]["label"]) for i in range(len(pts))]
    ax.set_xlabel("latency p50 (ms)")
    ax.set_ylabel("top-1 on the test split (%)")
    ax.grid(True, alpha=0.3)
    xs = [p["latency_ms"] for p in points]
    if xs and min(xs) > 0 and max(xs) / min(xs) > 30:
        ax.set_xscale("log")
    ax.margins(x=0.25, y=0.25)
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(lo, 0.0), min(hi, 100.5))  # top-1 is a percentage
    ax.legend(title="circled: Pareto front", fontsize=8, title_fontsize=8, loc="best")
    place_labels(fig, ax, labels)
    return _png(fig)


# where a point's label may go, in points from the point: right, above, below, then further out and to the left
LABEL_OFFSETS = [(7, 5), (7, -13), (7, 16), (7, -24), (7, 27), (7, -35), (-7, 5), (-7, -13), (7, 38), (7, -46)]


def place_labels(fig, ax, labels: list[tuple[float, float, str]]) -> None:
    """Annotate each point at the first offset whose text overlaps no label placed before it (left-aligned
    offsets to the right, right-aligned ones to the left); the last offset when every one collides."""
    FigureCanvasAgg(fig)
    fig.draw_without_rendering()  # the constrained layout first: boxes are measured where they will be drawn
    renderer = fig.canvas.get_renderer()
    placed = []
    for x, y, text in sorted(labels):
        for dx, dy in LABEL_OFFSETS:
            a = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8,
                            ha="left" if dx > 0 else "right")
            box = a.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in placed) or (dx, dy) == LABEL_OFFSETS[-1]:
                placed.append(box)
                break
            a.remove()


def size_across_stages(stages: list[tuple[str, int]], artifacts: list[tuple[str, int]]) -> bytes:
    """Horizontal bars, top to bottom: the torch model's FP32 weights at each stage, then each
    artifact's files on disk."""
    rows = [(lbl, b, STAGE_COLOR) for lbl, b in stages] + [(lbl, b, ARTIFACT_COLOR) for lbl, b in artifacts]
    fig = Figure(figsize=(WIDTH, 1.3 + 0.38 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    ys = list(range(len(rows)))[::-1]
    kib = [b / 1024 for _, b, _ in rows]
    ax.barh(ys, kib, color=[c for _, _, c in rows], height=0.65)
    ax.set_yticks(ys, [lbl for lbl, _, _ in rows], fontsize=9)
    for y, v in zip(ys, kib):
        ax.annotate(f"{v:,.1f}", (v, y), textcoords="offset points", xytext=(4, -3), fontsize=8)
    ax.set_xlabel("KiB")
    ax.set_xlim(0, max(kib) * 1.18 if kib else 1)
    ax.grid(True, axis="x", alpha=0.3)
    from matplotlib.patches import Patch

    handles = [Patch(color=STAGE_COLOR, label="torch model, FP32 weights")]
    if artifacts:
        handles.append(Patch(color=ARTIFACT_COLOR, label="artifact files"))
    ax.legend(handles=handles, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    return _png(fig)


def latency_distributions(series: list[tuple[str, str, list[float]]]) -> bytes:
    """``series``: (label, source, samples_ms). Box = p25..p75, whiskers p1..p99, line = median."""
    fig = Figure(figsize=(WIDTH, 1.1 + 0.5 * len(series)), layout="constrained")
    ax = fig.add_subplot()
    ys = list(range(1, len(series) + 1))[::-1]
    box = ax.boxplot([s for _, _, s in series], positions=ys, orientation="horizontal", whis=(1, 99),
                     widths=0.55, patch_artist=True, flierprops={"markersize": 3, "alpha": 0.5},
                     medianprops={"color": "black"})
    for patch, (_, source, _) in zip(box["boxes"], series):
        patch.set_facecolor(SOURCE_COLORS.get(source, "#999999"))
        patch.set_alpha(0.55)
    ax.set_yticks(ys, [f"{lbl} ({src})" for lbl, src, _ in series], fontsize=9)
    lo = min(min(s) for _, _, s in series)
    hi = max(max(s) for _, _, s in series)
    if lo > 0 and hi / lo > 30:
        ax.set_xscale("log")
    ax.set_xlabel("latency per inference (ms)")
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)


def time_by_op(series: list[tuple[str, dict[str, float]]], top: int = 7) -> bytes:
    """``series``: (label, {op type: ms}). One stacked bar per artifact; the ``top`` op types by total time keep
    their colour, the rest are "other"."""
    totals: dict[str, float] = {}
    for _, by_op in series:
        for op, v in by_op.items():
            totals[op] = totals.get(op, 0.0) + v
    kept = sorted(totals, key=lambda op: -totals[op])[:top]
    fig = Figure(figsize=(WIDTH, 1.3 + 0.45 * len(series)), layout="constrained")
    ax = fig.add_subplot()
    ys = list(range(len(series)))[::-1]
    left = [0.0] * len(series)
    for k, op in enumerate([*kept, "other"]):
        vals = [(by_op.get(op, 0.0) if op != "other" else sum(v for o, v in by_op.items() if o not in kept))
                for _, by_op in series]
        ax.barh(ys, vals, left=left, height=0.6, label=op, color=f"C{k % 10}")
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(ys, [lbl for lbl, _ in series], fontsize=9)
    ax.set_xlabel("summed layer time per inference (ms)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, frameon=False)
    return _png(fig)


def search_pareto(candidates: list[dict], budget_ms: float, floor: float) -> bytes:
    """A search's candidates: ``candidates`` {label, latency_ms, top1, source, finalist, final_latency_ms,
    finetuned_top1, winner}. Validation top-1 against the latency the budget judged (predicted upper bound or
    measured), the Pareto front circled, finalists joined to where their brief fine-tune and their lowered
    artifact put them, the winner starred, the budget and the floor drawn."""
    fig = Figure(figsize=(WIDTH, 4.6), layout="constrained")
    ax = fig.add_subplot()
    xs, ys = [c["latency_ms"] for c in candidates], [c["top1"] * 100 for c in candidates]
    for source in sorted({c["source"] for c in candidates}):
        idx = [i for i, c in enumerate(candidates) if c["source"] == source]
        ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], s=34, zorder=3,
                   color=SOURCE_COLORS.get(source, "#555555"), label=f"candidate ({source} latency)")
    front = pareto_front(list(zip(xs, ys)))
    ax.scatter([xs[i] for i in front], [ys[i] for i in front], s=150, facecolors="none", edgecolors="#444444",
               linewidths=1.2, zorder=4, label="Pareto front")
    labels = [(xs[i], ys[i], c["label"]) for i, c in enumerate(candidates)]
    for c, x, y in zip(candidates, xs, ys):
        if c.get("finalist") and c.get("final_latency_ms") is not None and c.get("finetuned_top1") is not None:
            fx, fy = c["final_latency_ms"], c["finetuned_top1"] * 100
            ax.annotate("", (fx, fy), (x, y), arrowprops={"arrowstyle": "->", "color": "#888888"})
            ax.scatter([fx], [fy], marker="*" if c.get("winner") else "D", s=220 if c.get("winner") else 50,
                       color="#d08770" if c.get("winner") else "#aaaaaa", zorder=5,
                       label="winner (fine-tuned, lowered)" if c.get("winner") else None)
    ax.axvline(budget_ms, color="#b2182b", linestyle="--", linewidth=1, label=f"budget {budget_ms:g} ms")
    if floor > 0:
        ax.axhline(floor * 100, color="#b2182b", linestyle=":", linewidth=1, label=f"floor {floor * 100:.1f} %")
    ax.set_xlabel("latency p90 the budget judges (ms): predicted upper bound, or measured")
    ax.set_ylabel("validation top-1 (%)")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.2, y=0.2)
    ax.legend(fontsize=8, loc="best")
    place_labels(fig, ax, labels)
    return _png(fig)
