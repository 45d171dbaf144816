"""The lab fixtures of tests/integration, for the live-evaluation test kept out of CI."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "integration_conftest", Path(__file__).parents[1] / "integration" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_integration = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_integration)

host_before = _integration.host_before
lab = _integration.lab
social_network = _integration.social_network
pytest_terminal_summary = _integration.pytest_terminal_summary
