"""``python -m mail_monitor.config [--check] [docs/configuration.md]``: regenerate the docs' key tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mail_monitor.config.render import regenerate_docs


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m mail_monitor.config", description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=Path("docs/configuration.md"))
    parser.add_argument("--check", action="store_true", help="only report whether the file is up to date")
    args = parser.parse_args()
    text = args.path.read_text(encoding="utf-8")
    fresh = regenerate_docs(text)
    if fresh == text:
        return 0
    if args.check:
        print(f"{args.path}: key tables out of date; run: python -m mail_monitor.config {args.path}", file=sys.stderr)
        return 1
    args.path.write_text(fresh, encoding="utf-8")
    print(f"{args.path}: key tables regenerated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
