"""Crash consistency at length: tests/test_crash_consistency.py with many more SIGKILLs.

    .venv/bin/python bench/crash.py [--kills 200] [--db sqlite,postgres] [--seed N]

Runs the test once per database (PostgreSQL: a database next to
postgresql://postgres@127.0.0.1:5432/test, dropped afterwards) with CREDIT_HUB_CRASH_KILLS set,
and prints its figures: kills survived, pushes acknowledged, records and upload rows checked,
retries, audit events verified. Exits 1 when any run fails; the seed in its output replays it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_TEST_URL = "postgresql://postgres@127.0.0.1:5432/test"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--db", default="sqlite,postgres")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    failed = 0
    for database in args.db.split(","):
        env = os.environ | {"CREDIT_HUB_CRASH_KILLS": str(args.kills)}
        env.pop("CREDIT_HUB_TEST_DATABASE_URL", None)
        if database == "postgres":
            env["CREDIT_HUB_TEST_DATABASE_URL"] = PG_TEST_URL
        if args.seed is not None:
            env["CREDIT_HUB_CRASH_SEED"] = str(args.seed)
        print(f"== {database}: {args.kills} kills", flush=True)
        done = subprocess.run(
            [
                str(ROOT / ".venv" / "bin" / "pytest"),
                "-q",
                "-s",
                "-p",
                "no:cacheprovider",
                "tests/test_crash_consistency.py",
            ],
            cwd=ROOT,
            env=env,
            check=False,
        )
        failed += done.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
