"""`credit-hub push`: upload a file to a hub, follow its job with a progress bar, fetch the
rejected rows. Progress goes to standard error; the summary to standard output, the path of the
error file (when there is one) on its last line."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from credit_hub.client import ApiError, CreditHub
from credit_hub.ingest.submission_schemas import JobStatus, SubmissionRead


def _summary(out: Console, done: SubmissionRead) -> None:
    p = done.progress
    out.print(
        f"submission {done.submission_id}: {done.status}\n"
        f"  rows read {p.rows_read}, accepted {p.accepted} (created {p.created}, "
        f"updated {p.updated}, unchanged {p.unchanged}), rejected {p.rejected}"
    )
    if done.timings.processing_seconds:
        out.print(
            f"  processed in {done.timings.processing_seconds:.1f} s "
            f"({p.rows_per_second or 0:.0f} rows/s)"
        )
    if done.columns and done.columns.unknown:
        out.print(f"  unknown columns (ignored): {', '.join(done.columns.unknown)}")
    if done.file_error:
        where = f" (row {done.file_error.row})" if done.file_error.row else ""
        out.print(f"  file error [{done.file_error.code}]{where}: {done.file_error.message}")
    for item in done.error_summary[:10]:
        out.print(f"  {item.count:>8} x {item.code} {item.pointer or '/'}: {item.example}")


def push_file(
    path: Path,
    *,
    url: str,
    key: str,
    standard: str,
    version: str | None = None,
    mode: str = "partial",
    fmt: str | None = None,
    encoding: str | None = None,
    sheet: str | None = None,
    errors_path: Path | None = None,
    wait: bool = True,
    poll_seconds: float = 0.5,
) -> int:
    err = Console(stderr=True)
    out = Console(highlight=False, soft_wrap=True)
    with CreditHub(url, key) as hub:
        try:
            with Progress(
                TextColumn("uploading"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            ) as bar:
                task = bar.add_task("upload", total=path.stat().st_size)
                accepted = hub.upload_file(
                    path,
                    standard=standard,
                    version=version,
                    mode=mode,
                    format=fmt,
                    encoding=encoding,
                    sheet=sheet,
                    on_bytes=lambda n: bar.advance(task, n),
                )
            out.print(f"uploaded {path.name}: submission {accepted.submission_id}")
            if not wait:
                return 0
            with Progress(
                TextColumn("processing"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rows]} rows"),
                TextColumn("{task.fields[rate]} rows/s"),
                TextColumn("rejected {task.fields[rejected]}"),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            ) as bar:
                task = bar.add_task("job", total=1000, rows=0, rate=0, rejected=0)

                def show(found: SubmissionRead) -> None:
                    p = found.progress
                    bar.update(
                        task,
                        completed=int((p.fraction or 0) * 1000),
                        rows=p.rows_read,
                        rate=f"{p.rows_per_second or 0:.0f}",
                        rejected=p.rejected,
                    )

                done = hub.wait_for_submission(
                    accepted.submission_id, poll_seconds=poll_seconds, on_progress=show
                )
            _summary(out, done)
            if done.progress.rejected:
                suffix = "ndjson" if (done.format or "") == "ndjson" else "csv"
                target = errors_path or path.with_name(f"{path.stem}.errors.{suffix}")
                hub.download_errors(done.submission_id, target)
                out.print(f"rejected rows written to:\n{target}")
        except ApiError as exc:
            err.print(f"error: {exc}")
            for item in exc.problem.get("errors", [])[:10]:
                err.print(f"  {item}")
            return 2
    if done.status == JobStatus.ACCEPTED:
        return 0
    return 2 if done.status == JobStatus.FAILED else 1
