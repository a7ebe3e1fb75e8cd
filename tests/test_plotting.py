"""The book's display helpers: moving average, training curves, embedding scatters."""
from __future__ import annotations

import numpy as np
import pytest

from i2md_lib.plotting import class_marker, embedding_scatter, moving_average, training_curves


def test_moving_average_is_a_trailing_mean():
    values = [4.0, 2.0, 6.0, 0.0, 10.0]
    expected = [4.0, 3.0, 4.0, 8 / 3, 16 / 3]          # windows of up to 3, by hand
    assert np.allclose(moving_average(values, 3), expected)
    assert np.allclose(moving_average(values, 1), values)
    with pytest.raises(ValueError, match="window"):
        moving_average(values, 0)


def test_training_curves_panels_and_smoothing():
    rows = [{"step": s, "total": float(10 - s), "acc_joint": s / 10} for s in range(1, 7)]
    fig = training_curves(rows, ["total", "acc_joint"], smooth=2)
    assert len(fig.data) == 4                          # raw + smoothed per panel
    raw, smoothed = fig.data[0], fig.data[1]
    assert list(raw.y) == [9.0, 8.0, 7.0, 6.0, 5.0, 4.0]
    assert np.allclose(smoothed.y, [9.0, 8.5, 7.5, 6.5, 5.5, 4.5])
    assert list(fig.data[2].x) == [1, 2, 3, 4, 5, 6]
    assert [a.text for a in fig.layout.annotations] == ["total", "acc_joint"]


def test_training_curves_names_a_missing_column():
    with pytest.raises(ValueError, match="nce_motion"):
        training_curves([{"step": 1, "total": 1.0}], ["nce_motion"])
    with pytest.raises(ValueError, match="no rows"):
        training_curves([], ["total"])


def test_embedding_scatter_one_trace_per_class_and_panel():
    a = {"xy": [[0, 0], [1, 1], [2, 2], [3, 3]], "labels": [0, 1, 1, 2]}
    b = {"xy": [[5, 5], [6, 6]], "labels": [2, 2]}
    fig = embedding_scatter({"random": a, "MoCo": b}, class_names=["sit", "wave", "kick"])
    names = [(t.name, t.showlegend, len(t.x)) for t in fig.data]
    assert names == [("sit", True, 1), ("wave", True, 2), ("kick", True, 1), ("kick", False, 2)]
    assert list(fig.data[1].x) == [1.0, 2.0]
    assert fig.data[2].marker.color == fig.data[3].marker.color   # a class keeps its colour


def test_every_class_of_a_large_dataset_has_its_own_colour_and_marker():
    pairs = [(m["color"], m["symbol"]) for m in map(class_marker, range(40))]
    assert len(set(pairs)) == 40
    colours = {m["color"] for m in map(class_marker, range(13))}
    assert len(colours) == 8                        # the palette's every colour, for NTU-like class counts
    fig = embedding_scatter({"a": {"xy": [[0, 0], [1, 1]], "labels": [0, 9]}})
    assert [t.marker.symbol for t in fig.data] == [class_marker(0)["symbol"], class_marker(9)["symbol"]]


def test_embedding_scatter_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="3 points but 2 labels"):
        embedding_scatter({"x": {"xy": [[0, 0], [1, 1], [2, 2]], "labels": [0, 1]}})


def test_embedding_scatter_grid_fits_the_column_and_names_every_class():
    pictures = {name: {"xy": [[0, 0], [1, 1]], "labels": labels}
                for name, labels in [("a", [0, 0]), ("b", [0, 1]), ("c", [1, 1])]}
    fig = embedding_scatter(pictures, class_names=["sit", "wave"], height=250)
    rows, cols = fig._get_subplot_rows_columns()
    assert (len(rows), len(cols)) == (2, 2)                    # three panels: two per row
    in_legend = [(t.name, t.xaxis) for t in fig.data if t.showlegend]
    assert in_legend == [("sit", "x"), ("wave", "x2")]           # "wave" first appears in panel b
    assert fig.layout.legend.orientation == "h" and fig.layout.height >= 2 * 250
    one_row = embedding_scatter(pictures, columns=3)
    assert len(one_row._get_subplot_rows_columns()[0]) == 1
    with pytest.raises(ValueError, match="columns must be at least 1"):
        embedding_scatter(pictures, columns=0)
