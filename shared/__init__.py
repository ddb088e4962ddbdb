"""The one library every milestone imports: witnesses, the offline model, graphs, savers."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository root: default data lives in ROOT/.data, reports in ROOT/reports."""
