"""The isolation guard: namespaces only from validated user ids, one sentence for the rest."""

from __future__ import annotations

import pytest

from shared.errors import CheckpointError
from shared.store.namespaces import unguarded_scope, user_namespace, validate_user_id

ADVERSARIAL = ["", "alice.admin", "../alice", "alice/facts", "*", "%", "ali?e", " alice",
               "alice\x00", "-alice", "a" * 65, None, 42]


def test_valid_ids_build_three_labels() -> None:
    assert user_namespace("alice") == ("users", "alice", "facts")
    assert user_namespace("Bob_2-x", "summaries") == ("users", "Bob_2-x", "summaries")
    assert validate_user_id("a" * 64) == "a" * 64


@pytest.mark.parametrize("user_id", ADVERSARIAL)
def test_adversarial_ids_are_refused_in_one_sentence(user_id: object) -> None:
    with pytest.raises(CheckpointError) as err:
        user_namespace(user_id)
    text = str(err.value)
    assert text.startswith("The user id") and text.count(". ") == 0 and text.endswith(".")


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(CheckpointError, match="kind 'secrets' is unknown"):
        user_namespace("alice", "secrets")


def test_unguarded_scope_lets_paths_through() -> None:
    assert unguarded_scope("") == ("users",)
    assert unguarded_scope("alice/facts") == ("users", "alice", "facts")
    assert unguarded_scope("bob") == ("users", "bob")
