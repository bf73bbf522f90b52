"""The testinfra tests follow the suites' skip policy (tests/skip_policy.py): molecule reports skips (-r fEs), and with
CI=true a skip fails the run unless the test cannot apply on this kind of machine."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[3] / "tests"))
pytest_plugins = ["skip_policy"]
