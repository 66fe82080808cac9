"""python -m bench [--smoke] [--parts P2,P3] [--no-save]: measure, print the table, save it under bench/results/."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

from . import report
from .parts import FULL, PARTS, SMOKE

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition, no VMs (CI)")
    parser.add_argument("--parts", default=None, help="comma-separated subset of P1..P8 (default: all; P1 and P8, which boot VMs, not with --smoke)")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/<date>.md")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("the benchmarks need root: they create network namespaces and bind ports 67, 69 and 4011")
    profile = SMOKE if args.smoke else FULL
    chosen = args.parts.split(",") if args.parts else [part for part in PARTS if not (args.smoke and part in ("P1", "P8"))]
    rows = []
    started = time.monotonic()

    def log(message):
        print("[%5.0f s] %s" % (time.monotonic() - started, message), file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="nixie-bench-") as workdir:
        for part in chosen:
            log("%s ..." % part)
            (Path(workdir) / part).mkdir()
            rows += PARTS[part](profile, Path(workdir) / part, log)
    text = report.render(rows, smoke=args.smoke, parts=chosen, seconds=time.monotonic() - started)
    print(text)
    if not args.no_save and not args.smoke:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / ("%s.md" % datetime.date.today().isoformat())
        path.write_text(text, encoding="utf-8")
        log("saved %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
