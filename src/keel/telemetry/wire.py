"""Request records as bytes and back, for the telemetry process.

The gateway's writer thread encodes each batch with one orjson call, which
walks the dataclasses in C: that is the only per-record work left holding
the gateway's GIL when the output sinks run in their own process (see
``keel.telemetry.sink_process``). The other side rebuilds the same records,
so every sink reads one ``RequestRecord`` whichever process it runs in.

A frame on the pipe is a 4-byte big-endian length, then that many bytes.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from collections.abc import Callable, Sequence
from typing import IO, Any, TypeVar

import orjson

from keel.telemetry.record import AttemptRecord, RequestRecord, Usage

log = logging.getLogger("keel.telemetry")

_T = TypeVar("_T")

_LENGTH = struct.Struct("!I")
MAX_FRAME = 2**32 - 1


def _named_tuple(value: object) -> tuple[Any, ...]:
    # orjson encodes dataclasses and plain tuples itself, but leaves tuple
    # subclasses (stages built as StageRecord) to the caller. Nothing else
    # is converted: a value JSON cannot hold fails its record.
    if isinstance(value, tuple):
        return tuple(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps_batch(records: Sequence[RequestRecord], kept: Sequence[bool]) -> bytes:
    """The batch as one JSON document; a record JSON cannot hold is logged and left out."""
    try:
        return orjson.dumps([list(kept), list(records)], default=_named_tuple)
    except orjson.JSONEncodeError:
        pass
    # Rare (a non-string key in caller metadata, an integer over 64 bits):
    # encode one by one so the rest of the batch still reaches every sink.
    good: list[bytes] = []
    flags: list[bool] = []
    for record, flag in zip(records, kept, strict=True):
        try:
            good.append(orjson.dumps(record, default=_named_tuple))
        except orjson.JSONEncodeError as exc:
            log.error("telemetry record %s left out: %s", record.request_id, exc)
            continue
        flags.append(flag)
    return b"[" + orjson.dumps(flags) + b",[" + b",".join(good) + b"]]"


def loads_batch(data: bytes) -> tuple[list[RequestRecord], list[bool]]:
    kept, records = orjson.loads(data)
    return [record_from_dict(r) for r in records], kept


def record_from_dict(fields: dict[str, Any]) -> RequestRecord:
    """The record ``dumps_batch`` encoded: JSON arrays back to tuples, nested classes rebuilt."""
    fields["usage"] = _build(Usage, _USAGE_FIELDS, fields["usage"])
    fields["attempts"] = tuple(
        _build(AttemptRecord, _ATTEMPT_FIELDS, a) for a in fields["attempts"]
    )
    fields["stages"] = tuple(map(tuple, fields["stages"]))
    fields["finish_reasons"] = tuple(fields["finish_reasons"])
    return _build(RequestRecord, _RECORD_FIELDS, fields)


def _build(cls: Callable[..., _T], names: tuple[str, ...], fields: dict[str, Any]) -> _T:
    # Positional when the keys are the fields in order, as orjson writes a
    # dataclass: keyword matching finds a parameter by identity with the
    # interned name first, and decoded keys are never those objects, so each
    # was compared by value against every parameter; RequestRecord(**fields)
    # cost about 15 µs, half of decoding a record.
    if tuple(fields) == names:
        return cls(*fields.values())
    return cls(**fields)


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(RequestRecord))
_USAGE_FIELDS = tuple(f.name for f in dataclasses.fields(Usage))
_ATTEMPT_FIELDS = tuple(f.name for f in dataclasses.fields(AttemptRecord))


def frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise ValueError(f"a telemetry frame of {len(payload)} bytes is over {MAX_FRAME}")
    return _LENGTH.pack(len(payload)) + payload


def read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame's payload, or None at a clean end of the stream."""
    head = stream.read(_LENGTH.size)
    if not head:
        return None
    if len(head) < _LENGTH.size:
        raise EOFError("the telemetry stream ended inside a frame header")
    (length,) = _LENGTH.unpack(head)
    payload = stream.read(length)
    if len(payload) < length:
        raise EOFError(f"the telemetry stream ended {length - len(payload)} bytes into a frame")
    return payload
