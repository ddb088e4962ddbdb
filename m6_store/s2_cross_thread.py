"""6.2 Cross-thread memory: what Alice says in one thread and process is known in the next,
company knowledge stated once is found by everyone, and no user ever reaches Alice's memories.

The memory chat graph (``build_memory_chat_graph``, shared/graph.py) has a ``remember`` node
that writes the facts a user states into ``("users", user_id, "facts")`` and a ``recall``
node that searches the Store by meaning (WordLlama vectors, pgvector HNSW) before the model
answers. The Store reaches the nodes through LangGraph's runtime:
``builder.compile(checkpointer=saver, store=store)``; the user id through the run's context.
Checkpoints stay per thread; the Store is what threads share.

Isolation: every namespace comes from ``user_namespace`` (shared/store/namespaces.py), which
accepts only a plain user id. The same attack ids are tried against an app that builds its
namespace from a path (``users/{user_id}``, split, empty parts dropped): that one leaks.
"""

from __future__ import annotations

from pathlib import Path

from langgraph.store.base import BaseStore

import shared.witness
from shared.errors import CheckpointError
from shared.infra.postgres import create_database, postgres_server
from shared.proc import run_child
from shared.store.memory import open_memory_store, recall
from shared.witness import Witness, fresh_workdir
from shared.workloads.memory_chat import ATTACK_IDS, chat_turns, unguarded_leak

CHAT = "shared.workloads.memory_chat:chat_turns"
ALICE_SAYS = ["My name is Alice. I live in Lisbon.", "My favourite colour is teal."]
NOTE = "Company note: the VPN server is vpn.acme.example."
ASK_ALICE = "Where do I live? What is my favourite colour?"
ASK_NOTE = "What is the VPN server?"


def main(workdir: Path | None = None, users: int = 4) -> Witness:
    w = Witness("6.2", "Cross-thread memory, one user's memories for that user only")
    wd = fresh_workdir(workdir, "m6_s2_cross_thread")
    others = ["bob", "carol", "dave", "erin", "frank"][: max(1, users - 1)]
    try:
        with postgres_server(wd / "pg") as server:
            url = create_database(server, "ckpt_m6_s2_memory")
            # --- process 1: Alice states facts in thread A; the admin states a company note
            first = run_child(CHAT, url=url, user_id="alice", thread_id="alice-A",
                              texts=ALICE_SAYS)
            run_child(CHAT, url=url, user_id="admin", thread_id="admin-1", texts=[NOTE])
            # --- process 2: Alice in a new thread B, no checkpoint shared with A
            second = run_child(CHAT, url=url, user_id="alice", thread_id="alice-B",
                               texts=[ASK_ALICE, ASK_NOTE])
            # --- every other user, each in a thread of their own (this process)
            theirs = {u: chat_turns(url, u, f"{u}-1", [ASK_ALICE, ASK_NOTE])
                      for u in others}
            with open_memory_store(url) as store:
                guarded, unguarded, refusal = attack(store)
    except CheckpointError as exc:
        w.error = " ".join(str(exc).split())
        return w

    asked_b, note_b = second["turns"]
    w.show(f"process 1, alice thread A: {ALICE_SAYS[0]!r} -> {first['turns'][0]['reply']!r}")
    w.show(f"process 2, alice thread B: {ASK_ALICE!r} -> {asked_b['reply']!r} "
           f"(recalled from {sorted(set(asked_b['recalled']))})")
    bob = theirs[others[0]]["turns"]
    w.show(f"{others[0]}: {ASK_ALICE!r} -> {bob[0]['reply']!r}; {ASK_NOTE!r} -> "
           f"{bob[1]['reply']!r}")
    leaked_to_others = sum(ns.startswith("users/alice/") for u in theirs
                           for t in theirs[u]["turns"] for ns in t["recalled"])
    found_note = sum("vpn.acme.example" in theirs[u]["turns"][1]["reply"] for u in theirs)
    found_note += "vpn.acme.example" in note_b["reply"]
    w.metric("thread_b_had_a_checkpoint", second["thread_existed"], "", "== no")
    w.metric("alice_facts_answered_in_thread_b",
             sum(v in asked_b["reply"] for v in ("Lisbon", "teal")), "of 2", "== 2")
    w.metric("company_note_found", found_note, f"of {len(theirs) + 1} users",
             f"== {len(theirs) + 1}")
    w.metric("alice_memories_recalled_by_others", leaked_to_others, "items", "== 0")
    w.metric("alice_facts_answered_to_others",
             sum("Lisbon" in theirs[u]["turns"][0]["reply"] for u in theirs), "users", "== 0")
    for uid in ATTACK_IDS:
        leak = unguarded[uid]
        shown = leak if isinstance(leak, str) else f"{leak} of alice's items + namespaces"
        w.show(f"attack id {uid!r}: unguarded -> {shown}; guarded -> {guarded[uid]}")
    refused = [uid for uid in ATTACK_IDS if guarded[uid] == "refused"]
    w.metric("attack_ids_refused_by_guard", len(refused), f"of {len(ATTACK_IDS)}",
             f">= {len(ATTACK_IDS) - 1}")  # 'ali' is a valid id: it must reach nothing
    w.metric("alice_items_reached_through_guard",
             sum(g for g in guarded.values() if isinstance(g, int)), "items", "== 0")
    w.metric("attack_ids_leaking_unguarded",
             sum(isinstance(n, int) and n > 0 for n in unguarded.values()),
             f"of {len(ATTACK_IDS)}", "> 0")
    w.note(f"The guard refuses in one sentence, e.g.: {refusal}")
    w.note("'ali' is a valid id and another user's prefix: LangGraph matches whole labels, and "
           "the guard searches whole namespaces, so it reaches none of alice's items.")
    return w


def attack(store: BaseStore) -> tuple[dict[str, int | str], dict[str, int | str], str]:
    """Each attack id through the guard ('refused', or how many of Alice's items it got) and
    through the unguarded path scope; plus the guard's sentence for the first refusal."""
    guarded: dict[str, int | str] = {}
    unguarded: dict[str, int | str] = {}
    refusal = ""
    for uid in ATTACK_IDS:
        unguarded[uid] = unguarded_leak(store, uid, "alice", ASK_ALICE)
        try:
            got = recall(store, uid, ASK_ALICE)
            guarded[uid] = sum(m["namespace"].startswith("users/alice/") for m in got)
        except CheckpointError as exc:
            guarded[uid] = "refused"
            refusal = refusal or str(exc)
    return guarded, unguarded, refusal


if __name__ == "__main__":
    raise SystemExit(shared.witness.cli(main))
