"""The isolation guard: a user's Store namespaces are built only from a validated user id.

    user_namespace("alice", "facts")   # -> ("users", "alice", "facts")
    user_namespace("../bob", "facts")  # CheckpointError: one sentence, nothing read or written

LangGraph's stores already refuse dots, NUL bytes and empty labels in a namespace, and match a
prefix on whole labels (``("users", "ali")`` does not reach ``("users", "alice")``). What they
cannot know is which labels came from user text. An application that splits a user id into
labels (a path like ``users/{id}``), drops empty parts, or hands a ``*`` to ``list_namespaces``
lets one user read another's memories. The guard closes that door at the one place every
namespace is built: a user id is 1-64 letters, digits, ``_`` or ``-``, starting with a letter
or digit; every namespace has exactly three labels, and searches use it whole, never as a
shorter prefix.
"""

from __future__ import annotations

import re

from shared.errors import CheckpointError

USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
KINDS = ("facts", "preferences", "summaries")
COMPANY_KNOWLEDGE = ("company", "knowledge")


def validate_user_id(user_id: object) -> str:
    """``user_id`` unchanged when it is safe as one namespace label; else one clear sentence."""
    if not isinstance(user_id, str) or not USER_ID.fullmatch(user_id):
        raise CheckpointError(
            f"The user id {user_id!r} cannot name a Store namespace: use 1-64 letters, digits, "
            "'_' or '-' starting with a letter or digit (no dots, slashes, wildcards or empty "
            "ids), so that no user can reach another user's memories.")
    return user_id


def user_namespace(user_id: object, kind: str = "facts") -> tuple[str, str, str]:
    """``("users", user_id, kind)`` for a validated id and a known kind; else CheckpointError."""
    if kind not in KINDS:
        raise CheckpointError(f"The namespace kind {kind!r} is unknown: use one of "
                              f"{', '.join(KINDS)}.")
    return ("users", validate_user_id(user_id), kind)


def unguarded_scope(user_id: str) -> tuple[str, ...]:
    """What the guard replaces (for the lesson's attack only): a user's scope from a path.

    ``f"users/{user_id}"`` split on '/', empty parts dropped, then searched as a prefix: the
    way a namespace is often derived from a URL path. Never use it.
    """
    return tuple(p for p in f"users/{user_id}".split("/") if p)


__all__ = ["COMPANY_KNOWLEDGE", "KINDS", "USER_ID", "unguarded_scope", "user_namespace",
           "validate_user_id"]
