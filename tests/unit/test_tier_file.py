"""The tier configuration file: TOML and JSON hold the same tiers, validated like the API, and a
bad file stops the coordinator command before anything starts, naming the file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from niyanta.cli.main import app
from niyanta.cli.serve import coordinator_settings
from niyanta.coordinator.tier_file import load_tier_file, parse_tiers
from niyanta.errors import InvalidInput
from niyanta.model import SloTargets, Tier

TOML = """
[tiers.platinum]
priority = 400
weight = 8
guaranteed_slots = 4
guaranteed_cpu = 2.5
guaranteed_memory_mb = 4096
may_preempt = true
slo = { queue_wait_p95_s = 2.0, error_rate = 0.01 }

[tiers.bronze]
priority = 100
concurrency_cap = 20
"""

EXPECTED = [
    Tier(
        "platinum",
        400,
        weight=8.0,
        guaranteed_slots=4,
        guaranteed_cpu=2.5,
        guaranteed_memory_mb=4096,
        may_preempt=True,
        slo=SloTargets(queue_wait_p95_s=2.0, error_rate=0.01),
    ),
    Tier("bronze", 100, concurrency_cap=20),
]


def test_toml_and_json_files_give_the_same_tiers(tmp_path: Path) -> None:
    as_toml = tmp_path / "tiers.toml"
    as_toml.write_text(TOML)
    as_json = tmp_path / "tiers.json"
    as_json.write_text(
        json.dumps(
            {
                "tiers": {
                    "platinum": {
                        "priority": 400,
                        "weight": 8,
                        "guaranteed_slots": 4,
                        "guaranteed_cpu": 2.5,
                        "guaranteed_memory_mb": 4096,
                        "may_preempt": True,
                        "slo": {"queue_wait_p95_s": 2.0, "error_rate": 0.01},
                    },
                    "bronze": {"priority": 100, "concurrency_cap": 20},
                }
            }
        )
    )
    assert load_tier_file(as_toml) == EXPECTED
    assert load_tier_file(as_json) == EXPECTED


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ("[tiers.gold]\npriority = 1\nweight = -1\n", ".toml", r"tiers\.gold\.weight: "),
        ("[tiers.gold]\nweight = 2\n", ".toml", r"tiers\.gold\.priority: Field required"),
        ("[tiers.gold]\npriority = 1\nguaranteed_cpu = -1\n", ".toml", r"gold\.guaranteed_cpu: "),
        ("[tiers.gold]\npriority = 1\nguaranteed_cpu = nan\n", ".toml", r"gold\.guaranteed_cpu: "),
        (
            "[tiers.gold]\npriority = 1\nguaranteed_memory_mb = 0.5\n",
            ".toml",
            r"gold\.guaranteed_memory_mb: ",
        ),
        ("[tiers.gold]\npriority = 1\ncolour = 'red'\n", ".toml", r"tiers\.gold\.colour"),
        ('[tiers."a b"]\npriority = 1\n', ".toml", "tier name 'a b'"),
        ("[tiers.gold]\npriority = 1\nslo = { error_rate = 2 }\n", ".toml", "slo.error_rate"),
        ("[customers.acme]\ntier = 'gold'\n", ".toml", "exactly one table, 'tiers'"),
        ("tiers = 3\n", ".toml", "must map tier names"),
        ("[tiers.gold\n", ".toml", "not valid TOML"),
        ('{"tiers": ', ".json", "not valid JSON"),
        ("tiers: {}", ".yaml", "use a .toml or .json file"),
    ],
)
def test_bad_files_name_the_problem(text: str, suffix: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_tiers(text, suffix)


def test_a_missing_file_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="No such file"):
        load_tier_file(tmp_path / "absent.toml")


def test_the_coordinator_command_checks_the_file_before_starting(tmp_path: Path) -> None:
    bad = tmp_path / "tiers.toml"
    bad.write_text("[tiers.gold]\nweight = 2\n")
    result = CliRunner().invoke(app, ["coordinator", "--tiers", str(bad)])
    assert result.exit_code == 2
    assert "priority" in result.output
    good = tmp_path / "good.toml"
    good.write_text(TOML)
    settings = coordinator_settings(
        store="sqlite:///x.db", broker="builtin", listen="127.0.0.1:1", tiers_file=str(good)
    )
    assert settings.tiers_file == str(good)
