"""A bulk loader for the read benchmarks: generated records checked and stored in-process, the
way `POST /v1/records` does it (check_records, then store), without HTTP in between.

Subjects are numbered 0..subjects-1; each has a USCC, a generated Chinese company name and, for
one in twenty, a former name. Record n of the load goes to subject n (permuted) while
n < subjects, so every subject has a record; later records go to random subjects, one in ten of
them to the busiest 1%. Decision dates fall within the last 60 days: every record is inside its
publication window (a minor penalty is shown for three months), so profiles are not empty.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import Any

import orjson

from bench.data import DEPARTMENT_USCC, licence, penalty, uscc
from credit_hub.access import service as access
from credit_hub.access.models import ClientKind
from credit_hub.access.service import Principal
from credit_hub.config import Settings
from credit_hub.db import make_engine, make_sessionmaker
from credit_hub.ingest.schemas import Mode
from credit_hub.ingest.service import Checked, body_digest, check_records, store
from credit_hub.keyring import load_keyring
from credit_hub.standards.registry import Standards

PENALTY = "administrative_penalty"
LICENSING = "administrative_licensing"
STANDARDS = (PENALTY, LICENSING)
BATCH = 5_000
WINDOW_DAYS = 60
PERMUTE = 7_919  # prime: n * PERMUTE % subjects visits every subject once

_DIVISIONS = ["350100", "350200", "440300", "440100", "110105", "310115", "330100", "510100"]
_CITIES = [
    "福州", "厦门", "泉州", "深圳", "广州", "杭州", "宁波", "成都", "上海", "北京",
    "南京", "苏州", "武汉", "长沙", "西安", "重庆", "天津", "青岛", "合肥", "昆明",
]  # fmt: skip
_TRADE = (
    "鑫源华泰恒通宏达盛兴永安金瑞丰裕嘉禾德隆昌明新锦富海天诚信佳利润祥和博远中广东方"
    "晨星辉煌汇聚万家乐康美尚品优选云帆启航聚力同创卓越精工绿洲蓝海银河瑞景旺"
)
_INDUSTRY = [
    "商贸", "贸易", "餐饮管理", "食品", "建材", "科技", "电子", "物流", "建筑工程", "医药",
    "服装", "家具", "农业开发", "酒店管理", "文化传媒", "汽车销售", "五金机电", "化工",
    "环保科技", "信息技术",
]  # fmt: skip
_FORMS = ["有限公司", "有限公司", "有限公司", "股份有限公司", "有限责任公司"]


def subject_uscc(subject: int) -> str:
    return uscc(10_000_000 + subject, division=_DIVISIONS[subject % len(_DIVISIONS)])


def unknown_uscc(n: int) -> str:
    """A valid USCC that no generated subject has (for screening misses)."""
    return uscc(90_000_000 + n, division="350100")


def _name(rng: random.Random) -> str:
    trade = rng.choice(_TRADE) + rng.choice(_TRADE)
    return (
        f"{rng.choice(_CITIES)}市{trade}{rng.choice(_INDUSTRY)}{rng.choice(_FORMS)}"
        if rng.random() < 0.8
        else f"{rng.choice(_CITIES)}{trade}{rng.choice(_INDUSTRY)}{rng.choice(_FORMS)}"
    )


def subject_name(subject: int) -> str:
    return _name(random.Random(subject * 2 + 1))


def former_name(subject: int) -> str | None:
    """One subject in twenty was renamed: its oldest records carry the former name."""
    return _name(random.Random(subject * 2 + 2)) if subject % 20 == 0 else None


@dataclass(frozen=True)
class Plan:
    records: int
    subjects: int
    today: date

    @property
    def batches(self) -> int:
        return -(-self.records // BATCH)

    def standard(self, batch: int) -> str:
        return LICENSING if batch % 10 == 9 else PENALTY

    def subject_of(self, n: int, rng: random.Random) -> int:
        if n < self.subjects:
            return n * PERMUTE % self.subjects
        if rng.random() < 0.1:
            return rng.randrange(max(1, self.subjects // 100))
        return rng.randrange(self.subjects)

    def batch(self, batch: int) -> tuple[str, list[dict[str, Any]]]:
        """The records of one batch: one standard, `BATCH` records (fewer in the last)."""
        rng = random.Random(batch)
        standard = self.standard(batch)
        records = []
        for n in range(batch * BATCH, min(self.records, (batch + 1) * BATCH)):
            subject = self.subject_of(n, rng)
            if standard == LICENSING:
                record = licence(n, subject=subject, rng=rng)
            else:
                record = penalty(n, subject=subject, rng=rng)
            age = rng.randint(1, WINDOW_DAYS - 1)
            record["counterpart_name"] = subject_name(subject)
            old = former_name(subject)
            if old is not None and rng.random() < 0.5:
                age = WINDOW_DAYS  # the oldest decision: the name it had then
                record["counterpart_name"] = old
            record["counterpart_uscc"] = subject_uscc(subject)
            day = (self.today - timedelta(days=age)).strftime("%Y/%m/%d")
            record["decision_date"] = day
            if standard == LICENSING:
                record["valid_from"] = day
            records.append(record)
        return standard, records


@dataclass(frozen=True)
class Prepared:
    batch: int
    standard: str
    digest: str
    checked: list[Checked]
    rejected: int
    first_problem: str | None


_state: dict[str, Any] = {}


def _init(settings: Settings, plan: Plan, principal: Principal) -> None:
    standards = Standards.load(settings.schemas_dir)
    _state.update(
        plan=plan,
        principal=principal,
        keyring=load_keyring(settings),
        found={s: standards.resolve(s) for s in STANDARDS},
    )


def _prepare(batch: int) -> Prepared:
    """Generate and check one batch (in a pool process: no database)."""
    standard, records = _state["plan"].batch(batch)
    body = orjson.dumps({"standard": standard, "mode": "partial", "records": records})
    checked, rejected, _warnings = check_records(
        _state["found"][standard], records, client=_state["principal"], keyring=_state["keyring"]
    )
    problem = None
    if rejected:
        first = rejected[0]
        problem = f"{first.code} at {first.pointer}: {first.message}"
    return Prepared(batch, standard, body_digest(body), checked, len(rejected), problem)


@dataclass(frozen=True)
class Clients:
    department: Principal
    agency_keys: list[str]


def register(settings: Settings, *, keys: int) -> Clients:
    """A department and an agency registered directly, committed; `keys` agency API keys."""
    engine = make_engine(settings)
    try:
        with make_sessionmaker(engine).begin() as session:
            department = access.create_client(
                session,
                kind=ClientKind.DEPARTMENT,
                name="福州市市场监督管理局",
                uscc=DEPARTMENT_USCC,
                standards=list(STANDARDS),
                scopes=[],
                pushes_for=[],
            )
            agency = access.create_client(
                session,
                kind=ClientKind.AGENCY,
                name="福州市公共资源交易中心",
                uscc=uscc(2, prefix="12"),
                standards=list(STANDARDS),
                scopes=[],
                pushes_for=[],
            )
            issued = [access.issue_key(session, agency, label=f"bench {i}")[1] for i in range(keys)]
            principal = Principal.of(department)
    finally:
        engine.dispose()
    return Clients(principal, issued)


def _bounded(pool: Any, batches: int, *, window: int) -> Iterator[Prepared]:
    """The prepared batches in order, at most `window` ahead of the store (bounded memory)."""
    pending: deque[Any] = deque()
    upcoming = iter(range(batches))
    for batch in islice(upcoming, window):
        pending.append(pool.apply_async(_prepare, (batch,)))
    while pending:
        item: Prepared = pending.popleft().get(timeout=600)
        if (batch := next(upcoming, None)) is not None:
            pending.append(pool.apply_async(_prepare, (batch,)))
        yield item


@dataclass
class Loaded:
    records: int
    created: int
    seconds: float
    store_seconds: float
    analyze_seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def load(
    settings: Settings,
    plan: Plan,
    department: Principal,
    *,
    processes: int,
    progress: Callable[[int, float], None] | None = None,
    time_limit: float = 3600,
) -> Loaded:
    """Check batches in `processes` pool processes while this one stores them, one transaction
    per batch; on PostgreSQL, ANALYZE each time the store has doubled. Raises if a record is
    rejected or the time limit passes."""
    keyring = load_keyring(settings)
    standards = Standards.load(settings.schemas_dir)
    found = {s: standards.resolve(s) for s in STANDARDS}
    engine = make_engine(settings)
    factory = make_sessionmaker(engine)
    context = multiprocessing.get_context("fork")
    started = time.monotonic()
    stored = created = 0
    store_seconds = analyze_seconds = 0.0
    postgres = engine.dialect.name == "postgresql"
    analyze_at = BATCH
    try:
        with context.Pool(processes, _init, (settings, plan, department)) as pool:
            for item in _bounded(pool, plan.batches, window=2 * processes):
                if item.rejected:
                    raise RuntimeError(
                        f"batch {item.batch}: {item.rejected} record(s) rejected, "
                        f"first: {item.first_problem}"
                    )
                begun = time.monotonic()
                with factory.begin() as session:
                    report, _ = store(
                        session,
                        keyring,
                        found[item.standard],
                        item.checked,
                        [],
                        [],
                        client=department,
                        mode=Mode.PARTIAL,
                        body_sha256=item.digest,
                        idempotency_key=None,
                        received=len(item.checked),
                        received_at=datetime.now(UTC),
                    )
                store_seconds += time.monotonic() - begun
                stored += len(item.checked)
                if postgres and stored >= analyze_at:
                    # What autovacuum does as a table grows (it is off on the bench cluster):
                    # without statistics, the lookup of existing source ids scans the table.
                    began_analyze = time.monotonic()
                    with engine.connect() as connection:
                        connection.exec_driver_sql("ANALYZE")
                        connection.commit()
                    analyze_seconds += time.monotonic() - began_analyze
                    analyze_at *= 2
                created += report.counts.created
                elapsed = time.monotonic() - started
                if progress is not None:
                    progress(stored, elapsed)
                if elapsed > time_limit:
                    pool.terminate()
                    raise RuntimeError(f"loading took over {time_limit:.0f} s; stopped")
    finally:
        engine.dispose()
    return Loaded(stored, created, time.monotonic() - started, store_seconds, analyze_seconds)
