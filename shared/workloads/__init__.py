"""What only the lessons need: demo data, traffic and load generators, kill drills.

Nothing here is a production part; the production parts live in ``shared.savers`` and
``shared.ops`` and never import this package.

- ``demo``: a SQLite checkpoint source from real graph runs (chat, a paused approval, a
  failed step, a subgraph), for the migration lessons.
- ``chat_days``: backdated chat conversations written as the chat graph writes them, for
  the retention lessons.
- ``bulk``: many tagged checkpoints written in one transaction, for measurements at scale.
- ``sqlite_writers``: several processes writing one SQLite file (writes/s, p99, lock errors).
- ``postgres_writers``: the same against PostgreSQL, and chat workers serving one thread.
- ``paced``: checkpoint traffic paced to a rate, with its own clock, for decision timing.
- ``drills``: ``ckpt migrate`` in a child process, SIGKILLed mid-transaction.
"""
