"""``cache_dir``: the last known version of each reference, one JSON file each.

A process that starts while the gateway is down reads what an earlier one
fetched. Files are replaced atomically (written to a temporary file in the
same folder, then renamed over the old one), so a reader sees the old file
or the new one, never half of either. A file that cannot be written or read
is logged and skipped: the cache on disk is a fallback, never a reason to
fail a fetch that succeeded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import orjson

from keel.sdk._types import FetchedPrompt, Ref

log = logging.getLogger("keel.sdk")


class DiskCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def save(self, ref: Ref, fetched: FetchedPrompt) -> None:
        target = self.folder / ref.file_name()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(orjson.dumps(fetched.to_json(), option=orjson.OPT_INDENT_2))
                os.replace(temp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        except OSError as exc:
            log.warning("could not write prompt %s to %s: %s", ref, target, exc)

    def load(self, ref: Ref) -> FetchedPrompt | None:
        path = self.folder / ref.file_name()
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("could not read cached prompt %s from %s: %s", ref, path, exc)
            return None
        try:
            return FetchedPrompt.from_json(data, stale=True)
        except ValueError as exc:
            log.warning("ignoring cached prompt %s in %s: %s", ref, path, exc)
            return None
