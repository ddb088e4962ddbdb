"""Milestone 7: production mastery (a Redis hot tier over PostgreSQL, and what it costs)."""
