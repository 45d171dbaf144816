"""Where commands write: `--out` checked before any work, and atomic writes.

Every command that writes files checks its destination with :func:`check_out_file` (one file:
a policy table, a profile, a CSV) or :func:`check_out_dir` (a folder of outputs: replay,
lab evaluate) before it computes anything, so that a run of minutes never ends on "cannot
write". Files are written with :func:`atomic_write_text` or :func:`atomic_path` (a temporary
file in the same folder, renamed over the target) and a folder of outputs with
:func:`write_dir`, so that a failure leaves neither a half-written file nor a temporary one,
and a folder never mixes the outputs of two runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ecoscale.errors import UsageError

TEMP_PREFIX = ".ecoscale-"
"""Temporary files and folders start with this (and are removed on failure)."""


def _nearest_existing(path: Path) -> Path:
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _probe_writable(folder: Path, flag: str, shown: Path) -> None:
    """Create and remove a temporary file in ``folder``; UsageError naming ``flag`` if not."""
    try:
        handle, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".probe", dir=folder)
    except OSError as exc:
        raise UsageError(f"{flag} {shown}: cannot write in {folder} ({exc.strerror}); choose "
                         "a folder you can write to") from None
    os.close(handle)
    os.unlink(name)


def check_out_file(path: Path, flag: str = "--out") -> list[str]:
    """Check that ``path`` can be written as a regular file, before any work.

    Refuses a folder, a device or other special file (``/dev/null``), a parent that is a file
    and a place that cannot be written, each as a UsageError naming ``flag`` and the fix.
    Returns notes for the user (e.g. that an existing file will be replaced).
    """
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder, and a file is wanted; give a file "
                         f"name, e.g. {path / 'out.yaml'}")
    if path.exists() or path.is_symlink():
        mode = path.stat().st_mode if path.exists() else 0
        if not stat.S_ISREG(mode):
            raise UsageError(f"{flag} {path}: is not a regular file (a device, a pipe or a "
                             "broken link); give the path of a file to write")
    ancestor = _nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise UsageError(f"{flag} {path}: {ancestor} is a file, not a folder; choose another "
                         "place")
    _probe_writable(ancestor, flag, path)
    return [f"{flag} {path}: replaces the existing file"] if path.exists() else []


@dataclass(frozen=True)
class OutDir:
    """A checked output folder: which known files of an earlier run it already holds."""

    path: Path
    replaced: tuple[str, ...] = ()
    """Known output names present now that this run writes again."""
    removed: tuple[str, ...] = ()
    """Known output names present now that this run will not write: removed before writing,
    so that the folder never mixes two runs."""
    known: tuple[str, ...] = field(default=(), repr=False)

    def notes(self) -> list[str]:
        notes = []
        if self.replaced:
            notes.append(f"{self.path}/ holds an earlier run's outputs; replaced: "
                         + ", ".join(self.replaced))
        if self.removed:
            notes.append(f"{self.path}/: removed from the earlier run (this run does not "
                         "write them): " + ", ".join(self.removed))
        return notes


def check_out_dir(path: Path, known: Iterable[str], expected: Iterable[str],
                  flag: str = "--out") -> OutDir:
    """Check that ``path`` can be the output folder, before any work.

    ``known``: every file name the command may write there; ``expected``: those this run
    will write. Refuses an existing file or a place that cannot be written (UsageError).
    """
    known = tuple(known)
    expected = set(expected)
    if path.exists() and not path.is_dir():
        what = "a file" if path.is_file() else "not a folder (a device or a pipe)"
        raise UsageError(f"{flag} {path}: is {what}, and a folder is wanted; give a folder "
                         "name (it is created)")
    ancestor = _nearest_existing(path)
    if not ancestor.is_dir():
        raise UsageError(f"{flag} {path}: {ancestor} is a file, not a folder; choose another "
                         "place")
    _probe_writable(ancestor, flag, path)
    present = [name for name in known if (path / name).is_file()] if path.is_dir() else []
    return OutDir(path=path,
                  replaced=tuple(n for n in present if n in expected),
                  removed=tuple(n for n in present if n not in expected),
                  known=known)


def write_dir(out: OutDir, write: Callable[[Path], list[Path]]) -> list[Path]:
    """Run ``write(folder)`` into a temporary folder beside ``out.path``, then move what it
    wrote into ``out.path`` and remove the earlier run's known files it did not rewrite.

    On failure nothing of this run is left behind (the temporary folder is removed) and the
    earlier run's files stay as they were. Returns the final paths.
    """
    target = out.path
    parent = target.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{target.name}-", dir=parent))
    try:
        written = write(staging)
        target.mkdir(parents=True, exist_ok=True)
        names = [Path(p).name for p in written]
        for name in out.known:
            if name not in names and (target / name).is_file():
                (target / name).unlink()
        final = []
        for name in names:
            os.replace(staging / name, target / name)
            final.append(target / name)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` if the block
    succeeds, removed if it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}-", suffix=".tmp",
                                    dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        if path.exists():
            with contextlib.suppress(OSError):
                os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        else:
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()
"""The process's umask, read once at import (reading it means setting it for a moment, which
must not happen while other threads create files)."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; no temporary file is left on failure."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def git_tracked(path: Path) -> bool:
    """True if ``path`` is a file tracked by the git work tree that holds it (False when git
    or the work tree is missing)."""
    if not path.is_file():
        return False
    try:
        done = subprocess.run(["git", "ls-files", "--error-unmatch", path.name],
                              cwd=path.absolute().parent, capture_output=True, timeout=10,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def beside(path: Path, tag: str) -> Path:
    """``profiles/x/lab.yaml`` -> ``profiles/x/lab.<tag>.yaml``: where to write instead of
    over a tracked file."""
    return path.with_name(f"{path.stem}.{tag}{path.suffix}")
