"""The lab's configuration: which nodes of which generation, and how each is emulated.

Every node is a Docker engine on this machine. The first node of the first generation is the
Swarm manager and stays in the host's network namespace (its published ports are reachable on
127.0.0.1); every other node runs in a network namespace of its own, attached to a private
bridge. How a generation older than the host is emulated: see ``GenerationSpec``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ecoscale.errors import InputError
from ecoscale.lab.slot_runtime import MIN_QUOTA_US
from ecoscale.values import BadNumber, number

DEFAULT_STATE_DIR = "/var/tmp/ecoscale-lab"
STATE_DIR_ENV = "ECOSCALE_LAB_DIR"
MAX_STATE_DIR_CHARS = 48
"""containerd's socket lives 40 characters below the state dir; unix sockets allow 107."""
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*$")
MAX_LINK_CHARS = 15
SLOT_CPUS = 0.05
"""The slot of ``lab up --slot-cpus`` (one replica's CPU budget on both generations, host
CPUs): the 26 services of socialNetwork at one replica each reserve 1.3 of this machine's 2
CPUs, leaving ``LabConfig.kept_cpus`` for dockerd, Prometheus and the load generator; old
runs its CPU work at half speed in the same budget (``cpu_factor``), so an old slot serves
half the load of a new one, and equal budgets keep a move from changing a task's limit."""


def _ok(value: object, **bounds: Any) -> bool:
    """Whether ``value`` is a number within ``bounds`` (values.number: no NaN, no bools)."""
    try:
        number(value, "value", **bounds)
    except BadNumber:
        return False
    return True


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


@dataclass(frozen=True)
class GenerationSpec:
    """A server generation of the lab and how its nodes are made to behave like it.

    A replica is a slot: with ``slot_cpus`` set, every task of a managed service runs with a
    Swarm CPU limit and reservation of ``slot_cpus`` host CPUs (``NanoCPUs``; the lab's
    container runtime gives that limit a CFS period of ``LabConfig.slot_period_us`` instead
    of Docker's 100 ms, so a small slot runs as a slower core, not as 5 ms on and 95 ms
    off). Replicas of one service then add capacity on every generation, and services on one
    node do not queue behind each other as long as the slots fit the machine
    (``LabConfig.slot_budget``).

    Two knobs, as older hardware differs in two ways:

    - ``cpu_factor`` (per-core speed): an emulated service whose task runs on a node of this
      generation burns ``cpu_ms / cpu_factor`` of CPU time per request instead of ``cpu_ms``
      (the emulator learns its node from Swarm's ``{{.Node.Hostname}}``). Every request is
      slower at any load and costs more CPU-seconds, as on an older CPU; time spent waiting
      (I/O) is unchanged.
    - ``node_cpus`` (capacity): a CFS quota of ``node_cpus`` host CPUs on the cgroup that
      holds all the node's containers (dockerd ``--cgroup-parent``), so that the services
      placed on one node contend for its few cores and queue, as on a smaller server.
    """

    name: str
    nodes: int = 1
    cpu_factor: float = 1.0
    """Speed of one of the node's CPUs relative to a host CPU (1.0: as fast as the host)."""
    node_cpus: float | None = None
    """CPU capacity of one node, in host CPUs (None: not limited)."""
    slot_cpus: float | None = None
    """CPU limit and reservation of every task of a managed service on this generation, in
    host CPUs (None: tasks without a limit)."""

    def quota_us(self, period_us: int) -> int | None:
        """CFS quota (us per ``period_us``) of one node, or None when it is not limited."""
        if self.node_cpus is None:
            return None
        return max(MIN_QUOTA_US, int(round(self.node_cpus * period_us)))


@dataclass(frozen=True)
class NodeSpec:
    """One emulated server: a Docker engine with its own state folder and cgroups."""

    name: str
    generation: str
    manager: bool
    address: str
    """Its address on the lab's private subnet (the manager's is on the host's bridge)."""
    netns: str | None
    """Network namespace name, None for the manager (host namespace)."""
    link: str | None
    """Host end of its veth pair, None for the manager."""


def hostname(node: str) -> str:
    """The host name a node's engine runs under (what Swarm shows and templates)."""
    return f"ecoscale-{node}"


def _default_generations() -> tuple[GenerationSpec, ...]:
    return (GenerationSpec("new", nodes=1),
            GenerationSpec("old", nodes=1, cpu_factor=0.5, node_cpus=1.0))


@dataclass(frozen=True)
class LabConfig:
    """Everything ``Lab`` needs; validated on construction (all problems at once)."""

    state_dir: Path = field(default_factory=default_state_dir)
    """Engines' data, sockets, pidfiles, logs and the lab's state file live here."""
    generations: tuple[GenerationSpec, ...] = field(default_factory=_default_generations)
    """The first generation holds the manager; services are deployed onto it at first."""
    cpu_period_us: int = 10_000
    """CFS period of the quota (us): short, so that throttling shows as slowdown spread over
    requests instead of one long stall per 100 ms."""
    slot_period_us: int = 20_000
    """CFS period of a task's slot limit (us; the lab's runtime sets it): short, so that a
    slot of 0.05 CPU runs 1 ms of every 20 ms (the kernel's minimum quota), not 5 of 100."""
    kept_cpus: float = 0.5
    """Host CPUs kept out of the slot budget for dockerd, containerd, Prometheus, the
    gateway and the load generator (at the lab's loads they use 0.1-0.2 CPU)."""
    subnet: str = "10.213.0.0/24"
    """Private subnet between the engines; exists only inside this machine."""
    overlay_pool: str = "10.214.0.0/16"
    """Swarm's default address pool for overlay networks (/24 each)."""
    network: str = "ecoscale"
    """Overlay network that every lab service joins."""
    stack_network: str = "ecoscale-stacks"
    """Overlay network for stacks deployed with `docker stack deploy` (an external network of
    their compose file): Prometheus and the stack's entry point are on it, the lab's own app
    is not, so a stack's services may carry the same names as the lab's."""
    emulator_port: int = 8080
    gateway_port: int = 18080
    """Host port of the app's entry point (``Lab.frontend_url``)."""
    prometheus_port: int = 19090
    """Host port of Prometheus (``Lab.prometheus_url``)."""
    stack_gateway_port: int = 18081
    """Host port of a served stack's entry point (``Lab.serve_stack``)."""
    scrape_interval_s: float = 2.0
    prefix: str = "eslab"
    """Prefix of network namespaces and links (kept short: link names stop at 15 chars)."""
    cgroup_name: str = "ecoscale-lab"
    """Top cgroup of the lab in every cgroup v1 hierarchy."""
    engine_cpu_shares: int = 64
    """CPU weight (cgroup v1 ``cpu.shares``) of each node's engine with everything it spawns
    (containerd, shims, runc), against 1024 for each node's containers: a move's task start
    then takes the CPU the app leaves, as on a real server, where it runs on a core no slot
    holds. Measured with `ecoscale lab moves` (front end at 60 req/s, 6 moves): p99 during a
    move 51-61 ms (one outlier 273 ms) with 64, 59-115 ms (one 217 ms) at the default 1024,
    steady 33-57 ms."""
    install_packages: bool = True
    """Install missing Debian packages (docker.io, prometheus, iproute2) on ``up``."""
    timeout_s: float = 300.0
    """Deadline of each readiness wait (generous: CI machines are busy)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        object.__setattr__(self, "generations", tuple(self.generations))
        problems = self.problems()
        if problems:
            raise InputError("lab config", problems)

    @classmethod
    def with_nodes(cls, new: int = 1, old: int = 1, old_cpu_factor: float = 0.5,
                   old_node_cpus: float | None = 1.0,
                   slot_cpus: float | None = None,
                   **overrides: object) -> LabConfig:
        """The usual two generations with the given node counts, old-node slowdown, slots
        (None: no per-task limit) and optional node-wide quota of the old nodes."""
        generations = (GenerationSpec("new", nodes=new, slot_cpus=slot_cpus),
                       GenerationSpec("old", nodes=old, cpu_factor=old_cpu_factor,
                                      node_cpus=old_node_cpus, slot_cpus=slot_cpus))
        return cls(generations=generations, **overrides)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "lab state") -> LabConfig:
        """The config saved by ``Lab.up`` (``dataclasses.asdict`` form) back as a LabConfig."""
        try:
            values = dict(data)
            values["generations"] = tuple(GenerationSpec(**g) for g in values["generations"])
            values["state_dir"] = Path(values["state_dir"])
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(source, f"cannot read the saved lab configuration: {exc}; "
                                     "run `ecoscale lab down` and `ecoscale lab up` again") from exc

    def replace(self, **changes: object) -> LabConfig:
        return replace(self, **changes)  # type: ignore[arg-type]

    def problems(self) -> list[str]:
        """Every problem of this configuration, each with how to fix it."""
        problems: list[str] = []
        if not self.state_dir.is_absolute():
            problems.append(f"state_dir {self.state_dir} must be an absolute path")
        if len(str(self.state_dir)) > MAX_STATE_DIR_CHARS:
            problems.append(f"state_dir {self.state_dir} is longer than {MAX_STATE_DIR_CHARS} "
                            "characters: containerd's socket path below it would be too long "
                            f"for a unix socket; set {STATE_DIR_ENV} to a shorter folder")
        if not self.generations:
            problems.append("generations is empty; give at least one, e.g. 'new'")
        names = [g.name for g in self.generations]
        for duplicate in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"generation '{duplicate}' appears twice; names must be unique")
        for gen in self.generations:
            where = f"generation '{gen.name}'"
            if not NAME_PATTERN.match(gen.name):
                problems.append(f"{where}: name must be lower-case letters and digits, "
                                "starting with a letter")
            if not _ok(gen.nodes, integer=True, minimum=0, maximum=64):
                problems.append(f"{where}: nodes must be a whole number in 0..64, got "
                                f"{gen.nodes!r}")
            elif len(f"{self.prefix}-{gen.name}-{gen.nodes}") > MAX_LINK_CHARS:
                problems.append(f"{where}: link name {self.prefix}-{gen.name}-{gen.nodes} is "
                                f"longer than {MAX_LINK_CHARS} characters; shorten the name "
                                "or the prefix")
            if not _ok(gen.cpu_factor, minimum=0.05, maximum=1.0):
                problems.append(f"{where}: cpu_factor must lie in 0.05..1 (a fraction of a "
                                f"host CPU's speed), got {gen.cpu_factor!r}")
            if gen.node_cpus is not None and not _ok(gen.node_cpus, above=0, maximum=4096):
                problems.append(f"{where}: node_cpus must be > 0 or None, got {gen.node_cpus!r}")
            elif gen.node_cpus is not None and (
                    gen.node_cpus * self.cpu_period_us < MIN_QUOTA_US):
                problems.append(f"{where}: a quota of {gen.node_cpus:g} CPUs per "
                                f"{self.cpu_period_us} us period is below the kernel's 1 ms "
                                "minimum; raise cpu_period_us or node_cpus")
            if gen.slot_cpus is not None and not _ok(gen.slot_cpus, above=0, maximum=64):
                problems.append(f"{where}: slot_cpus must be > 0 or None, got "
                                f"{gen.slot_cpus!r}")
            elif gen.slot_cpus is not None and (
                    gen.slot_cpus * self.slot_period_us < MIN_QUOTA_US):
                problems.append(f"{where}: a slot of {gen.slot_cpus:g} CPUs per "
                                f"{self.slot_period_us} us period is below the kernel's 1 ms "
                                "minimum quota; raise slot_period_us or slot_cpus")
        if self.generations and self.generations[0].nodes < 1:
            problems.append(f"the first generation '{self.generations[0].name}' holds the "
                            "manager: it needs nodes >= 1")
        if not _ok(self.cpu_period_us, integer=True, minimum=1000, maximum=1_000_000):
            problems.append(f"cpu_period_us must lie in 1000..1000000, got {self.cpu_period_us}")
        if not _ok(self.slot_period_us, integer=True, minimum=1000, maximum=1_000_000):
            problems.append(f"slot_period_us must lie in 1000..1000000, got "
                            f"{self.slot_period_us}")
        if not _ok(self.kept_cpus, minimum=0, maximum=4096):
            problems.append(f"kept_cpus must be >= 0 (host CPUs), got {self.kept_cpus!r}")
        subnet: ipaddress.IPv4Network | None = None
        try:
            subnet = ipaddress.IPv4Network(self.subnet)
            if subnet.num_addresses < self.node_count() + 3:
                problems.append(f"subnet {self.subnet} is too small for {self.node_count()} "
                                "nodes")
            if not subnet.is_private:
                problems.append(f"subnet {self.subnet} must be private (e.g. 10.213.0.0/24)")
        except ValueError:
            problems.append(f"subnet {self.subnet!r} is not an IPv4 network like 10.213.0.0/24")
        try:
            pool = ipaddress.IPv4Network(self.overlay_pool)
            if pool.prefixlen > 24:
                problems.append(f"overlay_pool {self.overlay_pool} must be /24 or larger")
            if subnet is not None and pool.overlaps(subnet):
                problems.append(f"overlay_pool {self.overlay_pool} overlaps subnet "
                                f"{self.subnet}; choose disjoint ranges")
        except ValueError:
            problems.append(f"overlay_pool {self.overlay_pool!r} is not a network like "
                            "10.214.0.0/16")
        ports = {"emulator_port": self.emulator_port, "gateway_port": self.gateway_port,
                 "prometheus_port": self.prometheus_port,
                 "stack_gateway_port": self.stack_gateway_port}
        for key, port in ports.items():
            if not _ok(port, integer=True, minimum=1024, maximum=65535):
                problems.append(f"{key} must be an integer in 1024..65535, got {port!r}")
        host_ports = (self.gateway_port, self.prometheus_port, self.stack_gateway_port)
        if len(set(host_ports)) != len(host_ports):
            problems.append("gateway_port, prometheus_port and stack_gateway_port must differ")
        if not _ok(self.scrape_interval_s, minimum=0.5, maximum=60):
            problems.append(f"scrape_interval_s must lie in 0.5..60, got "
                            f"{self.scrape_interval_s}")
        if not re.match(r"^[a-z][a-z0-9]{0,7}$", self.prefix):
            problems.append(f"prefix {self.prefix!r} must be 1-8 lower-case letters/digits")
        if not _ok(self.engine_cpu_shares, integer=True, minimum=2, maximum=262144):
            problems.append(f"engine_cpu_shares must be an integer in 2..262144 (cgroup v1 "
                            f"cpu.shares), got {self.engine_cpu_shares!r}")
        if not re.match(r"^[a-z][a-z0-9-]*$", self.cgroup_name):
            problems.append(f"cgroup_name {self.cgroup_name!r} must be lower-case letters, "
                            "digits and dashes")
        for key, network in (("network", self.network), ("stack_network", self.stack_network)):
            if not re.match(r"^[a-z][a-z0-9-]*$", network):
                problems.append(f"{key} {network!r} must be lower-case letters, digits and "
                                "dashes")
        if self.network == self.stack_network:
            problems.append("network and stack_network must differ (a stack's services may "
                            "carry the names of the lab's own app)")
        if not _ok(self.timeout_s, minimum=10, maximum=86_400):
            problems.append(f"timeout_s must be >= 10 s, got {self.timeout_s}")
        return problems

    # ------------------------------------------------------------------ derived
    def node_count(self) -> int:
        return sum(max(0, g.nodes) for g in self.generations)

    @property
    def manager_generation(self) -> str:
        return self.generations[0].name

    @property
    def bridge(self) -> str:
        """The host bridge that links the namespaced engines to the manager."""
        return f"{self.prefix}-br"

    def nodes(self) -> tuple[NodeSpec, ...]:
        """Every node, the manager first; addresses .1 (manager), .2, .3, ... of the subnet."""
        hosts = ipaddress.ip_network(self.subnet).hosts()
        result = []
        for gen in self.generations:
            for index in range(1, gen.nodes + 1):
                name = f"{gen.name}-{index}"
                manager = not result
                namespaced = None if manager else f"{self.prefix}-{name}"
                result.append(NodeSpec(name=name, generation=gen.name, manager=manager,
                                       address=str(next(hosts)), netns=namespaced,
                                       link=namespaced))
        return tuple(result)

    def generation(self, name: str) -> GenerationSpec:
        for gen in self.generations:
            if gen.name == name:
                return gen
        known = ", ".join(g.name for g in self.generations)
        raise InputError("lab config", f"no generation '{name}'; known: {known}")

    @property
    def prefix_len(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def node_speeds(self) -> dict[str, float]:
        """Swarm hostname of every node -> its generation's per-core speed (``cpu_factor``)."""
        return {hostname(node.name): self.generation(node.generation).cpu_factor
                for node in self.nodes()}

    def emulation(self, host_cpus: int) -> dict[str, dict[str, object]]:
        """How each generation is emulated (knobs and factors), for status and every report.

        ``cpus_per_node``: host CPUs a node of the generation may use; ``cpus_per_replica``:
        what one emulated replica can use at most (one event loop: one CPU).
        """
        result: dict[str, dict[str, object]] = {}
        for gen in self.generations:
            quota = gen.quota_us(self.cpu_period_us)
            speed = ("runs emulated CPU work at host speed" if gen.cpu_factor >= 1.0 else
                     f"per-core speed {gen.cpu_factor:g} x host: emulated services burn "
                     f"cpu_ms / {gen.cpu_factor:g} of CPU per request (emulator, by node)")
            capacity = ("no CPU limit (shares the host's "
                        f"{host_cpus} CPUs)" if quota is None else
                        f"CFS quota {quota} us per {self.cpu_period_us} us = "
                        f"{quota / self.cpu_period_us:g} host CPU(s) for all its services "
                        "(cgroup v1 cpu.cfs_quota_us on dockerd --cgroup-parent)")
            if gen.slot_cpus is not None:
                capacity = (f"slots of {gen.slot_cpus:g} host CPU per task (Swarm CPU limit "
                            f"and reservation, CFS period {self.slot_period_us} us); "
                            + ("no node-wide limit" if quota is None else capacity))
            result[gen.name] = {"nodes": gen.nodes, "cpu_factor": gen.cpu_factor,
                                "node_cpus": gen.node_cpus, "slot_cpus": gen.slot_cpus,
                                "cpus_per_node": gen.node_cpus or float(host_cpus),
                                "cpus_per_replica": gen.slot_cpus or 1.0,
                                "cfs_quota_us": quota,
                                "cfs_period_us": self.cpu_period_us if quota else None,
                                "slot_period_us": (self.slot_period_us if gen.slot_cpus
                                                   else None),
                                "slot_budget_cpus": self.slot_budget(host_cpus, {}).budget_cpus,
                                "speed": speed, "capacity": capacity}
        return result

    def slot_cpus(self) -> dict[str, float]:
        """Generation -> CPU limit of one task there (host CPUs), for the slotted ones."""
        return {g.name: g.slot_cpus for g in self.generations if g.slot_cpus is not None}

    def slot_budget(self, host_cpus: float, replicas: Mapping[str, tuple[str, int]]
                    ) -> SlotBudget:
        """The slot budget with ``replicas`` (service -> (generation, replicas)) in use."""
        slots = self.slot_cpus()
        in_use: dict[str, tuple[int, float]] = {}
        for generation, count in replicas.values():
            if generation in slots:
                held, cpus = in_use.get(generation, (0, 0.0))
                in_use[generation] = (held + count, cpus + count * slots[generation])
        return SlotBudget(float(host_cpus), self.kept_cpus, in_use)


@dataclass(frozen=True)
class SlotBudget:
    """Slots in use against the host's cores (pure figures, host CPUs)."""

    host_cpus: float
    kept_cpus: float
    """Kept for dockerd, Prometheus, the gateway and the load generator."""
    in_use: Mapping[str, tuple[int, float]]
    """Generation -> (slots, their CPUs)."""

    @property
    def budget_cpus(self) -> float:
        """Host CPUs that the slots may take (``kept_cpus`` off)."""
        return max(0.0, self.host_cpus - self.kept_cpus)

    @property
    def used_cpus(self) -> float:
        return sum(cpus for _slots, cpus in self.in_use.values())

    @property
    def slots(self) -> int:
        return sum(slots for slots, _cpus in self.in_use.values())

    @property
    def overcommitted(self) -> bool:
        return self.used_cpus > self.budget_cpus + 1e-9

    def text(self) -> str:
        """'27 slots = 1.35 of 1.5 CPUs (new 20 x 0.05, old 7 x 0.05; 2 host CPUs, 0.5
        kept for dockerd, Prometheus, the gateway and the load generator)'."""
        parts = ", ".join(f"{g} {n} x {cpus / n:g}" for g, (n, cpus) in self.in_use.items()
                          if n)
        return (f"{self.slots} slots = {self.used_cpus:.2f} of {self.budget_cpus:g} CPUs ("
                + (f"{parts}; " if parts else "")
                + f"{self.host_cpus:g} host CPUs, {self.kept_cpus:g} kept for dockerd, "
                "Prometheus, the gateway and the load generator)")
