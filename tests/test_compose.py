"""docker-compose.yml, the cluster recipe, checked for structure (no Docker engine runs here): the
services a lab needs, every image built from this repository, GPU workers that scale, one artifact
store on every node, Ray token auth everywhere, and nothing published beyond 127.0.0.1."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
RAY = ("ray-head", "ray-worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return dict(e.split("=", 1) for e in env) if isinstance(env, list) else {k: str(v) for k, v in env.items()}


def test_services_and_images_built_from_this_repo(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"db", "ray-head", "ray-worker", "ablate", "dashboard"} <= set(services)
    assert services["db"]["image"].startswith("postgres:")
    for name in ("ray-head", "ray-worker", "ablate", "dashboard"):
        build = services[name]["build"]
        assert (REPO / build["context"]).resolve() == REPO, name
        assert (REPO / build["dockerfile"]).is_file(), name
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^COPY ablate ", dockerfile, re.M) and re.search(r"pip install .*-e \.", dockerfile)
    assert "RAY_AUTH_TOKEN_PATH" in dockerfile and not re.search(r"token_hex|auth_token\s*=", dockerfile)


def test_ports_are_bound_to_loopback(compose: dict[str, Any]) -> None:
    published = [(n, p) for n, s in compose["services"].items() for p in s.get("ports", [])]
    assert {n for n, _ in published} >= {"db", "dashboard"}
    for name, port in published:
        text = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
        assert text.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert not compose["services"]["ray-worker"].get("ports"), "a scaled service cannot publish a fixed port"


def test_gpu_workers_scale_and_join_the_head(compose: dict[str, Any]) -> None:
    head, worker = compose["services"]["ray-head"], compose["services"]["ray-worker"]
    port = re.search(r"--port[= ](\d+)", " ".join(head["command"])).group(1)
    cmd = " ".join(worker["command"])
    assert f"--address=ray-head:{port}" in cmd and "--num-gpus" in cmd and "--block" in cmd
    assert "--num-gpus=0" in " ".join(head["command"]), "the head schedules; trials run on the GPU workers"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert "container_name" not in worker, "`--scale ray-worker=N` needs generated container names"
    assert _env(compose["services"]["ablate"])["RAY_ADDRESS"] == f"ray-head:{port}"


def test_token_auth_and_one_artifact_store_on_every_node(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "artifacts" in compose["volumes"] and "pgdata" in compose["volumes"]
    for name in (*RAY, "ablate"):
        s, env = services[name], _env(services[name])
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"].startswith("/run/secrets/"), name
        assert "ray_token" in s["secrets"], name
        mounts = {v.split(":")[0]: v.split(":")[1] for v in s["volumes"]}
        assert mounts.get("artifacts") == env["ABLATE_ARTIFACTS"] == "/artifacts", name
    assert "file" in compose["secrets"]["ray_token"]
    for name in RAY:  # results are written by the driver only: nodes get no database password
        assert "db_password" not in services[name]["secrets"] and "ABLATE_DB" not in _env(services[name])
    for name in ("ablate", "dashboard"):
        entry = " ".join(services[name]["entrypoint"])
        assert "ABLATE_DB=postgresql://" in entry and "@db:5432/" in entry and "db_password" in services[name]["secrets"]
    assert services["db"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password"
    assert "service_healthy" in str(services["ablate"]["depends_on"])
