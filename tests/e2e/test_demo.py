"""``make demo`` = ``niyanta demo``, run as a user runs it: from the repository root."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from tests.processes import REPO

pytestmark = pytest.mark.slow


@pytest.mark.timeout(180)
def test_demo_finishes_with_a_resume_from_checkpoint_and_a_summary_per_customer() -> None:
    env = {**os.environ, "COLUMNS": "120"}
    result = subprocess.run(
        [sys.executable, "-m", "niyanta", "demo", "--timeout", "100"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    killed = re.search(r"SIGKILL (worker-\d) .* \(last checkpoint seen: seq (\d+)\)", output)
    resumed = re.search(
        r"resumed .* on (worker-\d) from checkpoint seq (\d+) \(it was on (worker-\d)", output
    )
    assert killed and resumed, output
    assert resumed[1] != killed[1] == resumed[3]
    # It resumed from everything committed before the kill: nothing the API saw is redone.
    assert int(resumed[2]) >= int(killed[2]) > 0

    rows = {
        match[1]: (match[2], int(match[3]), int(match[4]))
        for match in re.finditer(r"^\s*(acme|globex|initech)\s+(\w+)\s+(\d+)\s+(\d+)", output, re.M)
    }
    assert rows == {
        "acme": ("platinum", 4, 0),
        "globex": ("gold", 4, 0),
        "initech": ("bronze", 3, 1),  # demo-permanent fails on purpose
    }
    assert re.search(r"demo finished in \d+\.\d s", output)
