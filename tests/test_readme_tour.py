"""The README's five-minute tour works as written after `make demo`.

`make demo` takes minutes on SmolLM2, so a tiny loop stands in for it: the same loop name (demo-cpu), its store
and checkpoints in `.demo/` of a scratch directory by $SELFLOOP_STATE_DIR, as `make demo` leaves them. Then every
line of the tour runs there, in bash, exactly as the README gives it (`source .venv/bin/activate` is this
interpreter's environment; `selfloop ui` is started, fetched once and stopped).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def tour_lines() -> list[str]:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- tour:start -->\n```bash\n(.*?)```\n<!-- tour:end -->", readme, re.S)
    assert block, "the README's tour block (between the tour markers) is missing"
    return [re.split(r"\s{2,}#", line)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_is_short_and_links_only_to_files_that_exist() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= 15 * 1024, "the README is a five-minute read: keep it at most 15 KB, the rest in docs/"
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if not target.startswith("http"):
            assert (REPO / target).exists(), f"README links to {target}, which does not exist"
    for page in (REPO / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_the_tour_runs_as_written_on_the_demos_store(tmp_path: Path) -> None:
    import yaml

    config = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    config["loop"]["name"] = "demo-cpu"  # as configs/demo-cpu.yaml: no state_dir, no database in the file
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(config))
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "SELFLOOP_STATE_DIR": str(tmp_path / ".demo")}
    env.pop("SELFLOOP_DB", None)
    made = subprocess.run(["selfloop", "run", "--config", "demo.yaml"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-2000:]
    env.pop("SELFLOOP_STATE_DIR")  # the tour sets it itself

    lines = tour_lines()
    assert lines[0] == "source .venv/bin/activate" and any(line.startswith("export SELFLOOP_STATE_DIR") for line in lines)
    exports = [line for line in lines if line.startswith("export ")]
    ui = [line for line in lines if line.startswith("selfloop ui")]
    script = "\n".join(line for line in lines[1:] if line not in ui)
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
    assert "demo-cpu" in out.stdout and "loop demo-lr forked from demo-cpu iteration 1" in out.stdout
    assert "loop demo-lr: ran 1 iteration(s)" in out.stdout
    assert (tmp_path / ".demo" / "examples.jsonl").stat().st_size > 0
    assert (tmp_path / ".demo" / "report" / "index.html").is_file()

    assert len(ui) == 1
    server = subprocess.Popen(["bash", "-c", "\n".join([*exports, "exec " + ui[0]])], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = httpx.get("http://127.0.0.1:8765/", timeout=2)
                break
            except httpx.HTTPError:
                assert server.poll() is None and time.monotonic() < deadline, server.communicate()[1][-2000:]
                time.sleep(0.3)
        assert page.status_code == 200 and "demo-lr" in page.text and "demo-cpu" in page.text
    finally:
        server.terminate()
        server.wait(timeout=30)
