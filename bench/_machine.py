"""How fast this machine runs the hub's own Python today, printed beside a benchmark's figures.

The issues' targets name absolute figures "on this 2-core machine", but the machines the
benchmarks ran on differed by more than two to one from session to session (same code, same
data): without a reference printed with them, figures of different runs cannot be compared.
The reference is `bench/validate.py`'s validate() rate on one core (pure Python and
jsonschema-rs, no I/O), taken in about two seconds at the start and at the end of a run.
"""

from __future__ import annotations

import statistics
import time

from bench.data import penalty_batch
from credit_hub.config import get_settings
from credit_hub.standards import engine as engine_module
from credit_hub.standards.registry import Standards
from credit_hub.subjects import identifiers as ids

# validate() records/s where the third session measured its figures (docs/performance.md):
# the machine on which the ingestion and read targets came closest to being met. That figure
# is bench/validate.py's best of 30 rounds; the median taken here reads a few percent lower
# on a steady machine.
REFERENCE_RATE = 150_045


def clear_caches() -> None:
    """Forget every identifier and date the engine has checked: each round checks afresh."""
    ids.is_valid_uscc.cache_clear()
    engine_module._uscc_ok.cache_clear()
    engine_module.parse_date.cache_clear()


def validate_rate(rounds: int = 100) -> float:
    """validate() records/s on a 1,000-record penalty batch: the median of `rounds` (~2 s).
    The median, not the best: this machine's speed was seen to swing by a third from one
    second to the next, and a run is described by its usual speed, not its fastest moment."""
    engine = Standards.load(get_settings().schemas_dir).resolve("administrative_penalty").engine
    batch = penalty_batch(1000)
    seconds = []
    for _ in range(rounds):
        clear_caches()
        started = time.perf_counter()
        for record in batch:
            engine.validate(record)
        seconds.append(time.perf_counter() - started)
    return len(batch) / statistics.median(seconds)


def describe(*rates: float) -> str:
    """The reference figure(s) of a run: taken at its start and, when given, at its end (this
    machine's speed has been seen to change by half within minutes)."""
    low, high = min(rates), max(rates)
    measured = f"{rates[0]:,.0f} records/s"
    if len(rates) > 1:
        measured += f" at the start, {rates[-1]:,.0f} at the end"
    share = f"{low / REFERENCE_RATE:.0%}"
    if f"{high / REFERENCE_RATE:.0%}" != share:
        share += f"-{high / REFERENCE_RATE:.0%}"
    return (
        f"machine: validate() on one core {measured}, {share} of the reference machine's "
        f"{REFERENCE_RATE:,} (docs/performance.md); figures of runs on machines of different "
        "speed do not compare"
    )
