"""Per-loss test files import the shared helpers of ``tests/`` (``registry_cases``) as
top-level modules, like the generic suites do."""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
