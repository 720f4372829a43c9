"""The deployment files agree with the code: every command the compose file runs exists and
parses, every setting they name is a real one, and the worker service can be scaled."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from hashsvc.cli import main
from hashsvc.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {f"HASHSVC_{f.name.upper()}" for f in dataclasses.fields(Settings)}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The parsed docker-compose.yml."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def hashsvc_commands(compose: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(service, arguments) of every service whose command runs hashsvc."""
    out = []
    for name, service in compose["services"].items():
        command = service.get("command")
        if isinstance(command, str):
            command = command.split()
        if command and command[0] == "hashsvc":
            out.append((name, [str(a) for a in command[1:]]))
    return out


def parse_command(args: list[str]) -> click.Command:
    """The click command that ``hashsvc ARGS`` runs, its options parsed (errors raise)."""
    command: click.Command = main
    parent = click.Context(main, info_name="hashsvc")
    while isinstance(command, click.Group):
        name, args = args[0], args[1:]
        sub = command.get_command(parent, name)
        assert sub is not None, f"no command {name!r}"
        command = sub
        if isinstance(command, click.Group):
            parent = click.Context(command, info_name=name, parent=parent)
    command.make_context(command.name, list(args), parent=parent)
    return command


def test_services_are_all_there(compose: dict[str, Any]) -> None:
    assert {"api", "worker", "redis", "postgres", "minio", "migrate"} <= set(compose["services"])


def test_every_hashsvc_command_exists_and_parses(compose: dict[str, Any]) -> None:
    commands = hashsvc_commands(compose)
    assert {name for name, _ in commands} == {"api", "worker", "migrate"}
    for _, args in commands:
        parse_command(args)
    by_service = dict(commands)
    assert by_service["migrate"] == ["db", "upgrade"]
    assert by_service["worker"][0] == "worker"
    assert by_service["api"][:3] == ["serve", "--bind", "0.0.0.0:8000"]


def test_worker_scales(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_servers_have_health_checks_and_api_waits_for_them(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "minio", "api"):
        assert services[name]["healthcheck"]["test"], name
    api = services["api"]["depends_on"]
    assert api["migrate"]["condition"] == "service_completed_successfully"
    assert api["postgres"]["condition"] == api["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "--appendonly" in services["redis"]["command"]  # queued jobs survive a restart


def test_named_settings_exist(compose: dict[str, Any]) -> None:
    named = {key for service in compose["services"].values()
             for key in (service.get("environment") or {}) if key.startswith("HASHSVC_")}
    for example in sorted((ROOT / "config").glob("*.env.example")):
        named |= set(re.findall(r"^(HASHSVC_[A-Z0-9_]+)=", example.read_text(), re.M))
    assert named and named <= SETTINGS, sorted(named - SETTINGS)


def test_dockerfile_installs_every_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for folder in ("config", "hashsvc", "workers"):
        assert f"COPY {folder} {folder}" in text
    assert "pip wheel" in text and "pip install" in text
