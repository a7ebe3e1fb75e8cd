"""Sphinx extension: serve plotly.js from the built book itself (works offline).

Chapters render plotly figures with the ``book`` renderer of
:func:`i2md_lib.plotting.use_book_renderer`, whose HTML expects a global
``Plotly``. This extension adds ``_static/plotly.min.js`` to every page and copies
that file from the installed plotly package when the HTML build finishes.
"""
from __future__ import annotations

import shutil
from pathlib import Path


def _copy_plotly_js(app, exc) -> None:
    if exc is not None or app.builder.format != "html":
        return
    import plotly

    source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    target = Path(app.outdir) / "_static" / "plotly.min.js"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def setup(app):
    app.add_js_file("plotly.min.js")
    app.connect("build-finished", _copy_plotly_js)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
