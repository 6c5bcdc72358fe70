"""Command line: ``python -m maelib lessons ...`` (also installed as the ``maelib`` command)."""

from __future__ import annotations

import argparse
import sys

from . import course


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="maelib", description="Masked Autoencoders, taught by running them.")
    sub = parser.add_subparsers(dest="command", required=True)

    lessons = sub.add_parser("lessons", help="list, run or re-link the course's notebooks")
    lsub = lessons.add_subparsers(dest="action", required=True)
    lsub.add_parser("list", help="list the lessons")
    run = lsub.add_parser("run", help="execute lessons top to bottom into rendered copies")
    run.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all)")
    run.add_argument("--preset", choices=["smoke", "cpu", "gpu"], help="default: MAELIB_PRESET or by device")
    run.add_argument("--out", default=None, help="folder for rendered copies (default: runs/notebooks)")
    run.add_argument("--inplace", action="store_true", help="overwrite the notebooks (to commit a new run)")
    run.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    lsub.add_parser("sync-urls", help="rewrite Colab badges and install cells from pyproject.toml")

    args = parser.parse_args(argv)
    if args.command == "lessons":
        if args.action == "list":
            for path in course.lesson_paths():
                print(path.name)
        elif args.action == "run":
            results = course.run_lessons(args.lessons, preset=args.preset, out_dir=args.out,
                                         inplace=args.inplace, timeout=args.timeout)
            for path, seconds in results:
                print(f"{path.name}: {seconds / 60:.1f} min")
        elif args.action == "sync-urls":
            for path in course.sync_urls():
                print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
