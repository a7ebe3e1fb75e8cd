"""Sphinx extension: include each script of a page once.

sphinx-thebe 0.3 adds its inline configuration script (``const THEBE_JS_URL = ...``)
both to Sphinx's registry and to the HTML builder, so every page declared the same
``const`` twice and the browser raised a SyntaxError on each page load. This drops
duplicates (same file or inline body and attributes, whatever their priority) from
``script_files``, keeping the first.
"""
from __future__ import annotations


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, unique = set(), []
    for script in scripts:
        key = (str(getattr(script, "filename", script) or ""),   # inline scripts: None or ""
               tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique   # in place: it is the builder's own list


def setup(app):
    app.connect("html-page-context", _drop_duplicate_scripts, priority=900)   # after the others
    return {"parallel_read_safe": True, "parallel_write_safe": True}
