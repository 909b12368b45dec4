"""The docs' lab tables and goals are generated from the labs' results lines (`selfloop lab report --update`), never
typed: every generated block of docs/results.md and the README equals what the lines give now, and every checked-in
lab has its block in docs/results.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from selfloop.lab.report import MARKER, STYLES, compare, generated_block
from selfloop.lab.run import Lab
from tests.conftest import REPO

LABS = sorted((REPO / "labs").glob("*.yaml"))
DOCS = [REPO / "docs" / "results.md", REPO / "README.md"]


def blocks(path: Path, name: str) -> dict[str, str]:
    text = path.read_text(encoding="utf-8")
    found = {}
    for style in STYLES:
        start, end = MARKER.format(name=name, style=style, end="start"), MARKER.format(name=name, style=style, end="end")
        m = re.search(re.escape(start) + r"\n(.*?)" + re.escape(end), text, re.S)
        if m:
            found[style] = m.group(1)
    return found


@pytest.mark.parametrize("lab_file", LABS, ids=[p.name for p in LABS])
def test_every_generated_block_is_what_the_lines_give(lab_file: Path) -> None:
    lab = Lab(lab_file)
    result = compare(lab.lines(), **lab.spec.roles(), guards=lab.guards())
    relative = lab_file.relative_to(REPO)
    assert blocks(REPO / "docs" / "results.md", lab.spec.name).get("full"), f"docs/results.md has no block of {lab.spec.name}"
    for path in DOCS:
        command = f"selfloop lab report {relative} --update {path.relative_to(REPO)}"
        for style, body in blocks(path, lab.spec.name).items():
            expected = generated_block(lab.spec.name, style, result, lab.lines(), command)
            assert body == expected, (f"{path.name}: lab {lab.spec.name}'s {style} block differs from its results lines; "
                                      f"run `{command}`")


def test_update_rewrites_a_block_and_refuses_a_file_without_one(tmp_path: Path, run_cli) -> None:
    import shutil

    for name in ("methods.yaml",):
        shutil.copy(REPO / "labs" / name, tmp_path / name)
    (tmp_path / "results").mkdir()
    shutil.copy(REPO / "labs" / "results" / "methods-arithmetic.jsonl", tmp_path / "results")
    doc = tmp_path / "doc.md"
    doc.write_text("before\n<!-- lab-report:methods-arithmetic:full:start -->\nhand-typed +99.9\n"
                   "<!-- lab-report:methods-arithmetic:full:end -->\nafter\n")
    code, _, err = run_cli("lab", "report", str(tmp_path / "methods.yaml"), "--update", str(doc))
    assert code == 0, err
    text = doc.read_text()
    assert "+99.9" not in text and text.startswith("before\n") and text.endswith("after\n")
    assert "Goals, marked on the validation split (val)" in text
    (tmp_path / "other.md").write_text("no markers\n")
    code, _, err = run_cli("lab", "report", str(tmp_path / "methods.yaml"), "--update", str(tmp_path / "other.md"))
    assert code == 1 and "no block of lab methods-arithmetic" in err


def test_a_lab_with_no_lines_yet_writes_blocks_that_say_so(tmp_path: Path, run_cli) -> None:
    import shutil

    shutil.copy(REPO / "labs" / "methods.yaml", tmp_path / "methods.yaml")  # its results file is not there
    doc = tmp_path / "doc.md"
    doc.write_text("".join(f"<!-- lab-report:methods-arithmetic:{style}:start -->\nold\n"
                           f"<!-- lab-report:methods-arithmetic:{style}:end -->\n" for style in STYLES))
    code, out, err = run_cli("lab", "report", str(tmp_path / "methods.yaml"), "--update", str(doc))
    assert code == 0, err
    assert "no finished control arm yet" in out
    text = doc.read_text()
    assert "old" not in text and text.count("0 results lines from 0 commit(s)") == 2
    assert "No finished control arm yet, nothing to compare." in text
