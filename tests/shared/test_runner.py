"""shared/runner.py (`make mN`, `make all`): on a milestone of its own making, in a temp ROOT,
so that nothing of the repository's README or reports is touched."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import ROOT, runner

OK = '''"""9.1 A lesson that passes."""
from shared.witness import Witness


def main(workdir=None):
    w = Witness("9.1", "passes")
    w.metric("answer", 42, "", "== 42")
    w.show("the answer is 42")
    return w
'''
FAILS = '''"""9.2 A lesson whose target is missed."""
from shared.witness import Witness


def main(workdir=None):
    w = Witness("9.2", "misses")
    w.metric("answer", 41, "", "== 42")
    return w
'''
CRASHES = '''"""9.3 A lesson that crashes."""


def main(workdir=None):
    raise ValueError("boom")
'''
README = ("# t\n\nbefore\n\n<!-- witness-table:start -->\nold table\n"
          "<!-- witness-table:end -->\n\nafter\n")


@pytest.fixture
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A ROOT holding milestone m9 (s1 passes, s2 misses its target, s3 crashes) and m8."""
    for name, lessons in {"m9_fake": {"s1_ok": OK, "s2_fails": FAILS, "s3_crashes": CRASHES},
                          "m8_fake": {"s1_ok": OK.replace("9.1", "8.1")}}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
        (tmp_path / name / "helpers.py").write_text("")  # not a lesson: no s<N>_ prefix
        for stem, text in lessons.items():
            (tmp_path / name / f"{stem}.py").write_text(text)
    (tmp_path / "m7_no_package").mkdir()  # no __init__.py: not a milestone
    (tmp_path / "README.md").write_text(README)
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    monkeypatch.setattr(runner, "REPORTS", tmp_path / "reports")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith(("m8_fake", "m9_fake"))]:
        del sys.modules[name]


def test_finds_the_repository_milestones_in_order() -> None:
    found = runner.milestones()
    assert list(found)[:4] == ["m1", "m2", "m3", "m4"]
    assert found["m1"] == ROOT / "m1_foundation"
    assert runner.scripts(found["m1"])[0] == "m1_foundation.s1_sqlite_setup"


def test_milestones_and_scripts_of_a_root(fake_root: Path) -> None:
    assert runner.milestones() == {"m8": fake_root / "m8_fake", "m9": fake_root / "m9_fake"}
    assert runner.scripts(fake_root / "m9_fake") == ["m9_fake.s1_ok", "m9_fake.s2_fails",
                                                     "m9_fake.s3_crashes"]


def test_a_crash_becomes_a_failed_witness(fake_root: Path) -> None:
    w = runner.run_script("m9_fake.s3_crashes")
    assert not w.passed and w.error == "ValueError: boom"
    assert "ValueError" in w.notes[0]  # the traceback, for the reader
    missing = runner.run_script("m9_fake.s9_missing")
    assert missing.error is not None and missing.error.startswith("ModuleNotFoundError")


def test_one_milestone_fails_when_a_witness_fails(fake_root: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.main(["m9"]) == 1
    out = capsys.readouterr().out
    assert "failed: m9_fake.s2_fails, m9_fake.s3_crashes" in " ".join(out.split())
    rows = json.loads((fake_root / "reports" / "m9_fake.json").read_text())
    assert [(r["task"], r["passed"]) for r in rows] == [("9.1", True), ("9.2", False),
                                                         ("s3_crashes", False)]
    assert rows[0]["metrics"][0] == {"name": "answer", "value": 42, "unit": "", "target": "== 42",
                                     "met": True}
    assert not (fake_root / "reports" / "witnesses.json").exists()  # only `all` writes it
    assert (fake_root / "README.md").read_text() == README


def test_all_writes_the_reports_and_refreshes_the_readme(
        fake_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (fake_root / "m9_fake" / "s2_fails.py").unlink()
    (fake_root / "m9_fake" / "s3_crashes.py").unlink()
    assert runner.main(["all", "--readme"]) == 0
    report = json.loads((fake_root / "reports" / "witnesses.json").read_text())
    assert list(report["milestones"]) == ["m8_fake", "m9_fake"]
    assert "2 witnesses" in report["measured"]
    md = (fake_root / "reports" / "witnesses.md").read_text()
    assert "| 9.1 passes | `answer` | 42 | == 42 | ✅ |" in md
    readme = (fake_root / "README.md").read_text()
    assert "old table" not in readme and "| 8.1 passes | `answer` | 42 | == 42 | ✅ |" in readme
    assert readme.startswith("# t\n\nbefore\n") and readme.endswith("\n\nafter\n")


def test_markdown_shows_an_error_row(fake_root: Path) -> None:
    w = runner.run_script("m9_fake.s3_crashes")
    md = runner.markdown({"m9_fake": [{**w.to_dict(), "module": "m9_fake.s3_crashes",
                                       "seconds": 0.0}]})
    assert "| s3_crashes | error | ValueError: boom | | ❌ |" in md


def test_a_readme_without_markers_is_refused(fake_root: Path) -> None:
    (fake_root / "README.md").write_text("# no table here\n")
    with pytest.raises(SystemExit, match="lacks the <!-- witness-table:start -->"):
        runner.update_readme("| table |", "stamp")
    assert (fake_root / "README.md").read_text() == "# no table here\n"


def test_unknown_milestone_is_a_usage_error(fake_root: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        runner.main(["m5"])
    assert exit_.value.code == 2
    assert "no milestone m5: choose from m8, m9" in capsys.readouterr().err
    assert not (fake_root / "reports").exists()
