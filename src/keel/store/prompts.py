"""The prompt registry: immutable prompt versions, labels that point at them, label moves.

A pushed version never changes: there is no update path for a version's
content, and pushing the same name and version with other content is refused
with the diff. Labels (``production``, ``staging``, any other) move only by
:meth:`PromptRegistry.promote`, which needs a passing eval run for the
version unless forced with a reason, and :meth:`PromptRegistry.rollback`.
Each move writes a ``prompt_label_moves`` row and an audit row in the same
transaction as the label itself.

``prompt_label_moves`` doubles as the change feed gateway replicas poll with
:meth:`PromptRegistry.moves_since`: moves are serialized (one writer at a
time, PostgreSQL advisory lock or SQLite's write lock), so their ids commit
in order and a poller that remembers the last id it saw never misses one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from keel._time import Clock, utcnow
from keel.errors import InvalidRequest, NotFound
from keel.prompts.model import PromptFile, content_hash, content_of
from keel.prompts.versions import version_key
from keel.store._prompt_records import (
    LabelMove,
    MoveKind,
    PromptLabel,
    PromptSummary,
    PromptVersion,
    PushResult,
    PushStatus,
)
from keel.store.audit import check_actor, check_reason, record_change
from keel.store.db import MAX_LIST, capped, translate_errors
from keel.store.keys import DEFAULT_ACTOR
from keel.store.tables import (
    LABEL_LEN,
    eval_runs,
    prompt_label_moves,
    prompt_labels,
    prompt_versions,
)

if TYPE_CHECKING:
    from keel.prompts import StoredVersion

__all__ = [
    "PRODUCTION",
    "LabelMove",
    "LintView",
    "MoveKind",
    "PromptLabel",
    "PromptRegistry",
    "PromptSummary",
    "PromptVersion",
    "PushResult",
    "PushStatus",
    "check_label",
    "prompt_target",
]


PRODUCTION = "production"
LABEL_PATTERN = re.compile(rf"[a-z0-9][a-z0-9._-]{{0,{LABEL_LEN - 1}}}")
# Serializes label moves on PostgreSQL, so the feed's ids commit in order.
_MOVES_LOCK_ID = 0x6B65656C_0004


def prompt_target(name: str) -> str:
    """How the audit log names a prompt: ``prompt:<name>``."""
    return f"prompt:{name}"


def check_label(label: str) -> str:
    if not LABEL_PATTERN.fullmatch(label):
        raise InvalidRequest(
            f"label: {label!r} is not a label name; expected lowercase letters, digits,"
            f" '.', '_' or '-', up to {LABEL_LEN} characters, e.g. production",
            param="label",
        )
    return label


def _version(row: sa.RowMapping) -> PromptVersion:
    return PromptVersion(**row)


def _move(row: sa.RowMapping) -> LabelMove:
    return LabelMove(**row)


class PromptRegistry:
    """Prompt versions and labels in the database; every method is synchronous and short.

    :meth:`versions` is what ``keel.prompts`` checks semver discipline
    against; :meth:`lint_view` hands it over typed as lint's ``RegistryView``.
    """

    def __init__(self, engine: sa.Engine, *, clock: Clock = utcnow) -> None:
        self._engine = engine
        self._clock = clock

    # --- reads -------------------------------------------------------------

    def versions(self, name: str) -> list[PromptVersion]:
        """Every pushed version of ``name``, lowest first; empty for an unknown prompt."""
        query = sa.select(prompt_versions).where(prompt_versions.c.name == name)
        with translate_errors(self._engine, "reading prompt versions"), self._engine.connect() as c:
            found = [_version(row) for row in c.execute(query).mappings()]
        return sorted(found, key=lambda v: (version_key(v.version), v.id))

    def lint_view(self) -> LintView:
        """This registry as the ``RegistryView`` ``keel.prompts.lint`` takes."""
        return LintView(self)

    def find(self, name: str, version: str) -> PromptVersion | None:
        """Version ``version`` of ``name``, or None."""
        query = sa.select(prompt_versions).where(
            prompt_versions.c.name == name, prompt_versions.c.version == version
        )
        with (
            translate_errors(self._engine, "reading a prompt version"),
            self._engine.connect() as c,
        ):
            row = c.execute(query).mappings().one_or_none()
        return None if row is None else _version(row)

    def get(self, name: str, version: str) -> PromptVersion:
        """Like :meth:`find`, raising ``NotFound`` naming what is missing."""
        found = self.find(name, version)
        if found is None:
            raise self._missing_version(name, version)
        return found

    def resolve(self, name: str, label: str) -> PromptVersion:
        """The version ``label`` of ``name`` points at; ``NotFound`` if it points nowhere."""
        query = (
            sa.select(prompt_versions)
            .join_from(
                prompt_labels,
                prompt_versions,
                sa.and_(
                    prompt_versions.c.name == prompt_labels.c.name,
                    prompt_versions.c.version == prompt_labels.c.version,
                ),
            )
            .where(prompt_labels.c.name == name, prompt_labels.c.label == label)
        )
        with (
            translate_errors(self._engine, "resolving a prompt label"),
            self._engine.connect() as c,
        ):
            row = c.execute(query).mappings().one_or_none()
        if row is None:
            self._require_prompt(name)
            raise NotFound(f'prompt {name} has no label "{label}"', param="label")
        return _version(row)

    def labels(self, name: str) -> list[PromptLabel]:
        """Where each label of ``name`` points, by label."""
        query = sa.select(prompt_labels).where(prompt_labels.c.name == name)
        return self._labels(query.order_by(prompt_labels.c.label))

    def all_labels(self) -> list[PromptLabel]:
        """Every label of every prompt: what a gateway loads at start (see :meth:`snapshot`)."""
        order = (prompt_labels.c.name, prompt_labels.c.label)
        return self._labels(sa.select(prompt_labels).order_by(*order))

    def snapshot(self) -> tuple[int, list[PromptLabel]]:
        """The feed position, then every label: a replica's starting state.

        The position is read first, so a move committed in between is seen
        twice (once in the labels, once from :meth:`moves_since`), never missed.
        """
        return self.last_move_id(), self.all_labels()

    def list_prompts(self) -> list[PromptSummary]:
        """Every prompt, by name."""
        with translate_errors(self._engine, "listing prompts"), self._engine.connect() as c:
            rows = c.execute(
                sa.select(
                    prompt_versions.c.name,
                    prompt_versions.c.version,
                    prompt_versions.c.created_at,
                )
            ).all()
            labels = c.execute(sa.select(prompt_labels)).mappings().all()
        by_name: dict[str, list[tuple[str, datetime]]] = {}
        for name, version, created_at in rows:
            by_name.setdefault(name, []).append((version, created_at))
        pointed: dict[str, dict[str, str]] = {}
        for label in labels:
            pointed.setdefault(label["name"], {})[label["label"]] = label["version"]
        return [
            PromptSummary(
                name=name,
                versions=len(found),
                latest=max(found, key=lambda item: version_key(item[0]))[0],
                labels=dict(sorted(pointed.get(name, {}).items())),
                updated_at=max(created for _, created in found),
            )
            for name, found in sorted(by_name.items())
        ]

    def history(self, name: str, *, label: str | None = None, limit: int = 100) -> list[LabelMove]:
        """The label moves of ``name`` (one label's, given ``label``), newest first."""
        self._require_prompt(name)
        query = sa.select(prompt_label_moves).where(prompt_label_moves.c.name == name)
        if label is not None:
            query = query.where(prompt_label_moves.c.label == label)
        query = query.order_by(prompt_label_moves.c.id.desc()).limit(capped(limit))
        return self._moves(query, "reading prompt history")

    def moves_since(self, last_id: int, *, limit: int = MAX_LIST) -> list[LabelMove]:
        """Label moves with an id above ``last_id``, oldest first: the replicas' change feed."""
        query = (
            sa.select(prompt_label_moves)
            .where(prompt_label_moves.c.id > last_id)
            .order_by(prompt_label_moves.c.id)
            .limit(capped(limit))
        )
        return self._moves(query, "reading label moves")

    def last_move_id(self) -> int:
        """The id of the newest label move, 0 when there is none."""
        query = sa.select(sa.func.max(prompt_label_moves.c.id))
        with translate_errors(self._engine, "reading label moves"), self._engine.connect() as c:
            return int(c.execute(query).scalar() or 0)

    def diff(self, name: str, a: str, b: str) -> str:
        """A unified diff of the content of versions ``a`` and ``b``; empty when identical."""
        from keel.prompts import diff_contents

        first, second = self.get(name, a), self.get(name, b)
        return diff_contents(first.content, second.content, f"{name}@{a}", f"{name}@{b}")

    # --- changes -----------------------------------------------------------

    def push(self, prompts: Sequence[PromptFile], actor: str = DEFAULT_ACTOR) -> list[PushResult]:
        """Store every new version; all or nothing.

        A version already stored with the same content hash is ``unchanged``
        (a no-op). The same name and version with other content refuses the
        whole push with ``InvalidRequest`` (code ``prompt_version_conflict``)
        showing the diff, and nothing is written.
        """
        check_actor(actor)
        results: list[PushResult] = []
        conflicts: list[str] = []
        seen: dict[tuple[str, str], str] = {}
        with translate_errors(self._engine, "pushing prompts"), self._engine.begin() as conn:
            for prompt in prompts:
                digest = content_hash(prompt)
                key = (prompt.name, prompt.version)
                if key in seen:
                    if seen[key] != digest:
                        conflicts.append(
                            f"{prompt.name} {prompt.version} appears twice with different content"
                        )
                    continue
                seen[key] = digest
                status = self._insert(conn, prompt, digest, actor, conflicts)
                if status is not None:
                    results.append(PushResult(prompt.name, prompt.version, digest, status))
            if conflicts:
                # Raised inside the transaction: it rolls back every insert above.
                raise InvalidRequest(
                    "\n".join(conflicts), param="version", code="prompt_version_conflict"
                )
        return results

    def promote(
        self,
        name: str,
        version: str,
        label: str,
        actor: str = DEFAULT_ACTOR,
        *,
        force: bool = False,
        reason: str | None = None,
    ) -> LabelMove | None:
        """Point ``label`` at ``version``; None when it already does (nothing is written).

        Refused (``InvalidRequest``, code ``promotion_not_qualified``) unless an
        eval run that passed is recorded for this version; ``force=True``
        skips that check, needs a ``reason`` and is recorded ``forced``.
        """
        check_label(label)
        check_actor(actor)
        why = check_reason(reason)
        if force and why is None:
            raise InvalidRequest(
                "reason: a forced promotion must say why (--reason)", param="reason"
            )
        with translate_errors(self._engine, "promoting a prompt"), self._engine.begin() as conn:
            self._serialize_moves(conn)
            stored = self._read_version(conn, name, version)
            current = self._label_version(conn, name, label)
            if current == version:
                return None
            run_id = self._qualifying_run(conn, stored)
            if run_id is None and not force:
                raise self._not_qualified(conn, stored)
            return self._move_label(
                conn, name, label, current, version, actor, why, run_id, force, "promote"
            )

    def rollback(
        self,
        name: str,
        label: str = PRODUCTION,
        actor: str = DEFAULT_ACTOR,
        *,
        reason: str | None = None,
    ) -> LabelMove:
        """Move ``label`` back to the version it served before its current one.

        The label's history is walked as a stack: a promotion pushes a
        version, a rollback pops one, so rolling back twice goes two versions
        back and never returns to a version that was rolled back. An error
        when there is nothing before the current version.
        """
        check_label(label)
        check_actor(actor)
        why = check_reason(reason)
        with translate_errors(self._engine, "rolling back a prompt"), self._engine.begin() as conn:
            self._serialize_moves(conn)
            moves = [
                _move(row)
                for row in conn.execute(
                    sa.select(prompt_label_moves)
                    .where(prompt_label_moves.c.name == name, prompt_label_moves.c.label == label)
                    .order_by(prompt_label_moves.c.id)
                ).mappings()
            ]
            if not moves:
                self._require_prompt_on(conn, name)
                raise NotFound(f'prompt {name} has no label "{label}"', param="label")
            stack = _served(moves)
            if len(stack) < 2:
                raise InvalidRequest(
                    f"{name} {label}: nothing to roll back to; {stack[-1].to_version}"
                    " is the first version this label pointed at",
                    param="label",
                )
            current, previous = stack[-1], stack[-2]
            return self._move_label(
                conn,
                name,
                label,
                current.to_version,
                previous.to_version,
                actor,
                why,
                previous.eval_run_id,
                False,
                "rollback",
            )

    # --- helpers -----------------------------------------------------------

    def _insert(
        self,
        conn: sa.Connection,
        prompt: PromptFile,
        digest: str,
        actor: str,
        conflicts: list[str],
    ) -> PushStatus | None:
        insert: Any
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        now = self._clock()
        # Insert first, check after: the insert takes SQLite's write lock, and
        # the unique (name, version) settles a race between two pushers.
        created = conn.execute(
            insert(prompt_versions)
            .values(
                name=prompt.name,
                version=prompt.version,
                content_hash=digest,
                content=content_of(prompt),
                description=prompt.description,
                owner=prompt.owner,
                tags=list(prompt.tags),
                created_at=now,
                created_by=actor,
            )
            .on_conflict_do_nothing()
            .returning(prompt_versions.c.id)
        ).scalar_one_or_none()
        if created is not None:
            record_change(
                conn,
                at=now,
                actor=actor,
                action="prompt.push",
                target=prompt_target(prompt.name),
                before=None,
                after={"version": prompt.version, "content_hash": digest},
            )
            return "new"
        stored = self._read_version(conn, prompt.name, prompt.version)
        if stored.content_hash == digest:
            return "unchanged"
        from keel.prompts import diff_contents

        diff = diff_contents(
            stored.content,
            content_of(prompt),
            f"{prompt.name}@{prompt.version} (registry)",
            f"{prompt.name}@{prompt.version} (pushed)",
        )
        conflicts.append(
            f"{prompt.name} {prompt.version} is already pushed with other content"
            f" ({stored.content_hash}); pushed versions never change, so bump the version:\n"
            + diff.rstrip("\n")
        )
        return None

    def _move_label(
        self,
        conn: sa.Connection,
        name: str,
        label: str,
        current: str | None,
        version: str,
        actor: str,
        reason: str | None,
        run_id: int | None,
        forced: bool,
        kind: MoveKind,
    ) -> LabelMove:
        now = self._clock()
        if current is None:
            conn.execute(
                sa.insert(prompt_labels).values(
                    name=name, label=label, version=version, updated_at=now
                )
            )
        else:
            conn.execute(
                sa.update(prompt_labels)
                .where(prompt_labels.c.name == name, prompt_labels.c.label == label)
                .values(version=version, updated_at=now)
            )
        values = {
            "name": name,
            "label": label,
            "from_version": current,
            "to_version": version,
            "at": now,
            "actor": actor,
            "reason": reason,
            "eval_run_id": run_id,
            "forced": forced,
            "kind": kind,
        }
        move_id = conn.execute(
            sa.insert(prompt_label_moves).values(**values).returning(prompt_label_moves.c.id)
        ).scalar_one()
        record_change(
            conn,
            at=now,
            actor=actor,
            action=f"prompt.{kind}",
            target=prompt_target(name),
            before=None if current is None else {"label": label, "version": current},
            after={"label": label, "version": version, "eval_run_id": run_id, "forced": forced},
            reason=reason,
        )
        return LabelMove(id=move_id, **values)  # type: ignore[arg-type]  # kind is a MoveKind

    @staticmethod
    def _serialize_moves(conn: sa.Connection) -> None:
        # One label move at a time, so the feed's ids commit in increasing order.
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MOVES_LOCK_ID)))
        else:
            # A write that changes nothing still takes SQLite's write lock (the
            # driver opens the transaction only at a write), so reads see the latest.
            conn.execute(sa.update(prompt_labels).where(sa.false()).values(version=""))

    @staticmethod
    def _label_version(conn: sa.Connection, name: str, label: str) -> str | None:
        query = sa.select(prompt_labels.c.version).where(
            prompt_labels.c.name == name, prompt_labels.c.label == label
        )
        return conn.execute(query).scalar_one_or_none()

    def _read_version(self, conn: sa.Connection, name: str, version: str) -> PromptVersion:
        row = (
            conn.execute(
                sa.select(prompt_versions).where(
                    prompt_versions.c.name == name, prompt_versions.c.version == version
                )
            )
            .mappings()
            .one_or_none()
        )
        if row is None:
            raise self._missing_version(name, version, conn)
        return _version(row)

    @staticmethod
    def _qualifying_run(conn: sa.Connection, stored: PromptVersion) -> int | None:
        """The newest passing eval run of this version (and of this content, when it says)."""
        query = (
            sa.select(eval_runs.c.id)
            .where(
                eval_runs.c.prompt_name == stored.name,
                eval_runs.c.prompt_version == stored.version,
                eval_runs.c.passed.is_(True),
                sa.or_(
                    eval_runs.c.prompt_hash.is_(None),
                    eval_runs.c.prompt_hash == stored.content_hash,
                ),
            )
            .order_by(eval_runs.c.id.desc())
            .limit(1)
        )
        return conn.execute(query).scalar_one_or_none()

    @staticmethod
    def _not_qualified(conn: sa.Connection, stored: PromptVersion) -> InvalidRequest:
        latest = conn.execute(
            sa.select(eval_runs.c.id, eval_runs.c.suite, eval_runs.c.passed)
            .where(
                eval_runs.c.prompt_name == stored.name,
                eval_runs.c.prompt_version == stored.version,
            )
            .order_by(eval_runs.c.id.desc())
            .limit(1)
        ).one_or_none()
        if latest is None:
            seen = "no eval run is recorded for it"
        elif latest.passed:
            seen = f"its passing eval run #{latest.id} ({latest.suite}) scored other content"
        else:
            seen = f"its latest eval run #{latest.id} ({latest.suite}) failed its gate"
        return InvalidRequest(
            f"{stored.name} {stored.version} is not qualified for promotion: {seen}; run its"
            ' eval suite until it passes, or promote with --force --reason "..."',
            param="version",
            code="promotion_not_qualified",
        )

    def _missing_version(
        self, name: str, version: str, conn: sa.Connection | None = None
    ) -> NotFound:
        query = sa.select(prompt_versions.c.version).where(prompt_versions.c.name == name)
        if conn is None:
            with (
                translate_errors(self._engine, "reading prompt versions"),
                self._engine.connect() as c,
            ):
                pushed = list(c.execute(query).scalars())
        else:
            pushed = list(conn.execute(query).scalars())
        if not pushed:
            return NotFound(f"no prompt {name} is pushed", param="name")
        known = ", ".join(sorted(pushed, key=version_key))
        return NotFound(f"prompt {name} has no version {version}; pushed: {known}", param="version")

    def _require_prompt(self, name: str) -> None:
        with translate_errors(self._engine, "reading prompt versions"), self._engine.connect() as c:
            self._require_prompt_on(c, name)

    @staticmethod
    def _require_prompt_on(conn: sa.Connection, name: str) -> None:
        query = sa.select(prompt_versions.c.id).where(prompt_versions.c.name == name).limit(1)
        if conn.execute(query).scalar_one_or_none() is None:
            raise NotFound(f"no prompt {name} is pushed", param="name")

    def _labels(self, query: sa.Select[Any]) -> list[PromptLabel]:
        with translate_errors(self._engine, "reading prompt labels"), self._engine.connect() as c:
            return [PromptLabel(**row) for row in c.execute(query).mappings()]

    def _moves(self, query: sa.Select[Any], doing: str) -> list[LabelMove]:
        with translate_errors(self._engine, doing), self._engine.connect() as c:
            return [_move(row) for row in c.execute(query).mappings()]


class LintView:
    """The registry's versions as ``keel.prompts.StoredVersion`` values."""

    def __init__(self, registry: PromptRegistry) -> None:
        self._registry = registry

    def versions(self, name: str) -> list[StoredVersion]:
        from keel.prompts import StoredVersion

        return [
            StoredVersion(v.version, v.content_hash, v.content)
            for v in self._registry.versions(name)
        ]


def _served(moves: Iterable[LabelMove]) -> list[LabelMove]:
    """The promotions a label still stands on, oldest first; the last is what it serves."""
    stack: list[LabelMove] = []
    for move in moves:
        if move.kind == "rollback":
            if stack:
                stack.pop()
        else:
            stack.append(move)
    return stack
