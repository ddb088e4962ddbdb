"""``make bench``: the long measurements, kept out of ``make all``, with charts.

- ``writes``: SQLite and PostgreSQL, writes/s and p99 latency by number of writer processes;
- ``filters``: ``SqliteSaver.list(filter=...)`` latency by table size, with and without the
  expression indexes of ``shared/savers/sqlite_filters.py``.

``python -m shared.benchmarks`` runs them and writes ``reports/bench.json`` and PNG charts
(``report``). Milestone 5 adds its own measurements here.
"""
