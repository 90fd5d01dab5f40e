"""How the CLI renders API data for people and for scripts."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from niyanta.cli.output import (
    format_age,
    format_labels,
    format_time,
    print_json,
    progress_cell,
    text,
)
from niyanta.cli.workloads import workload_progress


def _render(renderable: object, width: int = 60) -> str:
    console = Console(width=width, force_terminal=False, color_system=None)
    with console.capture() as capture:
        console.print(renderable)
    return capture.get()


def test_progress_is_a_bar_on_a_terminal_and_a_percentage_elsewhere() -> None:
    assert _render(progress_cell(0.42, terminal=False)).strip() == "42%"
    bar = _render(progress_cell(0.5, terminal=True))
    assert "50%" in bar
    assert "━" in bar
    assert _render(progress_cell(None, terminal=False)).strip() == "0%"
    assert _render(progress_cell(1.7, terminal=False)).strip() == "100%"


@pytest.mark.parametrize(
    ("ago", "expected"), [(4, "4s"), (192, "3m12s"), (7500, "2h05m"), (-3, "0s")]
)
def test_age(ago: float, expected: str) -> None:
    assert format_age(1_000_000.0 - ago, now=1_000_000.0) == expected


def test_absent_values_show_as_a_dash() -> None:
    assert format_age(None) == "-"
    assert format_time(None) == "-"
    assert format_labels({}) == "-"
    assert text(None) == "-"
    assert text("") == "-"


def test_time_is_utc() -> None:
    assert format_time(0.5) == "1970-01-01 00:00:00"
    assert format_time(86_400 + 3_661) == "1970-01-02 01:01:01"


def test_labels_and_containers_are_compact_and_stable() -> None:
    assert format_labels({"zone": "a", "gpu": "true"}) == "gpu=true,zone=a"
    assert text({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert text(3) == "3"


def test_json_output_is_the_data_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    data = [{"id": "w-1", "state": "running", "params": {"limit": 10}}]
    print_json(data)
    assert json.loads(capsys.readouterr().out) == data


def test_workload_progress_is_the_mean_of_its_replicas() -> None:
    workload = {
        "state": "running",
        "replicas": [
            {"state": "succeeded", "progress": 0.0},
            {"state": "running", "progress": 0.5},
        ],
    }
    assert workload_progress(workload) == 0.75
    assert workload_progress({"state": "succeeded"}) == 1.0
    assert workload_progress({"state": "pending"}) == 0.0
