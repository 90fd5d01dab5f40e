"""Every ``niyanta`` command answers ``--help``, and every listing offers ``--output json``."""

from __future__ import annotations

import pytest
import typer.main
from typer.core import TyperGroup
from typer.testing import CliRunner

from niyanta.cli.main import app

LISTINGS = [
    ["list"],
    ["status"],
    ["events"],
    ["workers"],
    ["cluster"],
    ["types"],
    ["customers", "list"],
    ["customers", "get"],
    ["autoscale", "list"],
    ["autoscale", "get"],
]


def _command_paths() -> list[list[str]]:
    paths: list[list[str]] = []

    def walk(group: TyperGroup, prefix: list[str]) -> None:
        for name, command in group.commands.items():
            paths.append([*prefix, name])
            if isinstance(command, TyperGroup):
                walk(command, [*prefix, name])

    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    walk(root, [])
    return paths


def test_the_brief_commands_all_exist() -> None:
    names = {" ".join(path) for path in _command_paths()}
    expected = {
        "submit", "status", "list", "cancel", "pause", "resume", "events", "workers", "drain",
        "types", "customers create", "customers get", "customers list", "customers set-tier",
        "coordinator", "worker", "dev", "demo", "store migrate",
    }  # fmt: skip
    assert expected <= names


@pytest.mark.parametrize("path", _command_paths(), ids=lambda path: " ".join(path))
def test_help(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert f"niyanta {' '.join(path)}" in result.output


@pytest.mark.parametrize("path", LISTINGS, ids=lambda path: " ".join(path))
def test_listings_offer_json_output(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert "--output" in result.output
    assert "json" in result.output


def test_root_help_lists_the_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("submit", "status", "customers", "NIYANTA_COORDINATOR"):
        assert name in result.output


def test_an_unreachable_coordinator_is_a_clear_error_with_exit_code_1() -> None:
    result = CliRunner().invoke(
        app, ["--coordinator", "http://127.0.0.1:9,http://127.0.0.1:10", "status", "w-1"]
    )
    assert result.exit_code == 1
    assert "coordinator_unreachable" in result.output
    assert "http://127.0.0.1:9" in result.output and "http://127.0.0.1:10" in result.output


def test_a_malformed_coordinator_url_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["--coordinator", "127.0.0.1:8080", "workers"])
    assert result.exit_code == 2
    assert "http://" in result.output
