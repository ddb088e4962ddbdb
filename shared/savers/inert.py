"""Read stored checkpoints without running them: msgpack split into byte slices, never decoded.

LangGraph's ``JsonPlusSerializer`` stores application objects (pydantic models, dataclasses,
messages, ``Send``) as msgpack *ext* values that name a module and a callable; loading one
imports the module and calls it (unless ``LANGGRAPH_STRICT_MSGPACK`` is set or an allowlist
is passed). A tampered row can therefore name ``os.system``. The operations tools (migrate,
verify, prune, inspect, blob collection) never need the objects: they move and compare the
serialized bytes. This module is how they look inside a row without that risk:

- ``skip`` walks the msgpack *format* (lengths and counts) to find where a value ends; it
  never builds a value, so nothing is imported or called, and no Python callback runs inside
  a C decoder (ormsgpack turns a Ctrl-C raised in an ``ext_hook`` into ``ValueError``).
- ``split_checkpoint`` cuts a stored checkpoint into its outer fields (``v``, ``ts``, ``id``,
  ``channel_versions``... decoded with ormsgpack *without* an ext hook, so an ext value there
  is refused, not run) and one ``Value`` per channel: primitives decoded (they cannot hold
  ext values), everything else kept as the exact bytes ``dumps_typed`` gives that value on
  its own. That is the form ``PostgresSaver`` stores per channel, so SQLite <-> PostgreSQL
  moves bytes, type tag and payload unchanged.
- ``join_checkpoint`` is the reverse: the msgpack body ``SqliteSaver`` would have written.

Anything that cannot be read this way (a ``pickle`` or encrypted row, malformed bytes, an ext
value where only plain data belongs) raises ``UnreadableValue``, which the tools report with
the thread, checkpoint and channel it came from.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

import ormsgpack

from shared.errors import CheckpointError

_OPT = ormsgpack.OPT_NON_STR_KEYS
EXT_DELTA_SNAPSHOT = 7  # langgraph.checkpoint.serde.jsonplus: a DeltaChannel snapshot
# The outer key order LangGraph's create_checkpoint uses, so a rebuilt body reads the same.
CHECKPOINT_ORDER = ("v", "ts", "id", "channel_values", "channel_versions", "versions_seen",
                    "updated_channels")
EMBEDDABLE = frozenset({"msgpack", "bytes", "bytearray", "null"})  # can live in a msgpack body


class UnreadableValue(CheckpointError):
    """Stored bytes that cannot be read without running them, or that are malformed."""


class Value(NamedTuple):
    """One channel value as stored. ``type`` is ``"value"`` for a decoded primitive (None,
    bool, int, float, str: ``data`` is the value), ``"bytes"``, ``"msgpack"`` (``data`` is the
    serialized value), or another serializer's tag (``pickle``, ``json``, encrypted) whose
    bytes are carried but never read."""

    type: str
    data: Any

    def key(self) -> tuple[Any, ...]:
        """What equality means: the type too (True is not 1), floats by their exact bits."""
        d = self.data
        if self.type == "value":
            return ("value", type(d).__name__, d.hex() if isinstance(d, float) else d)
        return (self.type, bytes(d))


# --- the msgpack format: (fixed size after the type byte, items that follow) ----------------

def _table() -> list[tuple[str, int]]:
    t: list[tuple[str, int]] = [("x", 0)] * 256
    for b in range(0x00, 0x80):
        t[b] = ("fix", 1)
    for b in range(0xE0, 0x100):
        t[b] = ("fix", 1)
    for b in range(0x80, 0x90):
        t[b] = ("fixmap", b & 0x0F)
    for b in range(0x90, 0xA0):
        t[b] = ("fixarray", b & 0x0F)
    for b in range(0xA0, 0xC0):
        t[b] = ("fix", 1 + (b & 0x1F))
    for b, size in ((0xC0, 1), (0xC2, 1), (0xC3, 1), (0xCA, 5), (0xCB, 9), (0xCC, 2),
                    (0xCD, 3), (0xCE, 5), (0xCF, 9), (0xD0, 2), (0xD1, 3), (0xD2, 5), (0xD3, 9),
                    (0xD4, 3), (0xD5, 4), (0xD6, 6), (0xD7, 10), (0xD8, 18)):
        t[b] = ("fix", size)
    for b, width in ((0xC4, 1), (0xC5, 2), (0xC6, 4), (0xD9, 1), (0xDA, 2), (0xDB, 4)):
        t[b] = ("len", width)  # bin / str: a length, then that many bytes
    for b, width in ((0xC7, 1), (0xC8, 2), (0xC9, 4)):
        t[b] = ("ext", width)  # ext: a length, a type byte, then the data
    t[0xDC], t[0xDD], t[0xDE], t[0xDF] = ("array", 2), ("array", 4), ("map", 2), ("map", 4)
    return t


_KIND = _table()
_UINT = {1: struct.Struct(">B"), 2: struct.Struct(">H"), 4: struct.Struct(">I")}
_PRIMITIVE_FIRST = frozenset([*range(0x00, 0x80), *range(0xE0, 0x100), *range(0xA0, 0xC0),
                              0xC0, 0xC2, 0xC3, *range(0xCA, 0xD4), 0xD9, 0xDA, 0xDB])
_BIN = {0xC4: 1, 0xC5: 2, 0xC6: 4}
_EXT_CODE_AT = {0xD4: 1, 0xD5: 1, 0xD6: 1, 0xD7: 1, 0xD8: 1, 0xC7: 2, 0xC8: 3, 0xC9: 5}


def skip(buf: bytes, pos: int = 0) -> int:
    """The offset just past the msgpack value starting at ``pos`` (nothing is decoded)."""
    remaining, end = 1, len(buf)
    try:
        while remaining:
            remaining -= 1
            kind, n = _KIND[buf[pos]]
            if kind == "fix":
                pos += n
            elif kind == "fixmap":
                remaining += 2 * n
                pos += 1
            elif kind == "fixarray":
                remaining += n
                pos += 1
            elif kind == "len":
                pos += 1 + n + _UINT[n].unpack_from(buf, pos + 1)[0]
            elif kind == "ext":
                pos += 2 + n + _UINT[n].unpack_from(buf, pos + 1)[0]
            elif kind in ("array", "map"):
                count = _UINT[n].unpack_from(buf, pos + 1)[0]
                remaining += count * (2 if kind == "map" else 1)
                pos += 1 + n
            else:
                raise UnreadableValue(f"byte 0x{buf[pos]:02x} at offset {pos} is not msgpack")
            if pos > end:
                raise IndexError
    except (IndexError, struct.error):
        raise UnreadableValue("the msgpack bytes end in the middle of a value") from None
    return pos


def map_items(buf: bytes, pos: int = 0) -> Iterator[tuple[Any, int, int]]:
    """(key, start, end) of each entry of the msgpack map at ``pos``; keys must be plain."""
    kind, n = _KIND[buf[pos]] if pos < len(buf) else ("x", 0)
    if kind == "fixmap":
        count, pos = n, pos + 1
    elif kind == "map":
        count, pos = _UINT[n].unpack_from(buf, pos + 1)[0], pos + 1 + n
    else:
        raise UnreadableValue("a map was expected")
    for _ in range(count):
        key_end = skip(buf, pos)
        key = plain(buf[pos:key_end])
        end = skip(buf, key_end)
        yield key, key_end, end
        pos = end


def plain(data: bytes) -> Any:
    """Decode msgpack that holds only plain data; an ext value is refused, never called."""
    try:
        return ormsgpack.unpackb(data, option=_OPT)  # no ext_hook: an ext value raises
    except (ValueError, TypeError, ormsgpack.MsgpackDecodeError) as exc:
        reason = "it holds an object" if "ext_hook" in str(exc) else f"malformed: {exc}"
        raise UnreadableValue(f"not plain data ({reason})") from None


def ext_code(data: bytes) -> int | None:
    """The ext type code if ``data`` is one msgpack ext value, else None."""
    at = _EXT_CODE_AT.get(data[0]) if data else None
    return None if at is None or len(data) <= at else data[at] if data[at] < 128 else None


def is_snapshot(value: Value) -> bool:
    return value.type == "msgpack" and ext_code(value.data) == EXT_DELTA_SNAPSHOT


def from_slice(data: bytes) -> Value:
    """A channel value cut from a checkpoint body, in the form ``dumps_typed`` gives it."""
    first = data[0]
    if first in _PRIMITIVE_FIRST:
        return Value("value", plain(data))
    if first in _BIN:
        width = _BIN[first]
        return Value("bytes", bytes(data[1 + width:]))
    return Value("msgpack", bytes(data))


def from_typed(type_: str, data: bytes | None) -> Value | None:
    """A value stored with its own type tag (a PostgreSQL blob); None for ``empty``."""
    if type_ == "empty":
        return None
    if type_ == "null":
        return Value("value", None)
    if type_ in ("bytes", "bytearray"):
        return Value("bytes", bytes(data or b""))
    if type_ == "msgpack" and data:
        return from_slice(data)
    return Value(type_, bytes(data or b""))


def to_typed(value: Value) -> tuple[str, bytes]:
    """(type, bytes) for a blob row: what ``serde.dumps_typed`` stores for that value."""
    if value.type == "value":
        return ("null", b"") if value.data is None else ("msgpack", ormsgpack.packb(
            value.data, option=_OPT))
    return value.type, bytes(value.data)


def _packed(value: Value, where: str) -> bytes:
    if value.type == "value":
        return ormsgpack.packb(value.data, option=_OPT)
    if value.type == "bytes":
        return ormsgpack.packb(bytes(value.data))
    if value.type == "msgpack":
        return bytes(value.data)
    raise UnreadableValue(f"{where} is stored as {value.type!r}, which cannot be embedded in a "
                          "msgpack checkpoint without being decoded")


def _map_header(n: int) -> bytes:
    return bytes([0x80 | n]) if n < 16 else (b"\xde" + struct.pack(">H", n) if n < 65536
                                             else b"\xdf" + struct.pack(">I", n))


def _holds_ext(data: Any) -> bool:
    """Whether plain-looking data holds an ext value: unpacking it again without a hook
    raises if so (both in C, about a microsecond for a checkpoint's fields)."""
    try:
        ormsgpack.unpackb(ormsgpack.packb(data, option=_OPT), option=_OPT)
    except (ValueError, TypeError, ormsgpack.MsgpackDecodeError, ormsgpack.MsgpackEncodeError):
        return True
    return False


def _as_value(data: Any) -> Value:
    if data is None or isinstance(data, bool | int | float | str):
        return Value("value", data)
    if isinstance(data, bytes):
        return Value("bytes", data)
    return Value("msgpack", ormsgpack.packb(data, option=_OPT))


def split_checkpoint(type_: str, body: bytes) -> tuple[dict[str, Any], dict[str, Value]]:
    """(outer fields without ``channel_values``, channel -> Value) of a stored checkpoint.

    Fast path: ormsgpack decodes with ``ormsgpack.Ext`` itself as the ext hook (a C type: no
    import, no call of anything a row names, no Python code for a Ctrl-C to land in), and
    the result is used only if packing it again gives back exactly the stored bytes; then
    every value packs to exactly its own slice. Otherwise the format is walked slice by slice.
    """
    if type_ != "msgpack":
        raise UnreadableValue(f"the checkpoint is stored as {type_!r}, which cannot be read "
                              "without running the serializer")
    body = bytes(body)
    try:
        whole = ormsgpack.unpackb(body, ext_hook=ormsgpack.Ext, option=_OPT)
        exact = isinstance(whole, dict) and ormsgpack.packb(whole, option=_OPT) == body
    except (ValueError, TypeError, ormsgpack.MsgpackDecodeError, ormsgpack.MsgpackEncodeError):
        exact = False
    if not exact:
        return _split_slices(body)
    fields: dict[str, Any] = {}
    values: dict[str, Value] = {}
    for key, data in whole.items():
        if key == "channel_values" and isinstance(data, dict):
            values = {str(ch): _as_value(v) for ch, v in data.items()}
        else:
            fields[str(key)] = data
    if "channel_values" in fields or _holds_ext(fields):
        return _split_slices(body)  # let the slow path name what is wrong
    return fields, values


def _split_slices(body: bytes) -> tuple[dict[str, Any], dict[str, Value]]:
    fields: dict[str, Any] = {}
    values: dict[str, Value] = {}
    for key, start, end in map_items(body):
        if key == "channel_values":
            for channel, vstart, vend in map_items(body, start):
                values[str(channel)] = from_slice(body[vstart:vend])
        else:
            fields[str(key)] = plain(body[start:end])
    if skip(body) != len(body):
        raise UnreadableValue("there are bytes after the checkpoint")
    return fields, values


def join_checkpoint(fields: dict[str, Any], values: dict[str, Value], where: str = "a value"
                    ) -> bytes:
    """The msgpack body ``SqliteSaver`` writes for these fields and channel values."""
    keys = [k for k in CHECKPOINT_ORDER if k in fields or k == "channel_values"]
    keys += [k for k in fields if k not in CHECKPOINT_ORDER]
    parts = [_map_header(len(keys))]
    for key in keys:
        parts.append(ormsgpack.packb(key))
        if key == "channel_values":
            parts.append(_map_header(len(values)))
            for channel, value in values.items():
                parts.append(ormsgpack.packb(channel))
                parts.append(_packed(value, f"{where} channel {channel!r}"))
        else:
            parts.append(ormsgpack.packb(fields[key], option=_OPT))
    return b"".join(parts)


def canonical(data: Any) -> str:
    """A JSON text that is equal exactly when the data is (keys sorted, bools not ints)."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, default=repr)


__all__ = ["EMBEDDABLE", "UnreadableValue", "Value", "canonical", "ext_code", "from_slice",
           "from_typed", "is_snapshot", "join_checkpoint", "map_items", "plain", "skip",
           "split_checkpoint", "to_typed"]
