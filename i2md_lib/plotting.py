"""Figures for the book: the offline plotly renderer and skeleton viewers.

Chapters call :func:`use_book_renderer` once. Figures then carry two outputs:
plotly's JSON (rendered by JupyterLab) and a small HTML snippet that draws the
figure with the ``plotly.min.js`` the book ships (``book/_ext/plotly_offline.py``),
so the built HTML stays small and works without network access.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .skeleton import Layout, layout_for_joints


def use_book_renderer() -> None:
    """Make ``fig.show()`` emit plotly JSON plus offline-ready HTML (no CDN, no MathJax)."""
    import plotly.io as pio
    from plotly.io._base_renderers import HtmlRenderer

    class _BookHtmlRenderer(HtmlRenderer):
        def __init__(self) -> None:
            super().__init__(connected=False, full_html=False, global_init=False)

        def to_mimebundle(self, fig_dict):  # noqa: D102 - plotly renderer hook
            html = pio.to_html(
                fig_dict, include_plotlyjs=False, include_mathjax=False, full_html=False,
                validate=False, config={"responsive": True},
            )
            return {"text/html": html}

    pio.renderers["book"] = _BookHtmlRenderer()
    pio.renderers.default = "plotly_mimetype+book"


def _layout_of(frame: np.ndarray, layout: Layout | None) -> Layout:
    """``layout``, else the layout with as many joints as ``frame`` (..., V) has."""
    layout = layout or layout_for_joints(frame.shape[-1])
    if frame.shape[-1] != layout.num_joints:
        raise ValueError(f"layout {layout.name} has {layout.num_joints} joints, the frame {frame.shape[-1]}")
    return layout


def _body_traces(frame: np.ndarray, color: str, name: str, layout: Layout | None = None):
    """Line segments of one body. ``frame``: (3, V) xyz of one frame."""
    import plotly.graph_objects as go

    layout = _layout_of(frame, layout)
    xs, ys, zs = [], [], []
    for child, parent in layout.bones:
        for a in (child, parent):
            xs.append(frame[0, a]); ys.append(frame[1, a]); zs.append(frame[2, a])
        xs.append(None); ys.append(None); zs.append(None)
    bones = go.Scatter3d(x=xs, y=ys, z=zs, mode="lines", line=dict(color=color, width=5),
                         name=name, hoverinfo="skip")
    joints = go.Scatter3d(x=frame[0], y=frame[1], z=frame[2], mode="markers",
                          marker=dict(size=3, color=color), text=list(layout.joint_names),
                          hoverinfo="text", showlegend=False)
    return [bones, joints]


def skeleton_animation(clip: np.ndarray, num_frame: int | None = None, title: str = "",
                       step: int = 2, up_axis: str = "z", layout: Layout | None = None):
    """Interactive animated 3D viewer of one clip (plotly), with a Play button and a slider.

    Args:
        clip: ``(C=3, T, V, M)`` joint coordinates of one clip.
        num_frame: valid frames (default: all).
        step: show every ``step``-th frame (keeps the page small).
        up_axis: ``"z"`` for normalised clips (spine on +z), ``"y"`` for raw Kinect
            camera coordinates (y up).
        layout: the skeleton (default: the one with ``V`` joints, ``skeleton.layout_for_joints``).
    """
    import plotly.graph_objects as go

    clip = np.asarray(clip, dtype=float)
    T = int(num_frame or clip.shape[1])
    frames_idx = list(range(0, T, max(1, step)))
    # Reorder axes so that the up axis is plotly's z.
    order = {"z": (0, 1, 2), "y": (0, 2, 1)}[up_axis]
    data = clip[list(order)]
    persons = [m for m in range(data.shape[3]) if np.abs(data[:, :T, :, m]).sum() > 0]
    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")

    def traces(t: int):
        out = []
        for m in persons:
            out += _body_traces(data[:, t, :, m], colors[m % len(colors)], f"body {m}", layout)
        return out

    valid = data[:, :T][..., persons]
    lo, hi = valid.reshape(3, -1).min(1), valid.reshape(3, -1).max(1)
    centre, half = (lo + hi) / 2, max((hi - lo).max() / 2, 1e-3) * 1.1
    axes = {k: dict(range=[centre[i] - half, centre[i] + half], title=n)
            for i, (k, n) in enumerate(zip(("xaxis", "yaxis", "zaxis"), "xyz" if up_axis == "z" else "xzy"))}
    fig = go.Figure(
        data=traces(frames_idx[0]),
        frames=[go.Frame(data=traces(t), name=str(t)) for t in frames_idx],
    )
    fig.update_layout(
        title=title, height=480, margin=dict(l=0, r=0, t=40, b=0),
        scene=dict(aspectmode="cube", **axes),
        updatemenus=[dict(type="buttons", showactive=False, x=0.05, y=0.05, buttons=[
            dict(label="Play", method="animate",
                 args=[None, dict(frame=dict(duration=60, redraw=True), fromcurrent=True)]),
            dict(label="Pause", method="animate",
                 args=[[None], dict(frame=dict(duration=0, redraw=False), mode="immediate")]),
        ])],
        sliders=[dict(x=0.2, len=0.75, y=0.02, currentvalue=dict(prefix="frame "), steps=[
            dict(method="animate", label=str(t),
                 args=[[str(t)], dict(mode="immediate", frame=dict(duration=0, redraw=True))])
            for t in frames_idx])],
    )
    return fig


def draw_skeleton_2d(ax, frame: np.ndarray, dims: Sequence[int] = (0, 2), color: str = "C0",
                     alpha: float = 1.0, lw: float = 2.0, layout: Layout | None = None) -> None:
    """Draw one body of one frame on a matplotlib axis. ``frame``: (3, V); ``layout`` as in
    :func:`skeleton_animation`."""
    a, b = dims
    for child, parent in _layout_of(frame, layout).bones:
        ax.plot([frame[a, child], frame[a, parent]], [frame[b, child], frame[b, parent]],
                color=color, alpha=alpha, lw=lw)
    ax.scatter(frame[a], frame[b], s=8, color=color, alpha=alpha, zorder=3)
    ax.set_aspect("equal")


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start): same length as ``values``."""
    if window < 1:
        raise ValueError(f"moving-average window must be at least 1, got {window}")
    values = np.asarray(values, dtype=float)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def training_curves(rows: Sequence[dict], columns: Sequence[str], x: str = "step",
                    smooth: int = 1, titles: Sequence[str] | None = None, height: int = 300):
    """Side-by-side curves of a run's log (the rows of ``train.read_log``), one panel per column.

    Each panel shows the raw values (faint) and, when ``smooth > 1``, their trailing
    moving average over ``smooth`` steps. Raises ``ValueError`` naming a column the
    log does not have.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not rows:
        raise ValueError("the log has no rows to plot")
    known = list(rows[0])
    missing = [c for c in [x, *columns] if c not in known]
    if missing:
        raise ValueError(f"log has no column(s) {missing}; it has {known}")
    titles = list(titles) if titles is not None else list(columns)
    fig = make_subplots(rows=1, cols=len(columns), subplot_titles=titles)
    xs = [r[x] for r in rows]
    for i, column in enumerate(columns, start=1):
        ys = [r[column] for r in rows]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=column, showlegend=False,
                                 line=dict(color="#1f77b4", width=1),
                                 opacity=0.35 if smooth > 1 else 1.0), row=1, col=i)
        if smooth > 1:
            fig.add_trace(go.Scatter(x=xs, y=moving_average(ys, smooth), mode="lines",
                                     name=f"{column} (mean of {smooth})", showlegend=False,
                                     line=dict(color="#1f77b4", width=2)), row=1, col=i)
        fig.update_xaxes(title_text=x, row=1, col=i)
    fig.update_layout(height=height, margin=dict(l=40, r=10, t=40, b=40))
    return fig


#: Class colours: the Okabe-Ito palette, told apart with the common kinds of colour blindness too
#: (no run of reds and browns), and marker symbols cycling with another period, so that every
#: class up to 40 has its own (colour, symbol) pair.
CLASS_COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000")
CLASS_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x")


def class_marker(label: int, size: int = 5) -> dict[str, Any]:
    """Plotly marker of class ``label``: colour and symbol from :data:`CLASS_COLORS` and
    :data:`CLASS_SYMBOLS` (distinct pairs for the first 40 classes)."""
    return dict(size=size, color=CLASS_COLORS[label % len(CLASS_COLORS)],
                symbol=CLASS_SYMBOLS[label % len(CLASS_SYMBOLS)])


def embedding_scatter(embeddings: dict[str, dict], class_names: Sequence[str] | None = None,
                      height: int = 300, columns: int = 2):
    """Stored 2-D feature pictures in a grid, points coloured by class.

    Sized for a text column of about 80 characters (~620 px): at most ``columns``
    panels side by side, so that the panel titles have room, and one horizontal legend
    below the grid that wraps onto as many lines as it needs instead of scrolling.

    Args:
        embeddings: panel title -> ``{"xy": [[x, y], ...], "labels": [...]}`` (what
            ``experiments.load_embedding`` returns), in display order.
        class_names: names for the integer labels (default: the numbers).
        height: height of one row of panels, in pixels.
        columns: panels per row.

    Returns:
        A plotly figure with one panel per entry and one legend entry per class
        (clicking a class hides it in every panel).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not embeddings:
        raise ValueError("no embeddings to plot")
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    cols = min(columns, len(embeddings))
    rows = -(-len(embeddings) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(embeddings),
                        horizontal_spacing=0.04, vertical_spacing=0.12 / rows)
    in_legend: set[int] = set()
    for index, (title, emb) in enumerate(embeddings.items()):
        row, col = divmod(index, cols)
        xy = np.asarray(emb["xy"], dtype=float).reshape(-1, 2)
        labels = np.asarray(emb["labels"], dtype=int)
        if len(xy) != len(labels):
            raise ValueError(f"embedding {title!r}: {len(xy)} points but {len(labels)} labels")
        for label in np.unique(labels):
            name = class_names[label] if class_names is not None else str(label)
            keep = labels == label
            fig.add_trace(go.Scatter(
                x=xy[keep, 0], y=xy[keep, 1], mode="markers", name=name, legendgroup=name,
                showlegend=int(label) not in in_legend, hovertext=name, hoverinfo="text",
                marker=class_marker(int(label))),
                row=row + 1, col=col + 1)
            in_legend.add(int(label))
        fig.update_xaxes(showticklabels=False, row=row + 1, col=col + 1)
        fig.update_yaxes(showticklabels=False, row=row + 1, col=col + 1)
    fig.update_annotations(font_size=13)                       # the panel titles
    fig.update_layout(height=rows * height + 40 + 20 * (len(in_legend) // 5 + 1),
                      margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", x=0, xanchor="left", y=-0.02, yanchor="top",
                                  itemsizing="constant", font=dict(size=12)))
    return fig
