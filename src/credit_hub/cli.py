"""The `credit-hub` command: serve, migrate, validate files offline, administer the hub."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.orm import Session, sessionmaker

from credit_hub.config import get_settings

app = typer.Typer(help="credit_hub: public-credit data-exchange hub.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
standards_app = typer.Typer(help="Published data standards.", no_args_is_help=True)
secrets_app = typer.Typer(help="The hub's secrets.", no_args_is_help=True)
admin_app = typer.Typer(help="Administration.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
webhooks_app = typer.Typer(help="Webhook deliveries and the change feed.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(audit_app, name="audit")
app.add_typer(standards_app, name="standards")
app.add_typer(secrets_app, name="secrets")
app.add_typer(webhooks_app, name="webhooks")


def main() -> None:
    app()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Port")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes")] = None,
    migrate: Annotated[bool, typer.Option(help="Upgrade the database schema first")] = True,
    timeout_keep_alive: Annotated[
        int | None, typer.Option(help="Close an idle keep-alive connection after N seconds")
    ] = None,
) -> None:
    """Run the service (uvicorn). The database schema is upgraded first."""
    import uvicorn

    from credit_hub import migrate as migrations
    from credit_hub.keyring import load_keyring

    settings = get_settings()
    if migrate:
        migrations.upgrade(settings)
    load_keyring(settings)  # fail now, not in every worker; makes the embedded secrets once
    # Worker processes inherit this: glibc's per-thread malloc arenas otherwise let a
    # threaded server's resident memory creep up for hours (fragmentation, not a leak).
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    # A fixed threshold: blocks of 128 KiB or more (request bodies, upload chunks) are mmapped
    # and returned on free. glibc otherwise raises it after each such free, and they fragment
    # the heap instead (a soak's free-but-resident heap grew by ~15 MB in 4 minutes).
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    uvicorn.run(
        "credit_hub.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        timeout_keep_alive=timeout_keep_alive or settings.keep_alive_seconds,
        log_level=settings.log_level,
        access_log=False,
        # The service writes its own structured logs; uvicorn's access log would repeat paths.
    )


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Upgrade the database schema (CREDIT_HUB_DATABASE_URL) to the newest migration."""
    from credit_hub import migrate as migrations

    migrations.upgrade(get_settings(), revision)
    typer.echo(f"database at {revision}")


@standards_app.command("list")
def standards_list() -> None:
    """List the published standards and their versions."""
    from credit_hub.standards.registry import Standards

    for standard in Standards.load(get_settings().schemas_dir):
        for version in standard.versions.values():
            sunset = f" sunset {version.sunset_on}" if version.sunset_on else ""
            typer.echo(
                f"{standard.id}\t{version.version}\t{version.status}{sunset}\t{standard.title}"
            )


@standards_app.command("validate")
def standards_validate(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON, NDJSON or CSV")],
    standard: Annotated[str, typer.Option("--standard", help="Standard id")],
    version: Annotated[str | None, typer.Option(help="Version (default: current)")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="json, ndjson or csv")] = None,
    encoding: Annotated[str | None, typer.Option(help="Text encoding (default: detect)")] = None,
) -> None:
    """Check a file offline; print each problem with its row and field; exit 1 if any fails."""
    from credit_hub.errors import Problem
    from credit_hub.ingest.files import FileFormatError, guess_format, iter_rows
    from credit_hub.standards.registry import Standards

    standards = Standards.load(get_settings().schemas_dir)
    try:
        found = standards.resolve(standard, version)
        rows = iter_rows(file, fmt or guess_format(file), encoding)
        total = failed = 0
        for row in rows:
            total += 1
            if row.error:
                failed += 1
                typer.echo(f"row {row.number}: {row.error}")
                continue
            outcome = found.engine.check(row.record)
            for violation in outcome.violations:
                typer.echo(
                    f"row {row.number}: {violation.pointer or '/'} [{violation.code}] "
                    f"{violation.message}"
                )
            for notice in outcome.warnings:
                typer.echo(
                    f"row {row.number}: warning {notice.pointer} [{notice.code}] {notice.message}"
                )
            failed += not outcome.ok
    except (FileFormatError, Problem) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for warning in found.warnings(date.today()):
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"{total} record(s), {total - failed} valid, {failed} invalid", err=True)
    if failed:
        raise typer.Exit(1)


def _sessions() -> sessionmaker[Session]:
    """Sessions on the configured database, its schema upgraded first."""
    from credit_hub import migrate as migrations
    from credit_hub.db import make_engine, make_sessionmaker

    settings = get_settings()
    migrations.upgrade(settings)
    return make_sessionmaker(make_engine(settings))


@admin_app.command("bootstrap")
def admin_bootstrap(
    name: Annotated[str, typer.Option(help="Name of the operator client")] = "operator",
    force: Annotated[bool, typer.Option(help="Create another operator even if one exists")] = False,
) -> None:
    """Create the first operator client; its API key alone is the last line of the output."""
    from sqlalchemy import select

    from credit_hub.access.models import Client, ClientKind
    from credit_hub.access.service import bootstrap_operator
    from credit_hub.audit import service as audit

    with _sessions().begin() as session:
        exists = session.scalar(select(Client.id).where(Client.kind == ClientKind.OPERATOR))
        if exists is not None and not force:
            typer.echo("An operator exists already; use --force to create another.", err=True)
            raise typer.Exit(1)
        client, key = bootstrap_operator(session, name=name)
        audit.record(
            session,
            actor=None,
            actor_kind="cli",
            action="client.bootstrapped",
            payload={"client_id": str(client.id)},
        )
    typer.echo(f"operator client {client.id} created; its API key (shown once):", err=True)
    typer.echo(key)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit hash chain; name the first broken link. Exit 1 if broken."""
    from credit_hub.audit.service import verify

    with _sessions()() as session:
        report = verify(session)
    if report.ok:
        typer.echo(f"audit chain intact: {report.checked} event(s) verified")
        return
    typer.echo(
        f"audit chain BROKEN at event {report.broken_at}: {report.reason} "
        f"({report.checked} event(s) verified before it)"
    )
    raise typer.Exit(1)


@app.command()
def maintenance() -> None:
    """Mark records past publication as expired, purge payloads and encrypted identifiers past
    retention, delete expired subject sessions; the counts go to the audit log."""
    from credit_hub.clock import Clock
    from credit_hub.db import Database
    from credit_hub.objections.maintenance import run_once

    report = run_once(Database(_sessions()), Clock())
    if report.skipped:
        typer.echo("another maintenance run is in progress; nothing done")
        return
    typer.echo(
        f"maintenance on {report.on}: {report.expired} record(s) expired, "
        f"{report.purged_records} record(s) and {report.purged_subjects} subject(s) purged, "
        f"{report.sessions_deleted} expired session(s) deleted"
    )


@webhooks_app.command("deliver")
def webhooks_deliver(
    once: Annotated[bool, typer.Option(help="Deliver what is due, then exit")] = False,
) -> None:
    """Deliver webhooks from the outbox until stopped (SIGTERM or Ctrl-C). Any number of these
    may run beside the servers; a killed one's deliveries are retried after the lease."""
    import signal
    import threading

    from credit_hub.changes.delivery import Deliverer, make_http_client
    from credit_hub.db import Database
    from credit_hub.keyring import load_keyring
    from credit_hub.log import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    with make_http_client(settings) as http:
        deliverer = Deliverer(Database(_sessions()), http, load_keyring(settings), settings)
        try:
            if once:
                total = 0
                while handled := deliverer.run_once():
                    total += handled
                typer.echo(f"{total} deliveries handled", err=True)
                return
            stop = threading.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
            deliverer.run_forever(stop)
        finally:
            deliverer.close()


@webhooks_app.command("prune")
def webhooks_prune(
    days: Annotated[int, typer.Option(help="Keep the changes of the last DAYS days")] = 90,
) -> None:
    """Drop feed entries (and their deliveries) older than DAYS; older cursors answer 422."""
    from datetime import UTC, datetime, timedelta

    from credit_hub.changes.service import prune

    with _sessions().begin() as session:
        dropped = prune(session, before=datetime.now(UTC) - timedelta(days=days))
    typer.echo(f"{dropped} change(s) pruned")


@app.command()
def worker(
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Process the queued submissions, then exit")
    ] = False,
) -> None:
    """Process queued file submissions until stopped (SIGTERM or Ctrl-C). Any number may run
    beside the servers; a killed worker's job is taken over once its lease runs out."""
    import os
    import signal
    import socket

    from credit_hub.clock import Clock
    from credit_hub.db import Database
    from credit_hub.ingest.jobs import JobContext, Worker
    from credit_hub.keyring import load_keyring
    from credit_hub.log import configure_logging
    from credit_hub.standards.registry import Standards

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    context = JobContext.of(
        settings, Standards.load(settings.schemas_dir), load_keyring(settings), Clock()
    )
    jobs_worker = Worker(
        Database(_sessions()),
        context,
        name=f"{socket.gethostname()}:{os.getpid()}",
        poll_seconds=settings.worker_poll_seconds,
    )
    if until_idle:
        typer.echo(f"{jobs_worker.run_until_idle()} submission(s) processed", err=True)
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: jobs_worker.stopping.set())
    jobs_worker.run()


@app.command()
def push(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="NDJSON, CSV or XLSX")],
    standard: Annotated[str, typer.Option("--standard", help="Standard id")],
    url: Annotated[
        str, typer.Option(envvar="CREDIT_HUB_URL", help="The hub's base URL")
    ] = "http://127.0.0.1:8000",
    key: Annotated[
        str, typer.Option(envvar="CREDIT_HUB_KEY", help="The department's API key")
    ] = "",
    version: Annotated[str | None, typer.Option(help="Version (default: current)")] = None,
    mode: Annotated[str, typer.Option(help="partial or atomic")] = "partial",
    fmt: Annotated[str | None, typer.Option("--format", help="ndjson, csv or xlsx")] = None,
    encoding: Annotated[str | None, typer.Option(help="utf-8 or gb18030 (default: detect)")] = None,
    sheet: Annotated[str | None, typer.Option(help="XLSX: the sheet to read")] = None,
    errors: Annotated[
        Path | None, typer.Option(help="Where to write rejected rows (default: FILE.errors.EXT)")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job to its end")] = True,
) -> None:
    """Upload a file to a hub with a progress bar, follow its job, print the summary and
    download the rejected rows. Exit 0 if every row was stored, 1 if some were rejected,
    2 if the file failed or the hub refused it."""
    from credit_hub.ingest.pushing import push_file

    if not key:
        typer.echo("error: give --key or set CREDIT_HUB_KEY", err=True)
        raise typer.Exit(2)
    code = push_file(
        file,
        url=url,
        key=key,
        standard=standard,
        version=version,
        mode=mode,
        fmt=fmt,
        encoding=encoding,
        sheet=sheet,
        errors_path=errors,
        wait=wait,
    )
    raise typer.Exit(code)


@secrets_app.command("generate")
def secrets_generate() -> None:
    """Print a fresh set of secrets as CREDIT_HUB_... assignments (for a server database)."""
    from credit_hub.keyring import generate_env

    typer.echo(generate_env())


if __name__ == "__main__":  # pragma: no cover
    main()
