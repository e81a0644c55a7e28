"""The report's figures as PNG files: matplotlib's Agg renderer on ``Figure`` objects (no pyplot, no
global state), a fixed style, size and dpi, and no metadata that changes between runs, so the same
inputs give the same bytes.

    write_figures(out_dir, table, routing={arch: routing.json}, curves={panel: {series: rows}})
    -> [ReportFigure(file, title, caption, section), ...]

Inputs: the ``Table`` of ``build_table``; per MoE arch the ``routing.json`` of its instruction-tuned
evaluation (``{suite: {task: {layer: {expert_fraction: [experts], ...}}}}``); the training curves
(``plots/<stage>/<name>.json`` rows ``{step, train_loss, val_loss (null where not validated), lr}``).
The score figures are drawn here, those of training and routing in ``training_figures``, in the
shared look of ``style``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.style
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, FixedLocator, NullFormatter, NullLocator

from flanmoe.grid import MODES, scenario_label
from flanmoe.report.knowledge import MEASURE_LABEL, PANELS, exposure
from flanmoe.report.render import MODEL_LABEL, ReportFigure
from flanmoe.report.style import PALETTE, RC, new_figure, png_bytes
from flanmoe.report.table import AVERAGE, Table
from flanmoe.report.training_figures import (
    routing_health,
    routing_heatmap,
    training_curves,
)


def _yerr(estimates) -> list[list[float]]:
    """Matplotlib's asymmetric error bars ``[[below...], [above...]]`` of a list of ``Estimate``."""
    return [[e.value - e.lo for e in estimates], [e.hi - e.value for e in estimates]]


def _arch_colors(table: Table) -> dict[str, str]:
    return {m.arch: PALETTE[i % len(PALETTE)] for i, m in enumerate(table.models)}


def _mode_title(mode: str, k: int | None) -> str:
    return "zero-shot" if mode == "zero_shot" else (f"{k}-shot" if k else "few-shot")


def _kind(table: Table, arch: str) -> str:
    return "MoE" if next(m.moe for m in table.models if m.arch == arch) else "dense"


def _arch_label(table: Table, arch: str, sep: str = " ") -> str:
    """``switch (MoE)``, ``dense``: the arch and its kind, the kind left out when it is the name."""
    kind = _kind(table, arch)
    return arch if arch == kind else f"{arch}{sep}({kind})"


def _flops_ticks(values: list[float]) -> list[float]:
    """One tick per group of FLOPs/token values within 10% of each other (FLOPs twins share one)."""
    ticks: list[float] = []
    for v in sorted(values):
        if not ticks or v > ticks[-1] * 1.1:
            ticks.append(v)
    return ticks


def headline(table: Table) -> Figure | None:
    """Held-out normalized average [95% CI] vs FLOPs/token, one panel per mode: per arch an open
    marker (pretrained only) and a filled one (instruction-tuned), joined by a line. FLOPs-matched
    archs sit at nearly the same x, so each arch (and each of its two models) is shifted by a few
    percent to keep the bars apart.
    None when no arch has a normalized average."""
    modes = [m for m in MODES if (AVERAGE, m) in table.columns]
    if not modes:
        return None
    colors = _arch_colors(table)
    flops = {m.arch: m.flops_per_token for m in table.models}
    n = len(table.models)
    fig = new_figure(4.2 * len(modes) + 0.6, 3.8)
    axes = fig.subplots(1, len(modes), sharey=True, squeeze=False)[0]
    for ax, mode in zip(axes, modes, strict=True):
        for i, arch in enumerate(flops):
            x = flops[arch] * (1 + 0.06 * (i - (n - 1) / 2))
            cells = table.heldout[arch]
            points = [
                (model, cells[model][(AVERAGE, mode)].normalized)
                for model in ("pretrain", "instruct")
                if (AVERAGE, mode) in cells.get(model, {})
            ]
            xs = {"pretrain": x * 0.985, "instruct": x * 1.015}  # the two models of an arch side by side
            if len(points) == 2:
                ax.plot(list(xs.values()), [e.value for _, e in points], color=colors[arch], lw=1, alpha=0.5)
            for model, e in points:
                ax.errorbar(
                    [xs[model]],
                    [e.value],
                    yerr=_yerr([e]),
                    fmt="o",
                    mfc=colors[arch] if model == "instruct" else "white",
                    mec=colors[arch],
                    ecolor=colors[arch],
                    color=colors[arch],
                    ms=7,
                    capsize=3,
                )
        ax.axhline(0, color="black", lw=0.8, ls=":")
        ax.set_xscale("log")
        lo, hi = min(flops.values()), max(flops.values())
        ax.set_xlim(lo / 1.3, hi * 1.3)
        ax.xaxis.set_major_locator(FixedLocator(_flops_ticks(list(flops.values()))))
        ax.xaxis.set_major_formatter(EngFormatter(places=2))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("FLOPs per token (forward, log scale)")
        ax.set_title(f"held-out normalized average, {_mode_title(mode, table.fewshot_k)}")
    axes[0].set_ylabel("normalized score (chance 0, perfect 100)")
    handles = [Line2D([], [], color=colors[a], marker="o", ls="", label=_arch_label(table, a)) for a in flops]
    handles += [
        Line2D([], [], color="gray", marker="o", mfc="white", ls="", label="pretrained only"),
        Line2D([], [], color="gray", marker="o", ls="", label="instruction-tuned"),
    ]
    axes[-1].legend(handles=handles, loc="best")
    return fig


def it_gain(table: Table) -> Figure | None:
    """Instruction-tuning gain of the normalized average [95% CI] per arch, a bar per mode. None when
    no arch has one."""
    archs = [a for a in table.it_gain if any(s == AVERAGE for s, _ in table.it_gain[a])]
    modes = [m for m in MODES if any((AVERAGE, m) in table.it_gain[a] for a in archs)]
    if not archs:
        return None
    fig = new_figure(1.4 * len(archs) + 3.0, 3.6)
    ax = fig.subplots()
    width = 0.8 / len(modes)
    for j, mode in enumerate(modes):
        xs = [
            i + (j - (len(modes) - 1) / 2) * width
            for i, a in enumerate(archs)
            if (AVERAGE, mode) in table.it_gain[a]
        ]
        es = [table.it_gain[a][(AVERAGE, mode)] for a in archs if (AVERAGE, mode) in table.it_gain[a]]
        ax.bar(
            xs,
            [e.value for e in es],
            width,
            yerr=_yerr(es),
            capsize=4,
            color=PALETTE[j],
            label=_mode_title(mode, table.fewshot_k),
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(archs)), [_arch_label(table, a, "\n") for a in archs])
    ax.set_ylabel("IT gain, normalized points")
    ax.set_title("instruction-tuning gain (instruction-tuned - pretrained only), held-out avg")
    ax.legend(loc="best")
    return fig


def finetune(table: Table) -> Figure | None:
    """Fine-tuned test score [95% CI] per task (one panel each) and arch, a bar per scenario, with the
    task's chance level dashed. None when nothing was fine-tuned."""
    tasks = [t for t in table.tasks if any(table.finetune[a].get(t) for a in table.finetune)]
    if not tasks:
        return None
    archs = list(table.finetune)
    fig = new_figure(max(3.6 * len(tasks), 4.5), 3.6)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    width = 0.8 / len(table.scenarios)
    for ax, task in zip(axes, tasks, strict=True):
        chance = None
        for j, scenario in enumerate(table.scenarios):
            pts = [
                (i, table.finetune[a][task][scenario])
                for i, a in enumerate(archs)
                if scenario in table.finetune[a].get(task, {})
            ]
            if not pts:
                continue
            chance = pts[0][1].chance
            ax.bar(
                [i + (j - (len(table.scenarios) - 1) / 2) * width for i, _ in pts],
                [c.score.value for _, c in pts],
                width,
                yerr=_yerr([c.score for _, c in pts]),
                capsize=4,
                color=PALETTE[j],
                label=scenario_label(scenario),
            )
        if chance is not None:
            ax.axhline(chance, color="black", lw=0.9, ls="--", label="chance level")
        ax.set_xticks(range(len(archs)), [_arch_label(table, a, "\n") for a in archs])
        ax.set_ylim(0, 1.05)
        ax.set_title(f"fine-tuned on {task}" + (f" (chance {chance:.2f})" if chance is not None else ""))
    axes[0].set_ylabel("test score")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def exposure_response(table: Table) -> Figure | None:
    """Accuracy [95% CI] against biographies per person (log x), one panel per measure of ``PANELS``
    (cloze and QA cloze after pretraining, QA cloze and MMLU people after IT), one line per arch (shifted a few percent
    apart in x), chance dashed.
    None without a probe section; a panel without data is left out."""
    k = table.knowledge
    if k is None:
        return None
    panels = [(m, s) for m, s in PANELS if any((a.arch, s, m) in k.cells for a in table.models)]
    if not panels:
        return None
    colors = _arch_colors(table)
    xs_all = [exposure(s) for s in k.strata]
    fig = new_figure(3.6 * len(panels) + 0.6, 3.4)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (measure, model) in zip(axes, panels, strict=True):
        chance = None
        for i, m in enumerate(table.models):
            row = k.cells.get((m.arch, model, measure))
            dodge = 1 + 0.04 * (i - (len(table.models) - 1) / 2)  # archs a few percent apart in x
            if not row:
                continue
            chance = k.chance.get((m.arch, model, measure), chance)
            strata = [s for s in k.strata if s in row]
            est = [row[s] for s in strata]
            ax.errorbar(
                [exposure(s) * dodge for s in strata],
                [e.value for e in est],
                yerr=_yerr(est),
                color=colors[m.arch],
                marker="o",
                capsize=3,
                label=_arch_label(table, m.arch),
            )
        if chance is not None:
            ax.axhline(chance, color="0.4", linestyle="--", linewidth=1, label="chance")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(xs_all))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("biographies per person")
        ax.set_title(f"{MEASURE_LABEL[measure].split(' (')[0]}, {MODEL_LABEL[model]}")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="best")
    return fig


def write_figures(
    out_dir: Path,
    table: Table,
    routing: Mapping[str, Mapping] | None = None,
    curves: Mapping[str, Mapping[str, Sequence[Mapping]]] | None = None,
    seeds: Sequence[int] = (),
) -> list[ReportFigure]:
    """Draw every figure the inputs allow, write each as ``out_dir/<name>.png`` and return them in
    report order; a figure without data is left out. ``routing``: ``{moe arch: routing.json}`` (of the
    first of ``seeds``); ``curves``: rows of one seed or of ``seeds.mean_curve`` over ``seeds``, which
    the captions name when there are several."""
    routing = routing or {}
    several = len(seeds) > 1
    over = f" Mean over seeds {', '.join(map(str, seeds))}; shaded: their range." if several else ""
    one_seed = (
        f" Seed {seeds[0]} only: expert numbers are arbitrary in each seed, so loads are not averaged"
        " over seeds."
        if several
        else ""
    )
    planned: list[tuple[str, str, str, str, Figure | None]] = []
    with matplotlib.style.context("default"), matplotlib.rc_context(RC):
        planned.append(
            (
                "headline.png",
                "Normalized average vs FLOPs per token",
                "Held-out normalized average [95% CI] against forward FLOPs per token; open: pretrained"
                " only, filled: instruction-tuned. FLOPs-matched archs are shifted a few percent apart.",
                "heldout",
                headline(table),
            )
        )
        planned.append(
            (
                "it_gain.png",
                "Instruction-tuning gain per arch",
                "Instruction-tuned minus pretrained only, held-out normalized average [95% CI: "
                + (table.it_gain_interval_names or "MOVER")
                + "].",
                "heldout",
                it_gain(table),
            )
        )
        planned.append(
            (
                "exposure_response.png",
                "Knowledge by exposure",
                "Accuracy [95% CI] on held-out people against their biographies in the pretraining corpus:"
                " the probe's cloze after pretraining (storage), its bare question and the MMLU-style"
                " people questions zero-shot after instruction tuning (extraction); dashed: chance.",
                "knowledge",
                exposure_response(table),
            )
        )
        planned.append(
            (
                "finetune.png",
                "Fine-tuning direct vs after IT",
                "Test score [95% CI] per task and arch, fine-tuned from the pretrained model (direct) or"
                " from the instruction-tuned one (after IT); dashed: chance.",
                "finetune",
                finetune(table),
            )
        )
        for arch, r in routing.items():
            planned.append(
                (
                    f"routing_{arch}.png",
                    f"Expert load of {arch} per task",
                    f"Share of each task's tokens that {arch}'s instruction-tuned routers send to each expert,"
                    " per MoE layer (evaluation routing statistics)." + one_seed,
                    "training",
                    routing_heatmap(arch, r),
                )
            )
        planned.append(
            (
                "routing_health.png",
                "Routing health over training",
                "Per MoE arch: the most loaded expert's share over the mean share, the fraction of token"
                " assignments dropped over capacity, and the router entropy, at each log point of"
                " pretraining (solid) and instruction tuning (dashed)." + over,
                "training",
                routing_health(curves or {}),
            )
        )
        planned.append(
            (
                "training_curves.png",
                "Training curves",
                "Train loss (solid) and validation loss (dashed) of every training stage." + over,
                "training",
                training_curves(curves or {}),
            )
        )
        out = []
        for file, title, caption, section, fig in planned:
            if fig is None:
                continue
            (Path(out_dir) / file).write_bytes(png_bytes(fig))
            out.append(ReportFigure(file, title, caption, section))
    return out


__all__ = ["exposure_response", "finetune", "headline", "it_gain", "write_figures"]
