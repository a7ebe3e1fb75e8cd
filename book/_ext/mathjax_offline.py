"""Sphinx extension: serve MathJax from the built book itself (math renders offline).

Sphinx loads MathJax 3 from a CDN by default. When the PyPI package
``sphinx-mathjax-offline`` (which ships the MathJax 3 distribution as data files) is
installed, this extension points ``mathjax_path`` at ``_static/mathjax/`` and copies
the files MathJax needs there when the HTML build finishes. Without the package the
book keeps the CDN (math then needs a network connection) and the build says so.
"""
from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

from sphinx.util import logging

PACKAGE = "sphinx-mathjax-offline"
ENTRY = "tex-mml-chtml.js"          # the component Sphinx's CDN default also uses
#: Loaded on demand by that component: fonts, TeX extensions (autoload), menu, a11y.
NEEDED = (ENTRY, "input", "output", "ui", "a11y", "sre", "adaptors")

logger = logging.getLogger(__name__)


def mathjax_folder() -> Path | None:
    """The installed MathJax distribution (the folder holding ``tex-mml-chtml.js``), if any."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name == ENTRY and file.parent.name == "mathjax":
            return Path(dist.locate_file(file)).parent
    return None


def _use_local_mathjax(app, config) -> None:
    folder = mathjax_folder()
    app._i2md_mathjax_folder = folder
    if folder is None:
        logger.info(f"mathjax_offline: {PACKAGE} is not installed; math loads MathJax from its CDN")
        return
    config.mathjax_path = f"mathjax/{ENTRY}"


def _copy_mathjax(app, exc) -> None:
    folder = getattr(app, "_i2md_mathjax_folder", None)
    if exc is not None or folder is None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / "mathjax"
    target.mkdir(parents=True, exist_ok=True)
    for name in NEEDED:
        source = folder / name
        if source.is_dir():
            shutil.copytree(source, target / name, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copyfile(source, target / name)


def setup(app):
    app.connect("config-inited", _use_local_mathjax)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
