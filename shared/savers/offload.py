"""Large ``bytes`` in checkpoints go to S3 by content hash; the row keeps a short reference.

    store = S3BlobStore(s3_client(settings), settings.bucket)
    saver = SqliteSaver(conn, serde=OffloadingSerializer(store=store))   # nothing else changes

``SqliteSaver`` calls ``serde.dumps_typed`` once on the whole checkpoint (channel values
included) before its INSERT, and once per value in ``put_writes`` before its INSERTs; it
calls ``loads_typed`` on every row it reads. ``OffloadingSerializer`` walks what it is given
(dicts, lists, tuples; a bare ``bytes`` value too), swaps every ``bytes`` of at least
``threshold`` bytes for ``{"$blob": "s3://<bucket>/sha256/<hex>"}`` and hands the result to
the inner serializer (by default ``graph_serde()``: LangGraph's, with an allowlist). Loading
reverses it, refusing a reference to another bucket without fetching it, and refusing
content whose SHA-256 is not the one the reference names. S3 failing on save raises before
the saver writes a row.

Not walked: set members (a reference dict is not hashable) and the insides of objects
(pydantic models, dataclasses, ``Send``): their bytes stay inline.

The store and its garbage collection: ``shared.savers.blobs``.
"""

from __future__ import annotations

import copy
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol

from shared.errors import CheckpointError
from shared.savers.blobs import (  # re-exported: the store is half of offloading
    KEY_PREFIX,
    TRASH_PREFIX,
    BlobError,
    BlobIntegrityError,
    BlobMissingError,
    BlobReferenceRefused,
    BlobStoreUnavailable,
    Collection,
    ForeignBucketError,
    S3BlobStore,
    collect_blobs,
    collect_unreferenced_blobs,
    referenced_digests,
    sha256_hex,
)
from shared.savers.serde import graph_serde

DEFAULT_THRESHOLD = 256 * 1024
BLOB_KEY = "$blob"


def _is_reference(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and BLOB_KEY in value


def _rebuild(original: Any, items: list[Any]) -> Any:
    if isinstance(original, list):
        new = copy.copy(original)  # keeps a list subclass's type
        new[:] = items
        return new
    if hasattr(original, "_make"):  # a namedtuple
        return type(original)._make(items)
    return tuple(items)


class OffloadingSerializer:
    """A ``SerializerProtocol`` that keeps large ``bytes`` out of checkpoint rows.

    Drop-in: ``SqliteSaver(conn, serde=OffloadingSerializer(store=store))``, and the same for
    ``AsyncSqliteSaver`` or any saver that serializes through ``serde``.
    """

    def __init__(self, inner: SerializerProtocol | None = None, *, store: S3BlobStore,
                 threshold: int = DEFAULT_THRESHOLD) -> None:
        if not isinstance(threshold, int) or threshold < 1:
            raise CheckpointError(
                f"Offload threshold {threshold!r} must be a positive whole number of bytes: "
                f"use {DEFAULT_THRESHOLD} (256 KiB) unless you have measured a better one.")
        self.inner: SerializerProtocol = inner or graph_serde()
        self.store = store
        self.threshold = threshold

    # --- SerializerProtocol ------------------------------------------------------------------

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        # Offloading happens first: if S3 fails, the saver never reaches its INSERT.
        return self.inner.dumps_typed(self.offload(obj))

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        return self.restore(self.inner.loads_typed(data))

    # --- the walk ----------------------------------------------------------------------------

    def offload(self, value: Any) -> Any:
        """``value`` with every large ``bytes`` replaced by a reference (uploaded if new)."""
        if isinstance(value, bytes):
            if len(value) < self.threshold:
                return value
            return {BLOB_KEY: self.store.put(value)}
        if isinstance(value, dict):
            if _is_reference(value):
                raise BlobReferenceRefused(
                    f"The state holds a one-key dict {{{BLOB_KEY!r}: ...}}, which would be read "
                    "back as a blob reference: rename that key.")
            out = None
            for k, v in value.items():
                new = self.offload(v)
                if new is not v:
                    out = copy.copy(value) if out is None else out  # copy only when changed
                    out[k] = new
            return value if out is None else out
        if isinstance(value, list | tuple):
            items = [self.offload(v) for v in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return _rebuild(value, items)
        return value

    def restore(self, value: Any) -> Any:
        """``value`` with every reference replaced by the verified bytes it names."""
        if isinstance(value, dict):
            if _is_reference(value):
                return self.store.get(value[BLOB_KEY])
            out = None
            for k, v in value.items():
                new = self.restore(v)
                if new is not v:
                    out = copy.copy(value) if out is None else out
                    out[k] = new
            return value if out is None else out
        if isinstance(value, list | tuple):
            items = [self.restore(v) for v in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return _rebuild(value, items)
        return value


__all__ = [
    "BLOB_KEY", "DEFAULT_THRESHOLD", "KEY_PREFIX", "TRASH_PREFIX", "BlobError",
    "BlobIntegrityError", "BlobMissingError", "BlobReferenceRefused", "BlobStoreUnavailable",
    "Collection", "ForeignBucketError", "OffloadingSerializer", "S3BlobStore", "collect_blobs",
    "collect_unreferenced_blobs", "referenced_digests", "sha256_hex",
]
