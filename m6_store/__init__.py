"""Milestone 6: the Store (cross-thread memory, search by meaning, per-user isolation)."""
