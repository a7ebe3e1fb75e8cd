"""The version-2 testbed (``tools/testbed.py --design v2``) under the command its results record.

    OMP_NUM_THREADS=1 python tools/testbed_v2.py --seeds 0 1 --jobs 2 --parts val test
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from testbed import PRETRAINED, VARIANTS, V2_BOOK  # noqa: E402,F401  (the names tests use)
from testbed import main as _main  # noqa: E402


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``tools/testbed.py`` with the v2 design, recorded as ``tools/testbed_v2.py``."""
    return _main(argv, design="v2", tool="tools/testbed_v2.py")


if __name__ == "__main__":
    main()
