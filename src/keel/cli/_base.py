"""Shared CLI plumbing: exit codes, the ``-c`` option, durations, dollars, the database."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from keel.errors import CallerError, ConfigError, InvalidRequest, KeelError

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from sqlalchemy import Engine

    from keel.config import KeelConfig

DEFAULT_CONFIG = "keel.yaml"

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    default=DEFAULT_CONFIG,
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Path to keel.yaml.",
)


_DURATION = re.compile(r"(\d+)([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_MAX_DURATION = timedelta(days=36525)


def parse_duration(text: str, param: str) -> timedelta:
    """``30d``, ``12h``, ``90m`` or ``2w`` as a positive timedelta."""
    match = _DURATION.fullmatch(text.strip())
    try:
        lifetime = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))}) if match else None
    except OverflowError:
        lifetime = None
    if lifetime is None or not timedelta(0) < lifetime <= _MAX_DURATION:
        raise InvalidRequest(
            f"{param}: {text!r} is not a duration; expected a positive whole number and"
            " a unit m, h, d or w, up to 100 years, e.g. 30d",
            param=param,
        )
    return lifetime


@contextmanager
def open_database(config_path: str) -> Iterator[tuple[KeelConfig, Engine]]:
    """The validated config and a migrated engine on its database, disposed on exit."""
    from keel.config import load_config
    from keel.store import make_engine, upgrade

    config = load_config(config_path)
    engine = make_engine(config.database_url)
    try:
        upgrade(engine)
        yield config, engine
    finally:
        engine.dispose()


def format_usd(amount: float) -> str:
    """Dollars with enough digits that a single cheap call does not read as $0."""
    if amount == 0:
        return "$0"
    if abs(amount) >= 100:
        return f"${amount:,.2f}"
    if abs(amount) >= 0.01:
        return f"${amount:,.4f}"
    # Plain decimals, never exponent notation; a nano-dollar is the stored precision.
    return "$" + (f"{amount:.9f}".rstrip("0").rstrip(".") or "0")


def print_whole(renderable: RenderableType, console: Console | None = None) -> None:
    """Print at the terminal's width, or wider when ``renderable`` needs more.

    Rich would otherwise crop a table at the edge; one with a number or an id
    cut off is worse than long lines the terminal wraps (or ``less -S``
    scrolls). A pipe counts as 80 columns.
    """
    from rich.console import Console
    from rich.measure import Measurement

    console = console or Console(highlight=False)
    need = Measurement.get(console, console.options.update_width(10_000), renderable).minimum
    console.print(renderable, width=max(console.width, need), crop=False)


def dumps(payload: Any) -> str:
    """Indented JSON for ``--format json``; dataclasses, datetimes and dates included."""
    import orjson

    return orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def exit_code(error: KeelError) -> int:
    """2 for a mistake in what the user gave us, 1 for everything else."""
    return 2 if isinstance(error, ConfigError | CallerError) else 1


class KeelGroup(click.Group):
    """A group whose commands report ``KeelError`` as one readable line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeelError as error:
            first, *rest = error.message.splitlines() or [""]
            click.echo(f"keel: error: {first}", err=True)
            for line in rest:
                click.echo(f"  {line}", err=True)
            sys.exit(exit_code(error))
