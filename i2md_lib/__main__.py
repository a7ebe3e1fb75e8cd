"""``python -m i2md_lib``: see :mod:`i2md_lib.cli`."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
