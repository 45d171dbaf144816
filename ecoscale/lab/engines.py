"""One Docker engine per lab node, each with its own folder, socket, pidfile and namespaces.

The manager's engine runs in the host's network namespace; every other engine enters a
network namespace of its own (``setns``, as ``nsenter --net`` does: ``ip netns exec`` would
remount /sys and dockerd then fails) whose veth pair hangs on the lab's bridge. Every engine
also gets its own UTS namespace so that Swarm shows it under its node name.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import docker

from ecoscale.lab.cgroups import create_engine_group, node_group
from ecoscale.lab.config import LabConfig, NodeSpec, hostname
from ecoscale.lab.slot_runtime import wrapper_text
from ecoscale.lab.system import (
    NETNS_DIR,
    LabError,
    delete_link,
    delete_netns,
    link_exists,
    pid_alive,
    pid_cmdline,
    read_pid,
    run,
)

CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PEER_NAME = "eth0"
SLOT_RUNTIME = "ecoscale-slots"
"""The runtime every lab engine runs its containers with (``slot_runtime``)."""
API_VERSION = "1.41"
"""Docker Engine API of Debian's docker.io 20.10; newer engines still speak it."""


@dataclass(frozen=True)
class EnginePaths:
    """Where one engine keeps everything (all below the lab's state folder)."""

    root: Path

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / "dockerd.pid"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def exec_root(self) -> Path:
        return self.root / "exec"

    @property
    def daemon_json(self) -> Path:
        return self.root / "daemon.json"

    @property
    def key(self) -> Path:
        return self.root / "key.json"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"


def engine_paths(config: LabConfig, node: NodeSpec) -> EnginePaths:
    return EnginePaths(config.state_dir / "nodes" / node.name)


def client(docker_host: str, timeout_s: float = 60.0) -> docker.DockerClient:
    return docker.DockerClient(base_url=docker_host, version=API_VERSION, timeout=int(timeout_s))


# ---------------------------------------------------------------------- network
def create_network(config: LabConfig, nodes: tuple[NodeSpec, ...]) -> None:
    """The lab's bridge (holding the manager's address) and a netns + veth per other node."""
    namespaced = [n for n in nodes if n.netns]
    if not namespaced:
        return
    manager = nodes[0]
    bridge = config.bridge
    if not link_exists(bridge):
        run(["ip", "link", "add", bridge, "type", "bridge"])
    run(["ip", "addr", "replace", f"{manager.address}/{config.prefix_len}", "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])
    for node in namespaced:
        assert node.netns and node.link
        if not (NETNS_DIR / node.netns).exists():
            run(["ip", "netns", "add", node.netns])
        if not link_exists(node.link):
            run(["ip", "link", "add", node.link, "type", "veth", "peer", "name", PEER_NAME,
                 "netns", node.netns])
        run(["ip", "link", "set", node.link, "master", bridge, "up"])
        run(["ip", "-n", node.netns, "addr", "replace",
             f"{node.address}/{config.prefix_len}", "dev", PEER_NAME])
        run(["ip", "-n", node.netns, "link", "set", PEER_NAME, "up"])
        run(["ip", "-n", node.netns, "link", "set", "lo", "up"])


def delete_network(config: LabConfig) -> None:
    """Delete every netns and link with the lab's prefix (by name; safe after a crash)."""
    prefix = f"{config.prefix}-"
    for name in sorted(p.name for p in NETNS_DIR.glob(prefix + "*")):
        delete_netns(name)
    for path in sorted(Path("/sys/class/net").glob(prefix + "*")):
        if path.name != config.bridge:
            delete_link(path.name)
    delete_link(config.bridge)


# ---------------------------------------------------------------------- engines
def _preexec(netns: str | None, hostname: str, cgroup_procs: list[Path]):
    """Runs in the child before exec: the lab's engine cgroups (tracking and CPU weight),
    own session, own UTS namespace, the node's netns."""
    libc = ctypes.CDLL(None, use_errno=True)
    name = hostname.encode()
    netns_path = str(NETNS_DIR / netns) if netns else None
    procs = [str(p) for p in cgroup_procs]

    def enter() -> None:
        for path in procs:   # before exec: every descendant inherits them
            with open(path, "w") as group:
                group.write(str(os.getpid()))
        os.setsid()
        if libc.unshare(CLONE_NEWUTS) != 0 or libc.sethostname(name, len(name)) != 0:
            raise OSError(ctypes.get_errno(), "unshare/sethostname failed")
        if netns_path:
            fd = os.open(netns_path, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns_path} failed")
            finally:
                os.close(fd)

    return enter


def engine_args(config: LabConfig, node: NodeSpec) -> list[str]:
    paths = engine_paths(config, node)
    return [
        "dockerd",
        "--config-file", str(paths.daemon_json),
        "--data-root", str(paths.data_root),
        "--exec-root", str(paths.exec_root),
        "--host", paths.docker_host,
        "--pidfile", str(paths.pidfile),
        "--storage-driver", "vfs",            # no overlayfs on these machines
        "--exec-opt", "native.cgroupdriver=cgroupfs",
        "--cgroup-parent", node_group(config.cgroup_name, node.name),
        "--iptables=false", "--ip-masq=false", "--ip-forward=false",  # leave the host alone
        "--bridge", "none",                   # no docker0: several engines share a namespace
        "--label", f"ecoscale.node={node.name}",
        "--label", f"ecoscale.generation={node.generation}",
    ]


def write_slot_runtime(config: LabConfig) -> Path:
    """The runtime executable of the lab's engines, under the state folder (``slot_runtime``:
    runc with the lab's CFS period on CPU limits)."""
    runc = shutil.which("runc", path=f"{os.environ.get('PATH', '')}:{SYSTEM_PATH}")
    if runc is None:
        raise LabError("runc is not installed (it comes with docker.io / runc); "
                       "`apt-get install runc`")
    path = config.state_dir / "slot-runtime"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(wrapper_text(sys.executable, runc, config.slot_period_us))
    path.chmod(0o755)
    return path


def start_engine(config: LabConfig, node: NodeSpec) -> int:
    """Start the node's dockerd in the background; returns its pid (ready later)."""
    paths = engine_paths(config, node)
    paths.root.mkdir(parents=True, exist_ok=True)
    # The trust key would otherwise land in /etc/docker/key.json (a file left on the host).
    settings: dict[str, object] = {
        "log-level": "warn", "deprecated-key-path": str(paths.key),
        "runtimes": {SLOT_RUNTIME: {"path": str(write_slot_runtime(config))}},
        "default-runtime": SLOT_RUNTIME}
    paths.daemon_json.write_text(json.dumps(settings) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "NOTIFY_"))}
    env["PATH"] = f"{env.get('PATH', '')}:{SYSTEM_PATH}".strip(":")
    # No registry is reachable: start Swarm tasks from the local image without trying a pull.
    env["DOCKER_SERVICE_PREFER_OFFLINE_IMAGE"] = "1"
    with open(paths.log, "ab") as log:
        process = subprocess.Popen(
            engine_args(config, node), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, close_fds=True, env=env,
            preexec_fn=_preexec(node.netns, hostname(node.name),
                                create_engine_group(config.cgroup_name, node.name,
                                                    config.engine_cpu_shares)))
    return process.pid


def engine_pid(config: LabConfig, node: NodeSpec) -> int | None:
    """The node's dockerd pid from its pidfile, if that process is alive and is ours."""
    paths = engine_paths(config, node)
    pid = read_pid(paths.pidfile)
    if pid is None or not pid_alive(pid):
        return None
    return pid if str(paths.pidfile) in pid_cmdline(pid) else None


def engine_log_tail(config: LabConfig, node: NodeSpec, lines: int = 15) -> str:
    try:
        text = engine_paths(config, node).log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


DAEMON_FLAGS = ("--config-file", "--config", "--pidfile", "--data-root", "--exec-root",
                "--host", "-H", "-address", "--address")
"""Flags with which dockerd, containerd and containerd shims name their folders and sockets."""


def processes_of(state_dir: Path) -> list[int]:
    """Live dockerd/containerd/shim processes of the lab, by their flags into its folder.

    A process counts when one of the daemons' flags (``--pidfile``, ``--config``,
    ``-address``, ...) points below the lab's state folder: what the lab started, found by its
    unique folder, never by program name; a shell or editor that merely names a file there is
    not one of them. (Engines and their descendants are also tracked by cgroup.)
    """
    marker = str(state_dir).rstrip("/") + "/"
    found = []
    own = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        args = pid_cmdline(int(entry.name))
        if _names_our_folder(args, marker) and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def _names_our_folder(args: list[str], marker: str) -> bool:
    for index, arg in enumerate(args):
        flag, equals, value = arg.partition("=")
        if flag not in DAEMON_FLAGS:
            continue
        value = value if equals else (args[index + 1] if index + 1 < len(args) else "")
        if value.removeprefix("unix://").startswith(marker):
            return True
    return False


def raise_engine_failed(config: LabConfig, node: NodeSpec, why: str) -> None:
    raise LabError(f"engine of node {node.name} {why}; last lines of "
                   f"{engine_paths(config, node).log}:\n{engine_log_tail(config, node)}")
