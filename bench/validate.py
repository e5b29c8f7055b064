"""Validation engine throughput on a realistic 1,000-record penalty batch, one core.

    .venv/bin/python bench/validate.py [--rounds N]

Prints records/s for validate() (prepare + compiled schema with identifier formats + cross-field
rules: the hot path) and for check() (validate + normalize + derive the subject and the window).
Identifier check caches are cleared before each round, so every USCC is checked afresh.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._machine import REFERENCE_RATE, clear_caches
from bench.data import penalty_batch
from credit_hub.config import get_settings
from credit_hub.standards.registry import Standards


def measure(label: str, func: object, batch: list[dict[str, object]], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        clear_caches()
        started = time.perf_counter()
        for record in batch:
            func(record)  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    rate = len(batch) / best
    print(f"{label:<44} {rate:>12,.0f} records/s   ({best * 1e6 / len(batch):.2f} µs/record)")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    found = Standards.load(get_settings().schemas_dir).resolve("administrative_penalty")
    batch = penalty_batch(1000)
    size = sum(len(orjson.dumps(r)) for r in batch) / len(batch)
    print(f"batch: {len(batch)} penalty records, {size:,.0f} bytes each on average")
    engine = found.engine
    assert all(engine.check(r).ok for r in batch), "the generated batch must be valid"
    validate_rate = measure(
        "validate (schema + identifiers + rules)", engine.validate, batch, args.rounds
    )
    measure("check (validate + normalize + derive)", engine.check, batch, args.rounds)
    target = 150_000
    verdict = "met" if validate_rate >= target else "NOT met"
    print(f"target for validate: {target:,} records/s -> {verdict}")
    print(f"the reference machine (docs/performance.md) measured {REFERENCE_RATE:,} for validate")


if __name__ == "__main__":
    main()
