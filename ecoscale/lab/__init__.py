"""The one-machine lab: a real multi-node Docker Swarm with emulated old and new nodes.

    from ecoscale.lab import Lab, LabConfig
    lab = Lab(LabConfig())
    lab.up(); lab.deploy("socialNetwork"); ...; lab.down()

``Lab`` is imported lazily so that the ``ecoscale`` command starts without docker-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ecoscale.lab.config import GenerationSpec, LabConfig, NodeSpec

if TYPE_CHECKING:
    from ecoscale.lab.lab import Lab

__all__ = ["GenerationSpec", "Lab", "LabConfig", "NodeSpec"]


def __getattr__(name: str) -> Any:
    if name == "Lab":
        from ecoscale.lab.lab import Lab

        return Lab
    raise AttributeError(f"module 'ecoscale.lab' has no attribute {name!r}")
