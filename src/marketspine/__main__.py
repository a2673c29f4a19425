"""``python -m marketspine`` and the ``marketspine`` console script."""

from __future__ import annotations

import sys


def run() -> None:
    try:
        from ._cli.main import main
    except KeyboardInterrupt:  # Ctrl-C while the command line was still loading
        print("marketspine: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    main()


if __name__ == "__main__":
    run()
