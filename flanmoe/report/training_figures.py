"""The report's figures of training and routing: expert load per task (``routing_heatmap``), routing
health over training (``routing_health``) and the loss curves (``training_curves``), with the checks of
their inputs (``check_routing``, ``check_curve``). Inputs: a ``routing.json`` of an evaluation
(``{suite: {task: {layer: {expert_fraction: [experts], ...}}}}``) and the training curves
(``plots/<stage>/<name>.json`` rows ``{step, train_loss, val_loss (null where not validated), lr}``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from flanmoe.grid import SUITES
from flanmoe.report.style import PALETTE, new_figure
from flanmoe.report.table import ReportInputError


def check_routing(routing: Mapping, where: str) -> None:
    """Raise ``ReportInputError`` unless ``routing`` is ``{suite: {task: {layer: {expert_fraction:
    [numbers]}}}}`` (a routing.json of the evaluate stage)."""
    for suite, tasks in routing.items():
        if not isinstance(tasks, Mapping):
            raise ReportInputError(f"{where}: {suite} is not an object of tasks")
        for task, layers in tasks.items():
            for layer, stats in layers.items() if isinstance(layers, Mapping) else [(None, None)]:
                frac = stats.get("expert_fraction") if isinstance(stats, Mapping) else None
                if not isinstance(frac, list) or not all(isinstance(v, int | float) for v in frac):
                    raise ReportInputError(
                        f"{where}: {suite}.{task}.{layer}.expert_fraction is not a list of numbers"
                    )


def check_curve(rows: Sequence, where: str) -> None:
    """Raise ``ReportInputError`` unless every row has a number ``step`` and ``train_loss`` and a
    ``val_loss`` that is a number or null."""
    for i, r in enumerate(rows):
        ok = isinstance(r, Mapping) and all(isinstance(r.get(k), int | float) for k in ("step", "train_loss"))
        if not ok or not isinstance(r.get("val_loss"), int | float | None):
            raise ReportInputError(f"{where}: row {i} needs numbers step, train_loss and val_loss (or null)")
    health = [k for k, _ in HEALTH if rows and isinstance(rows[0], Mapping) and k in rows[0]]
    for i, r in enumerate(rows):
        if any(not isinstance(r.get(k), int | float) for k in health):
            raise ReportInputError(f"{where}: row {i} needs numbers {', '.join(health)} (as row 0)")


def _band(ax, rows: Sequence[Mapping], key: str, color: str) -> None:
    """Shade the seeds' range of ``key`` (``<key>_min`` .. ``<key>_max``, rows of ``mean_curve``) where
    the rows have it: nothing for one seed."""
    pts = [(r["step"], r[f"{key}_min"], r[f"{key}_max"]) for r in rows if r.get(f"{key}_min") is not None]
    if pts:
        steps, lo, hi = zip(*pts, strict=True)
        ax.fill_between(steps, lo, hi, color=color, alpha=0.18, lw=0)


def _layer_order(name: str) -> tuple[int, int, str]:
    stack, _, idx = name.partition(".")
    return ({"encoder": 0, "decoder": 1}.get(stack, 2), int(idx) if idx.isdigit() else 0, name)


def routing_heatmap(arch: str, routing: Mapping) -> Figure | None:
    """Share of each task's tokens routed to each expert, one panel per MoE layer, a row per task
    (grouped by suite). ``routing``: an evaluation's ``routing.json``. None when it has no task."""
    suites = sorted(
        routing,
        key=lambda s: (SUITES.index(s) if s in SUITES else len(SUITES), s),  # held-out first
    )
    rows = [(suite, task) for suite in suites for task in sorted(routing[suite])]
    layers = sorted({layer for s, t in rows for layer in routing[s][t]}, key=_layer_order)
    if not rows or not layers:
        return None
    experts = max(len(routing[s][t][layer]["expert_fraction"]) for s, t in rows for layer in routing[s][t])
    grids = []
    for layer in layers:
        grid = [[float("nan")] * experts for _ in rows]
        for r, (s, t) in enumerate(rows):
            for e, v in enumerate(routing[s][t].get(layer, {}).get("expert_fraction", [])):
                grid[r][e] = float(v)
        grids.append(grid)
    vmax = max((v for g in grids for row in g for v in row if v == v), default=1.0) or 1.0
    fig = new_figure(1.6 + 0.32 * experts * len(layers) + 0.9, 1.4 + 0.16 * len(rows))
    axes = fig.subplots(1, len(layers), sharey=True, squeeze=False)[0]
    for ax, layer, grid in zip(axes, layers, grids, strict=True):
        im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_xticks(range(experts), [str(e) for e in range(experts)], fontsize=7)
        ax.set_xlabel("expert")
        ax.set_title(layer)
        ax.grid(False)
        for r in range(1, len(rows)):
            if rows[r][0] != rows[r - 1][0]:  # a line between suites
                ax.axhline(r - 0.5, color="white", lw=1.5)
    axes[0].set_yticks(range(len(rows)), [f"{s}/{t}" for s, t in rows], fontsize=6)
    fig.colorbar(im, ax=list(axes), label=f"share of tokens (uniform: {1 / experts:.3f})", shrink=0.6)
    fig.suptitle(f"{arch} (instruction-tuned): expert load per task")
    return fig


HEALTH = (
    ("router_load_max_over_mean", "load max / mean (1: balanced)"),
    ("router_dropped_fraction", "dropped fraction (over capacity)"),
    ("router_entropy", "router entropy (nats)"),
)


def routing_health(curves: Mapping[str, Mapping[str, Sequence[Mapping]]]) -> Figure | None:
    """Routing health over training of every MoE arch: load balance, drop rate and router entropy
    against step, pretraining (solid) then instruction tuning (dashed). None without router rows."""
    series = {
        (stage, arch): rows
        for stage in ("pretrain", "instruct")
        for arch, rows in (curves.get(stage) or {}).items()
        if rows and all(k in rows[0] for k, _ in HEALTH)
    }
    if not series:
        return None
    archs = sorted({a for _, a in series}, key=lambda a: [x for _, x in series].index(a))
    fig = new_figure(13.0, 3.2)
    axes = fig.subplots(1, len(HEALTH), squeeze=False).ravel()
    for ax, (key, label) in zip(axes, HEALTH, strict=True):
        for (stage, arch), rows in series.items():
            color = PALETTE[archs.index(arch) % len(PALETTE)]
            ax.plot(
                [r["step"] for r in rows],
                [r[key] for r in rows],
                color=color,
                lw=1.3,
                ls="-" if stage == "pretrain" else "--",
                label=f"{arch} {stage}",
            )
            _band(ax, rows, key, color)
        ax.set_title(label)
        ax.set_xlabel("step")
        ax.legend(loc="best", fontsize=7)
    return fig


def training_curves(curves: Mapping[str, Mapping[str, Sequence[Mapping]]]) -> Figure | None:
    """Train loss (solid) and validation loss (dashed, markers) against step; one panel per key of
    ``curves`` (a training stage, or a fine-tuning task), a color per series (arch, arch and scenario).
    None when there is no curve."""
    panels = [p for p in curves if any(curves[p].values())]
    if not panels:
        return None
    cols = min(len(panels), 2)
    nrows = -(-len(panels) // cols)
    fig = new_figure(5.0 * cols, 3.2 * nrows)
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels, strict=False):
        for i, (series, rows) in enumerate(curves[panel].items()):
            color = PALETTE[i % len(PALETTE)]
            steps = [r["step"] for r in rows]
            ax.plot(steps, [r["train_loss"] for r in rows], color=color, lw=1.3, label=f"{series} train")
            _band(ax, rows, "train_loss", color)
            val = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
            if val:
                ax.plot(
                    *zip(*val, strict=True),
                    color=color,
                    lw=1.1,
                    ls="--",
                    marker="o",
                    ms=3,
                    label=f"{series} val",
                )
                _band(ax, [r for r in rows if r.get("val_loss") is not None], "val_loss", color)
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(loc="best", fontsize=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return fig
