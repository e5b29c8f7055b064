"""The SQLite writers' queue across processes: each WriterQueue opens its own descriptor of the
lock file, so two queues on one path in this process take turns as two processes would."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from credit_hub.sqlite_writers import WriterQueue, queue_for


def _held_elsewhere(path: Path) -> bool:
    """Whether some queue holds the file lock (probed on a descriptor of its own)."""
    fd = os.open(str(path) + "-writer.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing the probe's descriptor lets go of its lock, if it took one
    return False


def test_a_waiting_writer_gets_the_lock_when_the_other_process_lets_go(tmp_path: Path) -> None:
    database = tmp_path / "hub.db"
    first, second = WriterQueue(str(database), 5), WriterQueue(str(database), 5)
    first.acquire()
    got = threading.Event()

    def wait_for_turn() -> None:
        second.acquire()
        got.set()

    waiter = threading.Thread(target=wait_for_turn)
    waiter.start()
    assert not got.wait(0.2)  # the other "process" still writes
    first.release()
    assert got.wait(2)
    waiter.join()
    assert _held_elsewhere(database)
    second.release()
    assert not _held_elsewhere(database)


def test_a_writer_that_gives_up_leaves_no_lock_behind(tmp_path: Path) -> None:
    database = tmp_path / "hub.db"
    holder, impatient = WriterQueue(str(database), 5), WriterQueue(str(database), 0.2)
    holder.acquire()
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        impatient.acquire()
    assert 0.15 < time.monotonic() - started < 2
    holder.release()
    # The given-up wait ends with the lock in the impatient queue's helper, which must let it
    # go: another process gets its turn.
    other = WriterQueue(str(database), 2)
    other.acquire()
    other.release()
    impatient.acquire()  # and the queue still works
    assert _held_elsewhere(database)
    impatient.release()


def test_a_writer_after_one_that_gave_up_is_not_dropped_by_the_old_wait(tmp_path: Path) -> None:
    database = tmp_path / "hub.db"
    holder, queue = WriterQueue(str(database), 5), WriterQueue(str(database), 0.2)
    holder.acquire()
    with pytest.raises(sqlite3.OperationalError):
        queue.acquire()  # its helper still waits for the file lock
    queue.timeout = 5
    got = threading.Event()
    waiter = threading.Thread(target=lambda: (queue.acquire(), got.set()))
    waiter.start()
    time.sleep(0.1)
    holder.release()
    assert got.wait(2)
    waiter.join()
    # The old wait's success is the new writer's lock, not one to drop: it is still held.
    time.sleep(0.1)
    assert _held_elsewhere(database)
    with pytest.raises(sqlite3.OperationalError):
        WriterQueue(str(database), 0.1).acquire()
    queue.release()
    # That third queue gave up too: its helper takes the lock now and lets it go at once.
    assert _let_go_within(database, 2)


def _let_go_within(database: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _held_elsewhere(database):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    queue = WriterQueue(str(tmp_path / "hub.db"), 5)
    inside = 0
    most = 0
    guard = threading.Lock()

    def write() -> None:
        nonlocal inside, most
        for _ in range(50):
            queue.acquire()
            with guard:
                inside += 1
                most = max(most, inside)
            time.sleep(0.0005)
            with guard:
                inside -= 1
            queue.release()

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 1


def _switches(thread_id: int) -> int:
    status = Path(f"/proc/self/task/{thread_id}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads Linux's /proc")
def test_a_waiting_writer_sleeps_until_woken_instead_of_polling(tmp_path: Path) -> None:
    database = tmp_path / "hub.db"
    holder, queue = WriterQueue(str(database), 5), WriterQueue(str(database), 5)
    holder.acquire()
    waiting = threading.Event()
    waiter_id = 0

    def wait_for_turn() -> None:
        nonlocal waiter_id
        waiter_id = threading.get_native_id()
        waiting.set()
        queue.acquire()

    waiter = threading.Thread(target=wait_for_turn)
    waiter.start()
    waiting.wait()
    time.sleep(0.05)  # the helper thread has started and waits in flock
    helpers = [t for t in threading.enumerate() if t.name == "sqlite-writer-lock"]
    ids = [waiter_id, *(t.native_id for t in helpers if t.native_id is not None)]
    before = sum(_switches(i) for i in ids)
    time.sleep(0.5)
    woken = sum(_switches(i) for i in ids) - before
    holder.release()
    waiter.join()
    queue.release()
    # Polling every 2 ms would wake these threads ~250 times in half a second.
    assert woken < 10, woken


def test_a_forked_child_queues_on_its_own(tmp_path: Path) -> None:
    # Forked while the parent writes, the child inherits the parent's held locks and its
    # descriptor (flock() locks belong to the open file description). It must wait for the
    # parent's turn to end, and then get its own.
    database = str(tmp_path / "hub.db")
    queue = queue_for(database, 5)
    queue.acquire()
    tried, go_on = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child's outcome is its exit status)
        queue.timeout = 0.2
        try:
            queue.acquire()
            os._exit(1)  # wrote beside the parent
        except sqlite3.OperationalError:
            pass
        os.write(go_on, b"x")
        queue.timeout = 5
        try:
            queue.acquire()
        except sqlite3.OperationalError:
            os._exit(2)  # never got a turn of its own
        queue.release()
        os._exit(0)
    assert os.read(tried, 1) == b"x"
    os.close(tried)
    os.close(go_on)
    queue.release()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    queue.acquire()  # and the parent's queue is as it was
    queue.release()


def test_try_acquire_takes_a_free_turn_and_never_waits_for_a_taken_one(tmp_path: Path) -> None:
    database = tmp_path / "hub.db"
    mine, other = WriterQueue(str(database), 5), WriterQueue(str(database), 5)
    assert mine.try_acquire()
    assert _held_elsewhere(database)
    started = time.monotonic()
    assert not other.try_acquire()  # another process's turn: False at once
    results: list[bool] = []
    holder = threading.Thread(target=lambda: results.append(mine.try_acquire()))
    holder.start()
    holder.join(5)
    assert results == [False]  # another thread of this process holds the turn
    assert time.monotonic() - started < 1
    mine.release()
    assert not _held_elsewhere(database)
    assert other.try_acquire()
    other.release()
    # A thread of this process waiting for another process's turn comes first.
    other.acquire()
    waiting = threading.Thread(target=mine.acquire)
    waiting.start()
    deadline = time.monotonic() + 5
    while not mine._wanted.is_set() and time.monotonic() < deadline:  # its helper: in flock
        time.sleep(0.005)
    assert mine._wanted.is_set()
    assert not mine.try_acquire()
    other.release()
    waiting.join(5)
    assert not waiting.is_alive()
    assert not other.try_acquire()  # the waiter got it
    mine.release()
