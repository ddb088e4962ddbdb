"""Milestone 6: the Store (cross-thread memory, per-user isolation, checkpoints under 10 KB)."""
