"""Where ecoscale finds its shipped data (profiles/, traces/, deploy/).

The data lives beside the package in the project checkout (an editable install). Set
ECOSCALE_HOME to a checkout to use another copy.
"""

from __future__ import annotations

import os
from pathlib import Path

from ecoscale.errors import EcoscaleError


def project_root() -> Path:
    """The folder that holds profiles/ and traces/."""
    override = os.environ.get("ECOSCALE_HOME")
    root = Path(override) if override else Path(__file__).resolve().parent.parent
    if not (root / "profiles").is_dir() or not (root / "traces").is_dir():
        raise EcoscaleError(
            f"shipped data not found under {root} (profiles/ and traces/); install ecoscale "
            "from its checkout with `pip install -e .`, or set ECOSCALE_HOME to the checkout"
        )
    return root


def profiles_dir() -> Path:
    return project_root() / "profiles"


def traces_dir() -> Path:
    return project_root() / "traces"


def deploy_dir() -> Path:
    return project_root() / "deploy"


def shown(path: Path | str) -> str:
    """A path as reports print it: relative to the project for shipped files, else as given."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(project_root().resolve()))
    except ValueError:
        return str(path)
