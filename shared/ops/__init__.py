"""Operations on checkpoint data: prune, migrate, verify, metrics."""
