"""Ordering versions by semver 2.0.0 precedence, pre-releases included.

``1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-beta < 1.0.0-rc.1 < 1.0.0 < 1.0.1``;
build metadata (``+sha.5114f85``) is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from keel.prompts.model import SEMVER_PATTERN, semver

_SEMVER = re.compile(SEMVER_PATTERN)

# (major, minor, patch, is_release, pre-release identifiers as (is_alnum, number, text))
VersionKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


def version_key(version: str) -> VersionKey:
    """A sort key giving semver precedence; raises ``ValueError`` for a non-semver string."""
    major, minor, patch = semver(version)
    match = _SEMVER.fullmatch(version)
    assert match is not None  # semver() has just parsed it
    pre = match.group(4)
    if pre is None:
        return major, minor, patch, 1, ()
    identifiers = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split(".")
    )
    return major, minor, patch, 0, identifiers


def latest_version(versions: Iterable[str]) -> str | None:
    """The highest version by precedence, or ``None`` when there is none."""
    return max(versions, key=version_key, default=None)
