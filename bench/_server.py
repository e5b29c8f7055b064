"""The real service for the benchmarks: a fresh database, `credit-hub serve` as a subprocess, and
what /proc says about its worker processes (memory, CPU time, open connections)."""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from credit_hub.keyring import generate_env

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
WORK = Path("/tmp/credit_hub_bench")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DATABASE = "credit_hub_bench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The set-up failed or the server misbehaved: the benchmark exits non-zero."""


def fresh_database(kind: str) -> str:
    """The URL of an empty database of this kind, dropped and created anew."""
    if kind == "sqlite":
        folder = WORK / "sqlite"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return f"sqlite:///{folder / 'bench.db'}"
    if kind == "postgres":
        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
            connection.execute(f"CREATE DATABASE {PG_DATABASE}")
        return f"postgresql://postgres@127.0.0.1:5432/{PG_DATABASE}"
    raise BenchError(f"unknown database {kind!r} (sqlite or postgres)")


def analyze(url: str) -> None:
    """ANALYZE a PostgreSQL database: what autovacuum does within a minute of the first rows."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("ANALYZE")


def secrets_env() -> dict[str, str]:
    """A fresh set of the hub's secrets, shared by the server and the in-process ceiling."""
    pairs = (line.split("=", 1) for line in generate_env().splitlines())
    return {key: value for key, value in pairs}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def status_kb(pid: int, key: str) -> int:
    """A `VmRSS`/`VmHWM` line of /proc/<pid>/status, in kB (0 once the process is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: `echo 5 > clear_refs`)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def postgres_pids() -> list[int]:
    """Every process named `postgres` (the cluster's backends): read-only, for CPU time."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@dataclass
class Server:
    database: str
    url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    workers: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def port(self) -> int:
        return int(self.env["BENCH_PORT"])

    def find_workers(self, expected: int) -> list[int]:
        """The uvicorn worker pids: spawned children of the server, or the server itself."""
        if expected <= 1:
            return [self.process.pid]
        return [p for p in _children(self.process.pid) if "spawn_main" in _cmdline(p)]

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def connections(self) -> dict[int, int]:
        """Established client connections held by each worker (from /proc/net/tcp*)."""
        held = dict.fromkeys(self.workers, 0)
        for pid in self.holders().values():
            held[pid] = held.get(pid, 0) + 1
        return held

    def holders(self) -> dict[int, int]:
        """The worker pid holding each established client connection, by the client's port."""
        by_inode: dict[str, int] = {}
        for name in ("tcp", "tcp6"):
            try:
                rows = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                cols = row.split()
                local_port = int(cols[1].rsplit(":", 1)[1], 16)
                if local_port == self.port and cols[3] == "01":
                    by_inode[cols[9]] = int(cols[2].rsplit(":", 1)[1], 16)
        found: dict[int, int] = {}
        for pid in self.workers:
            try:
                links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
            except OSError:
                links = []
            for link in links:
                if link.startswith("socket:[") and link[8:-1] in by_inode:
                    found[by_inode[link[8:-1]]] = pid
        return found


def spread(server: Server, receive: Callable[[], Any], controls: Mapping[int, Any]) -> None:
    """Have the client processes' keep-alive connections spread evenly over the workers.

    The workers accept from one shared socket, and the one that wakes first may take most of
    the connections opened in a burst, leaving the other worker's core partly idle. A load
    balancer in front of many clients spreads them; here the clients on a worker holding more
    than its share reconnect, a few times at most. Each client (`controls`: its pipe by pid)
    has sent ("ready", pid, local port) through `receive` and waits for "again" (reconnect
    and send that again) or "keep"."""
    port_of = {}
    for _ in controls:
        _, pid, port = receive()
        port_of[pid] = port
    fair = math.ceil(len(port_of) / max(1, len(server.workers)))
    for _ in range(20):
        holders = server.holders()
        by_worker: dict[int, list[int]] = {}
        for pid, port in port_of.items():
            by_worker.setdefault(holders.get(port, -1), []).append(pid)
        movers = [pid for pids in by_worker.values() if len(pids) > fair for pid in pids[fair:]]
        if not movers or len(server.workers) < 2:
            break
        for pid in movers:
            controls[pid].send("again")
            _, pid_again, port = receive()
            port_of[pid_again] = port
    for control in controls.values():
        control.send("keep")


def _wait_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(
                f"the server exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            answer = httpx.get(server.base_url + "/readyz", timeout=2)
            if answer.status_code == 200:
                return
            last = f"{answer.status_code} {answer.text[:300]}"
        except httpx.TransportError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise BenchError(f"/readyz did not answer 200 within {timeout:.0f} s ({last})")


def _stop(server: Server) -> None:
    process = server.process
    workers = [p for p in server.workers if p != process.pid]
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    for pid in workers:  # orphans of a supervisor that was killed
        if Path(f"/proc/{pid}").exists() and "spawn_main" in _cmdline(pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextmanager
def running(
    database: str, url: str, secrets: dict[str, str], *, workers: int, extra: dict[str, str]
) -> Iterator[Server]:
    """`credit-hub serve` on a free port of 127.0.0.1, ready; always stopped afterwards."""
    port = free_port()
    env = os.environ.copy() | secrets | extra
    env |= {
        "CREDIT_HUB_DATABASE_URL": url,
        "CREDIT_HUB_LOG_LEVEL": "warning",
        "BENCH_PORT": str(port),
    }
    WORK.mkdir(parents=True, exist_ok=True)
    log_path = WORK / f"server-{database}.log"
    command = [
        str(BIN / "credit-hub"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    server = Server(database, url, env, process, log_path)
    try:
        _wait_ready(server, timeout=90)
        deadline = time.monotonic() + 30
        while len(server.find_workers(workers)) < workers and time.monotonic() < deadline:
            time.sleep(0.2)
        server.workers = server.find_workers(workers)
        yield server
    finally:
        _stop(server)


def bootstrap(server: Server) -> str:
    """`credit-hub admin bootstrap` on the server's database: the operator's API key."""
    done = subprocess.run(
        [str(BIN / "credit-hub"), "admin", "bootstrap"],
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise BenchError(f"bootstrap failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


# py-spy samples only the thread holding the GIL (--profile-gil): where the interpreter's time
# goes, without the threads that wait for it (which all-thread sampling counts as busy).
SPY_GIL = False


def start_spies(
    server: Server, folder: Path | None, label: str, *, rate: int = 100
) -> list[subprocess.Popen[bytes]]:
    """py-spy on every worker of `server` (raw stacks into `folder`); nothing if no folder."""
    if folder is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    spies = []
    for pid in server.workers:
        out = folder / f"{server.database}-w{len(server.workers)}-{label}-{pid}.txt"
        command = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--format", "raw"]
        command += ["--nonblocking", "--rate", str(rate), "-o", str(out)]
        if SPY_GIL:
            command.append("--gil")
        spies.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return spies


def stop_spies(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for spy in spies:
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(timeout=10)
