"""Milestone 6: the Store (memory across threads, search by meaning, per-user isolation)."""
