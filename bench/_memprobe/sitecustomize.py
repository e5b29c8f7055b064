"""Memory probe for `bench/soak.py --probe DIR` (never imported by the service itself).

soak.py puts this folder on the server's PYTHONPATH and sets CREDIT_HUB_BENCH_PROBE=DIR; Python
imports `sitecustomize` at start-up in every process, including each spawned uvicorn worker.
In a process that serves (a worker), a daemon thread appends one JSON line to
DIR/<pid>.jsonl every CREDIT_HUB_BENCH_PROBE_SECONDS (default 15) with:

- /proc/self/smaps_rollup: Rss split into anonymous, file-backed and shared memory;
- SQLite's own allocator figures (sqlite3_memory_used, the page-cache counters) through
  ctypes on the same libsqlite3 that `_sqlite3` links;
- glibc mallinfo2: heap in use vs. free-but-held (fragmentation), mmapped blocks;
- Python: allocated blocks, gc-tracked objects, every lru_cache's size, SQLAlchemy compiled
  caches, pool checkouts;
- with CREDIT_HUB_BENCH_PROBE_TRIM=1: RSS before and after malloc_trim(0) (reclaimable free heap);
- with CREDIT_HUB_BENCH_PROBE_TRACEMALLOC=N: tracemalloc (N frames) traced bytes, and at every
  sample the top growth by line since the first sample (DIR/<pid>-top.txt).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

_DIR = os.environ.get("CREDIT_HUB_BENCH_PROBE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _rollup() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            out[key] = int(parts[0])
    return out


def _sqlite() -> dict[str, int]:
    name = ctypes.util.find_library("sqlite3") or "libsqlite3.so.0"
    lib = ctypes.CDLL(name)
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    lib.sqlite3_memory_highwater.restype = ctypes.c_int64
    current, high = ctypes.c_int64(), ctypes.c_int64()
    out = {
        "memory_used": lib.sqlite3_memory_used(),
        "memory_highwater": lib.sqlite3_memory_highwater(0),
    }
    # SQLITE_STATUS_PAGECACHE_OVERFLOW (2): page-cache bytes taken from the general heap.
    for code, key in ((2, "pagecache_overflow"), (7, "pagecache_size")):
        lib.sqlite3_status64(code, ctypes.byref(current), ctypes.byref(high), 0)
        out[key] = current.value
    return out


def _python(deep: bool) -> dict[str, object]:
    out: dict[str, object] = {
        "allocated_blocks": sys.getallocatedblocks(),
        "gc_objects": len(gc.get_objects()) if deep else None,
    }
    if not deep:
        return out
    lru = {}
    compiled = []
    pools = []
    for obj in gc.get_objects():
        if isinstance(obj, functools._lru_cache_wrapper):
            info = obj.cache_info()
            if info.currsize >= 256 or "credit_hub" in str(getattr(obj, "__module__", "")):
                name = getattr(obj, "__qualname__", None) or repr(getattr(obj, "__wrapped__", obj))
                lru[f"{getattr(obj, '__module__', '?')}.{name}"] = info.currsize
        elif type(obj).__name__ == "Engine" and type(obj).__module__.startswith("sqlalchemy"):
            cache = getattr(obj, "_compiled_cache", None)
            compiled.append(len(cache) if cache is not None else -1)
            pool = obj.pool
            pools.append(
                {
                    "size": pool.size() if hasattr(pool, "size") else None,
                    "checkedin": pool.checkedin() if hasattr(pool, "checkedin") else None,
                    "overflow": pool.overflow() if hasattr(pool, "overflow") else None,
                }
            )
    out |= {"lru": lru, "compiled_cache": compiled, "pools": pools}
    return out


def _loop(folder: Path, every: float) -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    trim = os.environ.get("CREDIT_HUB_BENCH_PROBE_TRIM") == "1"
    state: dict[str, object] = {"started": time.monotonic(), "first": None}
    while True:
        time.sleep(every)
        if "sqlalchemy" not in sys.modules:
            continue  # the supervisor or a tool, not a worker
        try:
            _sample(libc, trim, folder, state)
        except Exception as exc:  # a probe never stops probing
            print(f"bench-memprobe: {exc!r}", file=sys.stderr)


def _sample(libc: ctypes.CDLL, trim: bool, folder: Path, state: dict[str, object]) -> None:
    import tracemalloc

    started = state["started"]
    assert isinstance(started, float)
    record: dict[str, object] = {"t": round(time.monotonic() - started, 1)}
    record["smaps"] = {
        k: v
        for k, v in _rollup().items()
        if k in ("Rss", "Anonymous", "Shared_Clean", "Private_Clean", "Shmem")
    }
    try:
        record["sqlite"] = _sqlite()
    except (OSError, AttributeError) as exc:
        record["sqlite"] = str(exc)
    info = libc.mallinfo2()
    record["malloc"] = {
        "arena_kb": info.arena // 1024,
        "in_use_kb": info.uordblks // 1024,
        "free_kb": info.fordblks // 1024,
        "mmapped_kb": info.hblkhd // 1024,
        "top_free_kb": info.keepcost // 1024,
    }
    record["python"] = _python(deep=True)
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        record["traced_kb"] = tracemalloc.get_traced_memory()[0] // 1024
        first = state["first"]
        if first is None:
            state["first"] = snapshot
        else:
            assert isinstance(first, tracemalloc.Snapshot)
            top = snapshot.compare_to(first, "lineno")[:40]
            (folder / f"{os.getpid()}-top.txt").write_text(
                f"t={record['t']}\n" + "\n".join(str(s) for s in top) + "\n"
            )
        del snapshot
    if trim:
        before = _rollup()["Rss"]
        libc.malloc_trim(0)
        record["trim_kb"] = before - _rollup()["Rss"]
    with (folder / f"{os.getpid()}.jsonl").open("a") as out:
        out.write(json.dumps(record) + "\n")


if _DIR:
    _folder = Path(_DIR)
    _folder.mkdir(parents=True, exist_ok=True)
    frames = int(os.environ.get("CREDIT_HUB_BENCH_PROBE_TRACEMALLOC", "0") or 0)
    if frames:
        import tracemalloc

        tracemalloc.start(frames)
    _every = float(os.environ.get("CREDIT_HUB_BENCH_PROBE_SECONDS", "15"))
    threading.Thread(
        target=_loop, args=(_folder, _every), name="bench-memprobe", daemon=True
    ).start()
