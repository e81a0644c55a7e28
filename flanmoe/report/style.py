"""The look every report figure shares: matplotlib's Agg renderer on ``Figure`` objects (no pyplot, no
global state), a fixed style, size and dpi, and PNG bytes without metadata that changes between runs."""

from __future__ import annotations

import io

from matplotlib.figure import Figure

DPI = 110
# the look every figure shares; "default" first so a user's matplotlibrc cannot change the bytes
RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.framealpha": 0.9,
    "savefig.dpi": DPI,
}
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes, without the ``Software`` text chunk (the matplotlib version)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")
