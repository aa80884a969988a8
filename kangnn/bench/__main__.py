"""``python -m kangnn.bench layer|conv|model [options]``."""

from __future__ import annotations

import importlib
import sys

KINDS = ("layer", "conv", "model")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in KINDS:
        print(f"usage: python -m kangnn.bench {{{'|'.join(KINDS)}}} [options]", file=sys.stderr)
        raise SystemExit(2)
    importlib.import_module(f"kangnn.bench.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    main()
