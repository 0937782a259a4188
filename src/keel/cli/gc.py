"""``keel gc``: delete stored requests (and their feedback) past retention.

Spend rollups are kept, so cost reports over old days stay exact after a gc.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from keel.cli._base import config_option, open_database, parse_duration
from keel.errors import InvalidRequest


def stdin_is_interactive() -> bool:
    """True in a terminal; False under CI, cron, pipes or a test runner."""
    # sys.stdin is None under pythonw and some service managers.
    return sys.stdin is not None and sys.stdin.isatty()


@click.command("gc")
@click.option(
    "--older-than",
    required=True,
    metavar="DURATION",
    help="Delete requests that started longer ago than this, e.g. 30d.",
)
@click.option(
    "--batch",
    type=int,
    default=5000,
    show_default=True,
    help="Requests deleted per transaction; smaller holds locks for less time.",
)
@click.option("--yes", is_flag=True, help="Do not ask; required when stdin is not a terminal.")
@config_option
def gc(older_than: str, batch: int, yes: bool, config_path: str) -> None:
    """Delete stored requests older than --older-than, in batches."""
    from keel.store.requests import MAX_GC_BATCH

    cutoff = datetime.now(UTC) - parse_duration(older_than, "--older-than")
    if not 1 <= batch <= MAX_GC_BATCH:
        raise InvalidRequest(
            f"--batch: must be from 1 to {MAX_GC_BATCH}, not {batch}", param="batch"
        )
    what = f"stored requests and their feedback from before {cutoff:%Y-%m-%d %H:%M} UTC"
    if not yes:
        if not stdin_is_interactive():
            # Nobody can answer a prompt here, and a hung or silently skipped
            # deletion in a scheduled job is worse than a clear refusal.
            raise InvalidRequest(
                f"--yes is required when stdin is not a terminal; gc deletes {what}",
                param="yes",
            )
        click.confirm(f"Delete {what}?", abort=True)
    deleted = _delete(config_path, cutoff, batch, what)
    click.echo(f"deleted {deleted:,} stored request{'s' if deleted != 1 else ''}; rollups kept")


def _delete(config_path: str, cutoff: datetime, batch: int, what: str) -> int:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from keel.store import RequestStore

    with open_database(config_path) as (_, engine):
        store = RequestStore(engine)
        # RequestStore.gc reports only its final count, so this shows that work
        # is going on and for how long, not how much is left.
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        with progress:
            progress.add_task(f"deleting {what} in batches of {batch:,}", total=None)
            return store.gc(cutoff, batch=batch)
