"""4.2 `m4_postgres/s2_schema.py`: the witness, metric by metric."""

from __future__ import annotations

from langgraph.checkpoint.postgres.base import MIGRATIONS

from tests.conftest import SMALL_SCALE, RunLesson

SECRET = "s3cret-pw"


def test_4_2_schema(lesson_run: RunLesson) -> None:
    turns = 8
    w = lesson_run("m4_postgres.s2_schema").witness
    assert SMALL_SCALE["m4_postgres.s2_schema"] == {"turns": turns}
    assert w.error is None
    assert w["pg_tables"].value == 4
    assert w["sqlite_tables"].value == 2
    assert w["names_shared_with_sqlite"].value == "checkpoints"
    assert w["pg_primary_keys"].value == 4
    assert w["pg_thread_id_indexes"].value == 3
    assert w["migrations_recorded"].value == len(MIGRATIONS)
    assert w["migrations_added_by_second_setup"].value == 0
    assert w["same_conversation"].value is True
    assert w["checkpoints_pg"].value == 3 * turns  # input, START and chatbot per invoke
    assert w["writes_pg"].value == 3 * turns
    assert w["blob_rows_pg"].value < w["checkpoints_pg"].value * 3
    assert w["messages_blob_rows"].value == 2 * turns  # a new version at START and chatbot
    assert w["messages_copies_sqlite"].value == 3 * turns - 1  # all but the first input
    assert w["messages_copies_sqlite"].value > w["messages_blob_rows"].value
    assert w["inlined_channels_with_blobs"].value == 0
    assert w["demo_inlined"].value == "retries,score,topic,urgent"
    assert w["demo_blobs"].value == "files,messages"
    assert w["demo_loads_equal"].value is True
    assert 0 < w["payload_bytes_pg"].value < w["payload_bytes_sqlite"].value
    assert w["pg_to_sqlite_bytes"].value < 1
    assert 0 < w["last_turn_bytes_pg"].value < w["last_turn_bytes_sqlite"].value
    assert any("checkpoint_blobs(" in line and "blob bytea" in line for line in w.evidence)
    assert any("'branch:to:chatbot'" in line for line in w.evidence)  # None stays inline
    assert w.passed
