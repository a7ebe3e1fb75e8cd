"""Progress bars that suit where they are written.

In a terminal a bar redraws itself as often as tqdm likes. Written to a file or a
pipe (a background run, CI, ``make results > log``) every redraw is another
carriage-return update in the file, so there it updates at most every
:data:`FILE_INTERVAL_S` seconds.
"""
from __future__ import annotations

import sys
from typing import IO, Any, Iterable

from tqdm import tqdm

#: Seconds between updates of a bar that is not written to a terminal.
FILE_INTERVAL_S = 10.0


def writes_to_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``, where tqdm writes) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # closed or unusual streams
        return False


def progress_bar(iterable: Iterable[Any] | None = None, *, desc: str = "", disable: bool = False,
                 file: IO[str] | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, desc=..., ...)``, updating at most every :data:`FILE_INTERVAL_S`
    seconds when ``file`` (default ``sys.stderr``) is not a terminal."""
    if not writes_to_terminal(file):
        kwargs.setdefault("mininterval", FILE_INTERVAL_S)
        kwargs.setdefault("maxinterval", max(FILE_INTERVAL_S, kwargs["mininterval"]))
    return tqdm(iterable, desc=desc, disable=disable, file=file, **kwargs)
