"""docs/extending.md's examples are complete and run as written (the user trial: `select()`'s body was elided and
the imports never shown, so writing a plug-in needed the test fixtures). Every `# file: NAME.py` block of the page
becomes a module of a package in a temporary directory, every ```toml entry-point block its entry points, and a
tiny loop trains with the page's algorithm on the page's task family, curated by the page's filter, from a fresh
interpreter."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import REPO, selfloop_cli, tiny_yaml

PAGE = REPO / "docs" / "extending.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", PAGE.read_text(), flags=re.S)


def install(target: Path) -> dict[str, str]:
    """The page's modules and entry points as an installed distribution; the environment that finds it."""
    target.mkdir()
    files = {}
    for block in blocks("python"):
        first = block.splitlines()[0]
        if first.startswith("# file: "):
            files[first.removeprefix("# file: ").strip()] = block
    points: dict[str, list[str]] = {}
    for block in blocks("toml"):
        group = None
        for line in block.splitlines():
            m = re.fullmatch(r'\[project\.entry-points\."([^"]+)"\]', line.strip())
            if m:
                group = m.group(1)
            elif group and "=" in line:
                name, value = (part.strip().strip('"') for part in line.split("=", 1))
                points.setdefault(group, []).append(f"{name} = {value}")
    for name, body in files.items():
        (target / name).write_text(body)
    info = target / "docs_example-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: docs-example\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("".join(f"[{g}]\n" + "\n".join(p) + "\n\n" for g, p in points.items()))
    return {"PYTHONPATH": f"{target}:{REPO}"}


def test_the_page_names_whole_files() -> None:
    named = [b.splitlines()[0] for b in blocks("python") if b.startswith("# file: ")]
    assert named == ["# file: toy_sft_config.py", "# file: toy_sft.py", "# file: reverse_word.py",
                     "# file: shortest_config.py", "# file: shortest.py"]
    for block in blocks("python"):
        if block.startswith("# file: "):
            assert "..." not in block, "an example with an elided body does not run"
            compile(block, "<docs>", "exec")


@pytest.mark.integration
def test_the_pages_algorithm_trains_on_the_pages_family(tmp_path: Path) -> None:
    env = install(tmp_path / "site")
    url = f"sqlite:///{tmp_path / 'docs.db'}"
    config = tiny_yaml(tmp_path, url, loop__max_iterations=1, train__algorithm="toy_sft",
                       train__toy_sft={"per_prompt": 2}, judge__signals=["vote", "confidence"],
                       curate__filters=["shortest"], curate__shortest={"keep": 3},
                       generation__tasks={"kind": "reverse_word"},
                       eval__suites=[{"name": "reverse", "kind": "reverse_word", "size": 4, "max_new_tokens": 8}],
                       eval__main_metric="reverse/greedy_accuracy")
    ran = selfloop_cli("run", "--config", str(config), env=env, fresh=True)
    assert ran.returncode == 0, ran.stderr[-3000:]
    engine = create_engine(url)
    with engine.connect() as conn:
        algorithms = conn.execute(text("SELECT DISTINCT algorithm FROM examples")).scalars().all()
        families = conn.execute(text("SELECT DISTINCT family FROM prompts WHERE source = 'task'")).scalars().all()
        steps = conn.execute(text("SELECT count(*) FROM train_steps")).scalar()
        suites = conn.execute(text("SELECT DISTINCT suite FROM evals")).scalars().all()
        kept = conn.execute(text("SELECT count(*) FROM curations WHERE filter = 'shortest' AND kept")).scalar()
        trained = conn.execute(text("SELECT count(DISTINCT prompt_id) FROM examples")).scalar()
    engine.dispose()
    assert algorithms == ["toy_sft"] and families == ["reverse_word"] and steps > 0 and suites == ["reverse"]
    assert kept == 3 and 0 < trained <= 3  # the page's filter chose what the page's algorithm trained on
