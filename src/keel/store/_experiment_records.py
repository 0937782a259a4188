"""Experiment records: an experiment's stored state and its events; the shares of each state.

Plain frozen values, JSON-ready through ``as_dict``; ``keel.store.experiments``
reads and writes them. The share helpers are pure: what assignment uses at
the start, at a ramp step, after a rollback and after completion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from keel.experiments.assign import shares_at
from keel.experiments.spec import Experiment

Status = Literal["running", "paused", "rolled_back", "completed"]
Action = Literal["start", "advance", "hold", "rollback", "complete", "pause", "resume"]
Mode = Literal["ramp", "split", "shadow"]
STATUSES: tuple[Status, ...] = ("running", "paused", "rolled_back", "completed")
ACTIONS: tuple[Action, ...] = (
    "start",
    "advance",
    "hold",
    "rollback",
    "complete",
    "pause",
    "resume",
)
# The statuses whose shares gateways apply: a paused experiment keeps its traffic
# where it is (nothing moves it), it does not send everyone back to the control.
LIVE: tuple[Status, ...] = ("running", "paused")
CONTROLLER = "controller"  # the actor of the controller's own decisions


class DecisionLike(Protocol):
    """What the controller decided (``keel.experiments.decide.Decision`` is one)."""

    @property
    def action(self) -> str: ...

    @property
    def reasons(self) -> Sequence[str]: ...

    @property
    def numbers(self) -> Mapping[str, Any]: ...


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def mode_of(spec: Experiment) -> Mode:
    if spec.ramp is not None:
        return "ramp"
    if spec.split is not None:
        return "split"
    return "shadow"


def _only(spec: Experiment, winner: str) -> dict[str, float]:
    return {v.name: (100.0 if v.name == winner else 0.0) for v in spec.variants}


def ramp_shares(spec: Experiment, step_index: int) -> dict[str, float]:
    """A ramp at step ``step_index``: the candidate at that step's percent, the control the rest."""
    shares = shares_at(spec, step_index)
    return {v.name: float(shares.get(v.name, 0.0)) for v in spec.variants}  # in file order


def initial_shares(spec: Experiment) -> dict[str, float]:
    """Ramp: the candidate at its first step; split: as given; shadow: the control serves all."""
    return ramp_shares(spec, 0)


def control_shares(spec: Experiment) -> dict[str, float]:
    """After a rollback: the control serves everything."""
    return _only(spec, spec.control.name)


def completed_shares(spec: Experiment, current: Mapping[str, float]) -> dict[str, float]:
    """After completion: a ramp's candidate serves everything; a split or shadow stays as it was."""
    if spec.ramp is not None:
        return _only(spec, spec.candidates[0].name)
    return dict(current)


@dataclass(frozen=True, slots=True)
class ExperimentRecord:
    """An experiment as stored: its file, where it stands, and the shares gateways apply."""

    name: str
    spec: Experiment
    status: Status
    step_index: int  # ramps: index into spec.ramp.steps; 0 otherwise
    step_started_at: datetime
    shares: dict[str, float]  # percent per variant name
    version: int  # feed position of its latest change
    updated_at: datetime
    created_at: datetime
    created_by: str
    lease_owner: str | None = None
    lease_until: datetime | None = None

    @property
    def mode(self) -> Mode:
        return mode_of(self.spec)

    @property
    def live(self) -> bool:
        """Whether gateways apply its shares (running or paused)."""
        return self.status in LIVE

    @property
    def steps(self) -> list[float]:
        return list(self.spec.ramp.steps) if self.spec.ramp is not None else []

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the CLI and the admin API."""
        return {
            "name": self.name,
            "mode": self.mode,
            "status": self.status,
            "step_index": self.step_index,
            "steps": self.steps,
            "step_started_at": _iso(self.step_started_at),
            "shares": dict(self.shares),
            "version": self.version,
            "updated_at": _iso(self.updated_at),
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "spec": self.spec.model_dump(mode="json"),
        }


@dataclass(frozen=True, slots=True)
class ExperimentEvent:
    """One decision or operator action, with the reasons and the numbers behind it."""

    id: int
    experiment: str
    at: datetime
    actor: str  # controller, cli:<os user>, key:<key prefix>
    action: Action
    reasons: list[str]
    numbers: dict[str, Any]
    step_index: int  # after the event
    shares: dict[str, float]  # after the event

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "experiment": self.experiment,
            "at": _iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "reasons": list(self.reasons),
            "numbers": dict(self.numbers),
            "step_index": self.step_index,
            "shares": dict(self.shares),
        }


@dataclass(frozen=True, slots=True)
class Applied:
    """What :meth:`ExperimentStore.apply` did: the state after, and the event (None: nothing)."""

    record: ExperimentRecord
    event: ExperimentEvent | None
