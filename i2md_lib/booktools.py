"""Small helpers the chapters use to show the library's own code and tables."""
from __future__ import annotations

import inspect
import textwrap
from typing import Any


def show_source(obj: Any, lines: tuple[int, int] | None = None):
    """Display the source of a library function or class as a highlighted code block.

    ``lines`` = (first, last), 1-based and inclusive, keeps only part of it.
    """
    from IPython.display import Markdown

    source = textwrap.dedent(inspect.getsource(obj))
    if lines is not None:
        first, last = lines
        source = "".join(source.splitlines(keepends=True)[first - 1:last])
    module = inspect.getmodule(obj).__name__
    return Markdown(f"`{module}.{obj.__qualname__}`\n\n```python\n{source.rstrip()}\n```")


def profile_banner(cfg) -> None:
    """Print the scale profile and the sizes that matter, at the top of a chapter."""
    d, e, p = cfg.data, cfg.encoder, cfg.pretrain
    print(f"profile: {cfg.profile} | data: {d.dataset} {d.benchmark}, window {d.window} frames | "
          f"encoder: {e.kind} {e.num_layers}x{e.hidden_size} | queue {p.queue_size}, "
          f"batch {p.batch_size}, {p.epochs} epochs")
