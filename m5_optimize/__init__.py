"""Milestone 5: PostgreSQL at scale (pooling, indexes, the 5 ms p99 budget, retention)."""
