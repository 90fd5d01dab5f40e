"""The shipped Prometheus alert rules pass `promtool check rules` and their unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from tests.conftest import IN_CI

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if IN_CI:
            pytest.fail("promtool is missing; .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return path


def test_alert_rules_are_valid() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", "alerts.yml"], cwd=RULES, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_unit_tests_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", "alerts_test.yml"], cwd=RULES, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
