"""The lab's one image: the emulator package on an empty base, copied to every engine."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterable
from pathlib import Path

import docker
import docker.errors

from ecoscale.lab.system import LabError
from ecoscale.paths import deploy_dir

REPOSITORY = "ecoscale-lab/emulator"
CODE_DIR = "/opt/ecoscale"
"""Where the emulator package lives in the image (on PYTHONPATH)."""
HOST_RUNTIME = ("/usr", "/lib", "/lib64")
"""Host folders bind-mounted read-only into every lab container: the interpreter and libc."""


def emulator_sources() -> list[Path]:
    package = Path(__file__).resolve().parent.parent / "emulator"
    return sorted(package.glob("*.py"))


def dockerfile() -> bytes:
    return (deploy_dir() / "lab" / "emulator.Dockerfile").read_bytes()


def build_context() -> tuple[bytes, str]:
    """The build context as a tar and the content hash that tags the image."""
    files: dict[str, bytes] = {"Dockerfile": dockerfile(),
                               f"rootfs{CODE_DIR}/ecoscale/__init__.py":
                                   b'"""ecoscale inside a lab container: the emulator only."""\n'}
    for source in emulator_sources():
        files[f"rootfs{CODE_DIR}/ecoscale/emulator/{source.name}"] = source.read_bytes()
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
    tag = digest.hexdigest()[:12]
    files["rootfs/etc/ecoscale-image"] = f"{REPOSITORY}:{tag}\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(files[name]))
    return buffer.getvalue(), tag


def image_name() -> str:
    return f"{REPOSITORY}:{build_context()[1]}"


def host_runtime_dirs() -> list[str]:
    return [p for p in HOST_RUNTIME if Path(p).exists()]


def ensure_image(manager: docker.DockerClient, others: Iterable[docker.DockerClient]) -> str:
    """Build the image on the manager if missing and load it into every other engine."""
    context, tag = build_context()
    name = f"{REPOSITORY}:{tag}"
    try:
        manager.images.get(name)
    except docker.errors.ImageNotFound:
        try:
            manager.images.build(fileobj=io.BytesIO(context), custom_context=True, tag=name,
                                 rm=True, forcerm=True)
        except (docker.errors.BuildError, docker.errors.APIError) as exc:
            raise LabError(f"building {name} failed: {exc}") from exc
    archive: bytes | None = None
    for engine in others:
        try:
            engine.images.get(name)
            continue
        except docker.errors.ImageNotFound:
            pass
        if archive is None:
            archive = b"".join(manager.images.get(name).save(named=True))
        engine.images.load(archive)
    return name
