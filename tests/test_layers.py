"""The layers of DESIGN.md as CI enforces them (import-linter contracts in pyproject.toml): the tree
keeps every contract, and a scratch copy with one forbidden import breaks the contract that names
it. Also what import-linter cannot see: app.py (a single-file script) imports only Streamlit and
views, and the packaging's dev extra pins what requirements-dev.txt pins."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pages", "views", "loupe", "worker", "explainers", "model_registry", "data", "manifest", "store")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the tree at ``root`` (its pyproject.toml, its packages only)."""
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(root), "HOME": str(root)})


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A copy of the packages and pyproject.toml (code only: no weights, caches or tests)."""
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "weights"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract() -> None:
    out = _lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 6 kept, 0 broken." in out.stdout


BREAKS = [
    # (file, import added at its top, the contract that must break, the import it must name)
    ("explainers/base.py", "import worker.batch", "Layers: pages > views", "explainers.base -> worker.batch"),
    ("store/keys.py", "import manifest", "Layers: pages > views", "store.keys -> manifest"),
    ("data/base.py", "import model_registry.base", "Layers: pages > views", "data.base -> model_registry.base"),
    ("views/compare.py", "import explainers.samp", "Views import the loupe API", "views.compare -> explainers.samp"),
    ("views/runs.py", "import store.runs", "Views import the loupe API", "views.runs -> store.runs"),
    ("pages/home.py", "import worker.batch", "Pages import views, the loupe API", "pages.home -> worker.batch"),
    ("worker/jobs.py", "import explainers._common", "Private modules", "worker.jobs -> explainers._common"),
    ("store/files.py", "import store.runs", "No two modules or packages import each other", ".files -> .runs"),
    ("pages/rules.py", "import pages.home", "Pages never import each other", "pages.rules -> pages.home"),
]


@pytest.mark.parametrize(("path", "line", "contract", "named"), BREAKS, ids=[b[0] + ":" + b[1] for b in BREAKS])
def test_one_forbidden_import_breaks_its_contract(scratch: Path, path: str, line: str, contract: str,
                                                  named: str) -> None:
    before = _lint_imports(scratch)
    assert before.returncode == 0, before.stdout + before.stderr  # the copy itself is clean
    target = scratch / path
    target.write_text(f"{line}  # the forbidden import\n" + target.read_text())
    out = _lint_imports(scratch)
    assert out.returncode == 1, out.stdout + out.stderr
    report = " ".join(out.stdout.split())  # the report wraps long contract names
    assert "Contracts: 5 kept, 1 broken." in report, out.stdout
    broken = report.split("Broken contracts")[1]
    assert contract in broken and named in broken, out.stdout


def test_app_py_imports_only_streamlit_and_views() -> None:
    tree = ast.parse((ROOT / "app.py").read_text())
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert modules and all(m == "streamlit" or m.startswith("views.") for m in modules), modules


def test_the_dev_extra_pins_what_requirements_dev_pins() -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    pins = [line.strip() for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-r"))]
    assert sorted(extra) == sorted(pins) and len(pins) == 9
