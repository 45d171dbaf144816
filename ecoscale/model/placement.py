"""Placement: for each service, the generation its replicas run on and how many replicas."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class ServicePlacement:
    generation: str
    replicas: int = 1

    def __str__(self) -> str:
        return f"{self.replicas}x{self.generation}"


@dataclass(frozen=True, eq=False)
class Placement:
    """An immutable, hashable service -> ServicePlacement mapping (in topology order)."""

    items: tuple[tuple[str, ServicePlacement], ...]
    _index: dict[str, ServicePlacement] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )
    _hash: int = field(init=False, repr=False, compare=False, hash=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", dict(self.items))
        object.__setattr__(self, "_hash", hash(self.items))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Placement):
            return NotImplemented
        return self._hash == other._hash and self.items == other.items

    @classmethod
    def of(cls, mapping: Mapping[str, ServicePlacement]) -> Placement:
        return cls(tuple(mapping.items()))

    @classmethod
    def uniform(cls, services: Iterable[str], generation: str, replicas: int = 1) -> Placement:
        return cls(tuple((s, ServicePlacement(generation, replicas)) for s in services))

    def __getitem__(self, service: str) -> ServicePlacement:
        return self._index[service]

    def get(self, service: str) -> ServicePlacement | None:
        return self._index.get(service)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def as_dict(self) -> dict[str, ServicePlacement]:
        return dict(self._index)

    def with_service(self, service: str, placed: ServicePlacement) -> Placement:
        """A copy with ``service`` placed as ``placed``."""
        return Placement(tuple((n, placed if n == service else p) for n, p in self.items))

    def slots(self) -> dict[str, int]:
        """Replicas (slots) in use per generation."""
        out: dict[str, int] = {}
        for _, placed in self.items:
            out[placed.generation] = out.get(placed.generation, 0) + placed.replicas
        return out

    def changes(self, other: Placement) -> list[tuple[str, ServicePlacement, ServicePlacement]]:
        """(service, from, to) for every service placed differently in ``other``."""
        if self == other:
            return []
        theirs = other._index
        return [(n, p, theirs[n]) for n, p in self.items if n in theirs and theirs[n] != p]

    def describe(self) -> str:
        """Compact text, e.g. 'new: 3 services/4 slots; old: 23 services/25 slots'."""
        services: dict[str, int] = {}
        for _, placed in self.items:
            services[placed.generation] = services.get(placed.generation, 0) + 1
        slots = self.slots()
        return "; ".join(
            f"{g}: {services[g]} services/{slots[g]} slots" for g in sorted(services)
        )
