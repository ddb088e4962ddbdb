"""Payloads for the lessons: seeded random bytes, incompressible and the same on every run."""

from __future__ import annotations

import random


def random_bytes(size: int, seed: int = 0, header: bytes = b"") -> bytes:
    """``header`` followed by seeded random bytes, ``size`` bytes in all."""
    return header + random.Random(seed).randbytes(max(0, size - len(header)))


def fake_pdf(size: int, seed: int = 22) -> bytes:
    """Seeded random bytes behind a PDF header."""
    return random_bytes(size, seed, b"%PDF-1.7\n")


__all__ = ["fake_pdf", "random_bytes"]
