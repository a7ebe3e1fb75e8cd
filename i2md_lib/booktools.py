"""Small helpers the chapters use to show the library's own code and tables.

A chapter shows code with :func:`show_source`; ``between=(first, last)`` keeps the
lines from the one containing ``first`` to the next one containing ``last``. A
marker that is not (or no longer) in the code is an error, never a silent
fallback to the whole listing. ``tests/test_book_listings.py`` checks every
listing the book shows.
"""
from __future__ import annotations

import inspect
import textwrap
from typing import Any


def listing(obj: Any, between: tuple[str, str] | None = None) -> str:
    """The dedented source of a library function or class, or the part ``between`` two markers.

    Raises:
        ValueError: a marker is missing (the message names the object and the marker).
    """
    source = textwrap.dedent(inspect.getsource(obj))
    if between is None:
        return source.rstrip()
    first, last = between
    lines = source.splitlines()
    start = next((i for i, line in enumerate(lines) if first in line), None)
    if start is None:
        raise ValueError(f"{_name(obj)} has no line containing {first!r}: update the chapter's listing")
    end = next((i for i in range(start, len(lines)) if last in lines[i]), None)
    if end is None:
        raise ValueError(f"{_name(obj)} has no line containing {last!r} after {first!r}: "
                         f"update the chapter's listing")
    return textwrap.dedent("\n".join(lines[start:end + 1])).rstrip()


def show_source(obj: Any, between: tuple[str, str] | None = None):
    """Display :func:`listing` as a highlighted code block headed by the object's full name."""
    from IPython.display import Markdown

    return Markdown(f"`{_name(obj)}`\n\n```python\n{listing(obj, between)}\n```")


def _name(obj: Any) -> str:
    return f"{inspect.getmodule(obj).__name__}.{obj.__qualname__}"


def profile_banner(cfg) -> None:
    """Print the scale profile and the sizes that matter, at the top of a chapter."""
    d, e, p = cfg.data, cfg.encoder, cfg.pretrain
    print(f"profile: {cfg.profile} | data: {d.dataset} {d.benchmark}, window {d.window} frames | "
          f"encoder: {e.kind} {e.num_layers}x{e.hidden_size} | queue {p.queue_size}, "
          f"batch {p.batch_size}, {p.epochs} epochs")
