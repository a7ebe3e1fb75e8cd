"""Progress bars: live in a terminal, an update every few seconds in a file."""
from __future__ import annotations

import io

from i2md_lib.progress import FILE_INTERVAL_S, progress_bar, writes_to_terminal


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_file_gets_an_update_every_few_seconds_at_most():
    out = io.StringIO()
    bar = progress_bar(range(3), desc="x", file=out)
    assert bar.mininterval == FILE_INTERVAL_S >= 5
    list(progress_bar(range(10000), desc="fast", file=out))    # a fast loop: a handful of redraws
    assert out.getvalue().count("\r") < 10
    assert not writes_to_terminal(out)


def test_a_terminal_keeps_tqdms_own_pace():
    term = FakeTerminal()
    assert writes_to_terminal(term)
    assert progress_bar(range(3), file=term).mininterval < 1
