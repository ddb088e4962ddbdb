"""A saver that wraps another and claims exactly the capabilities of the one it wraps.

LangGraph's conformance suite decides what a saver supports by which methods its class
overrides (``aput``, ``aprune``, ...). A wrapper class that defined every method would claim
capabilities its inner saver lacks, and fail. ``WrappingSaver(inner)`` therefore returns an
instance of a subclass built once per (wrapper class, inner type) that defines exactly the
capability methods ``type(inner)`` defines, sync and async counted separately.

Subclasses customise the hooks:

- ``_call(op, fn, *args, **kwargs)``: every sync capability call but ``list`` goes through it;
- ``_acall(op, fn, *args, **kwargs)``: every async one but ``alist`` (``fn`` is awaitable);
- ``_iterate(op, make)`` / ``_aiterate(op, make)``: ``list`` / ``alist``; ``make()`` returns
  the inner saver's iterator, consumed lazily (a history can be long).

``op`` is the method name: ``"put"``, ``"aput_writes"``, ``"list"``, ...
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

# The capability methods of BaseCheckpointSaver, sync and async.
CAPABILITY_METHODS: tuple[str, ...] = (
    "put", "put_writes", "get_tuple", "list", "delete_thread",
    "delete_for_runs", "copy_thread", "prune",
    "aput", "aput_writes", "aget_tuple", "alist", "adelete_thread",
    "adelete_for_runs", "acopy_thread", "aprune",
)


def overrides(cls: type, name: str) -> bool:
    """Whether ``cls`` replaces BaseCheckpointSaver's default ``name`` (the suite's test)."""
    impl = getattr(cls, name, None)
    return impl is not None and impl is not getattr(BaseCheckpointSaver, name, None)


def claimed_capabilities(saver: BaseCheckpointSaver) -> set[str]:
    """The capability methods ``saver``'s class overrides, as the conformance suite sees it."""
    return {name for name in CAPABILITY_METHODS if overrides(type(saver), name)}


class SharesBasics(BaseCheckpointSaver[Any]):
    """A saver over another one (``_basis``): its serializer, config specs and channel
    versions are that saver's, so both always agree on how values are stored."""

    @property
    def _basis(self) -> BaseCheckpointSaver:
        raise NotImplementedError

    @property  # type: ignore[override]
    def serde(self) -> SerializerProtocol:
        return self._basis.serde

    @serde.setter
    def serde(self, value: SerializerProtocol) -> None:
        self._basis.serde = value

    @property
    def config_specs(self) -> list:
        return self._basis.config_specs

    def get_next_version(self, current: Any, channel: None) -> Any:
        return self._basis.get_next_version(current, channel)


class WrappingSaver(SharesBasics):
    """Delegates everything to ``inner``; subclasses hook ``_call`` / ``_acall``."""

    _classes: ClassVar[dict[tuple[type, type], type]] = {}

    def __new__(cls, inner: BaseCheckpointSaver, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(inner, BaseCheckpointSaver):
            raise TypeError(f"{cls.__name__} wraps a BaseCheckpointSaver, not "
                            f"{type(inner).__name__}: pass a saver such as SqliteSaver.")
        if "_for_inner" not in cls.__dict__:  # not yet specialised for an inner type
            cls = _specialise(cls, type(inner))
        return object.__new__(cls)

    def __init__(self, inner: BaseCheckpointSaver) -> None:
        # No super().__init__: it would give the wrapper a serde of its own next to the inner's.
        self.inner = inner
        self._writes_take_task_path = (
            inspect.signature(inner.put_writes).parameters.get("task_path") is not None)

    # --- hooks ----------------------------------------------------------------------------

    def _call(self, op: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    async def _acall(self, op: str, fn: Callable[..., Awaitable[Any]], *args: Any,
                     **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    def _iterate(self, op: str, make: Callable[[], Iterator[CheckpointTuple]]
                 ) -> Iterator[CheckpointTuple]:
        yield from make()

    async def _aiterate(self, op: str, make: Callable[[], AsyncIterator[CheckpointTuple]]
                        ) -> AsyncIterator[CheckpointTuple]:
        async for item in make():
            yield item

    # --- what the wrapper shares with its inner saver ----------------------------------

    @property
    def _basis(self) -> BaseCheckpointSaver:
        return self.inner

    def get_delta_channel_history(self, *, config: RunnableConfig, channels: Sequence[str]
                                  ) -> Mapping[str, DeltaChannelHistory]:
        return self.inner.get_delta_channel_history(config=config, channels=channels)

    async def aget_delta_channel_history(self, *, config: RunnableConfig,
                                         channels: Sequence[str]
                                         ) -> Mapping[str, DeltaChannelHistory]:
        return await self.inner.aget_delta_channel_history(config=config, channels=channels)

    def rewrap(self, inner: BaseCheckpointSaver) -> WrappingSaver:
        """A wrapper like this one around another inner saver (override to copy settings)."""
        return type(self).__mro__[1](inner)  # the unspecialised class

    def with_allowlist(self, extra_allowlist: Any) -> WrappingSaver:
        # The base would copy the wrapper and give the copy a serde the inner never uses.
        inner = self.inner.with_allowlist(extra_allowlist)
        return self if inner is self.inner else self.rewrap(inner)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def _put_writes_args(self, writes: Sequence[tuple[str, Any]], task_id: str,
                         task_path: str) -> tuple[Any, ...]:
        # A saver written before task_path existed takes three arguments.
        return (writes, task_id, task_path) if self._writes_take_task_path else (writes, task_id)


class _Delegates(WrappingSaver):
    """The pool of capability methods; ``_specialise`` copies the ones the inner class has."""

    def put(self, config: RunnableConfig, checkpoint: Checkpoint,
            metadata: CheckpointMetadata, new_versions: ChannelVersions) -> RunnableConfig:
        return self._call("put", self.inner.put, config, checkpoint, metadata, new_versions)

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata, new_versions: ChannelVersions
                   ) -> RunnableConfig:
        return await self._acall("aput", self.inner.aput, config, checkpoint, metadata,
                                 new_versions)

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                   task_id: str, task_path: str = "") -> None:
        self._call("put_writes", self.inner.put_writes, config,
                   *self._put_writes_args(writes, task_id, task_path))

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        await self._acall("aput_writes", self.inner.aput_writes, config,
                          *self._put_writes_args(writes, task_id, task_path))

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._call("get_tuple", self.inner.get_tuple, config)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._acall("aget_tuple", self.inner.aget_tuple, config)

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None, limit: int | None = None
             ) -> Iterator[CheckpointTuple]:
        yield from self._iterate("list", lambda: self.inner.list(
            config, filter=filter, before=before, limit=limit))

    async def alist(self, config: RunnableConfig | None, *,
                    filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None, limit: int | None = None
                    ) -> AsyncIterator[CheckpointTuple]:
        async for item in self._aiterate("alist", lambda: self.inner.alist(
                config, filter=filter, before=before, limit=limit)):
            yield item

    def delete_thread(self, thread_id: str) -> None:
        self._call("delete_thread", self.inner.delete_thread, thread_id)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._acall("adelete_thread", self.inner.adelete_thread, thread_id)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._call("delete_for_runs", self.inner.delete_for_runs, run_ids)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._acall("adelete_for_runs", self.inner.adelete_for_runs, run_ids)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._call("copy_thread", self.inner.copy_thread, source_thread_id, target_thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._acall("acopy_thread", self.inner.acopy_thread, source_thread_id,
                          target_thread_id)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._call("prune", self.inner.prune, thread_ids, strategy=strategy)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._acall("aprune", self.inner.aprune, thread_ids, strategy=strategy)


def _specialise(wrapper: type, inner_type: type) -> type:
    """The subclass of ``wrapper`` for ``inner_type``, built once and cached."""
    key = (wrapper, inner_type)
    cls = WrappingSaver._classes.get(key)
    if cls is None:
        methods = {name: _Delegates.__dict__[name]
                   for name in CAPABILITY_METHODS if overrides(inner_type, name)}
        cls = type(f"{wrapper.__name__}[{inner_type.__name__}]", (wrapper,),
                   {**methods, "_for_inner": inner_type, "__module__": wrapper.__module__,
                    "__doc__": wrapper.__doc__})
        WrappingSaver._classes[key] = cls
    return cls
