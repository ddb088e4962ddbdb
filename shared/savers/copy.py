"""Copy a thread between any two savers through their public API (``put_writes``, ``put``).

Per checkpoint, parents first: its pending writes, one ``put_writes`` per task with the task
path the source kept, then the checkpoint with every channel version not yet handed over for
that namespace (``PostgresSaver.put`` stores only the channels named in ``new_versions``). The
writes go first, so a checkpoint that is visible always has its writes.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from shared.savers.reading import ThreadCopy, read_objects


def copy_history(dst: BaseCheckpointSaver, copy: ThreadCopy) -> int:
    """Write one thread's checkpoints and writes into ``dst``; returns the versions handed over."""
    written: set[tuple[str, str, str]] = set()
    handed = 0
    for t in copy.history:
        conf = t.config["configurable"]
        ns, cid = conf["checkpoint_ns"], conf["checkpoint_id"]
        config = {"configurable": {"thread_id": copy.thread_id, "checkpoint_ns": ns,
                                   "checkpoint_id": cid}}
        by_task: dict[str, list[tuple[str, Any]]] = {}
        for task_id, channel, value in t.pending_writes or []:
            by_task.setdefault(task_id, []).append((channel, value))
        for task_id, task_writes in by_task.items():
            dst.put_writes(config, task_writes, task_id, copy.paths.get((ns, cid, task_id), ""))
        versions = {ch: v for ch, v in t.checkpoint["channel_versions"].items()
                    if (ns, ch, str(v)) not in written}
        written.update((ns, ch, str(v)) for ch, v in versions.items()
                       if ch in t.checkpoint["channel_values"])
        parent = t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else None
        target = {"configurable": {"thread_id": copy.thread_id, "checkpoint_ns": ns,
                                   **({"checkpoint_id": parent} if parent else {})}}
        dst.put(target, t.checkpoint, t.metadata, versions)
        handed += len(versions)
    return handed


def copy_thread(src: BaseCheckpointSaver, dst: BaseCheckpointSaver, thread_id: str
                ) -> tuple[int, int, int]:
    """Copy one thread through the public API; returns (checkpoints, writes, versions)."""
    copies = list(read_objects(src, [thread_id]))
    handed = sum(copy_history(dst, c) for c in copies)
    checkpoints = sum(len(c.history) for c in copies)
    writes = sum(len(t.pending_writes or []) for c in copies for t in c.history)
    return checkpoints, writes, handed


__all__ = ["copy_history", "copy_thread"]
