"""Atomic file writes, and the paths a user gives for outputs.

Atomic writes: a reader sees the old file or the new one, never half of one, and a write that
fails leaves nothing behind (no temporary file, no directory it created).

User-given output paths (``--out DIR``, ``--json FILE``): :func:`probe_directory` and
:func:`probe_file` check up front that a path can be written, the way it will be written (a new
entry in the nearest existing directory, a byte written and synced), and leave nothing behind.
:func:`user_output` wraps the writing of an entry point's outputs: the probe first, then every
``OSError`` below the path becomes a :class:`UserPathError` (one line naming the flag, the path and
the reason, e.g. ``--out /mnt/ro/run: cannot create it (read-only file system): choose a writable
directory``) after what the call created is removed again. The error boundary
(:func:`crossover_sgd.console.report_errors`) prints it as one line, exit code 2.

This module is at the bottom of the layers (it imports nothing of ``crossover_sgd``): a
``UserPathError`` is an ``OSError``, and its flag may be a ``{field}`` placeholder that the
boundary writes as the entry point's flag.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, IO, Iterator, Optional, Set, Union

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "UserPathError", "os_reason",
           "probe_directory", "probe_file", "user_path_error", "user_output", "missing_ancestor", "remove_created",
           "within"]

PathLike = Union[str, "os.PathLike[str]"]

#: The prefix of every probe's temporary name (unique per call: ranks may probe the same path at once).
PROBE_PREFIX = ".crossover-sgd-probe-"
#: errno values that mean "the filesystem is full": the advice differs from the other reasons.
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


# ------------------------------------------------------------------------------------------ atomic writes
def atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    Missing parent directories are created. If anything fails, the temporary file and the
    directories this call created are removed, and an ``OSError`` names ``path`` (a failed
    ``write`` into a file object raises one without a file name)."""
    path = Path(path)
    created = missing_ancestor(path.parent)
    tmp: Optional[str] = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask like open() does
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if created is not None:
            _remove_empty_dirs(Path(os.path.abspath(path.parent)), created)
        cause = _os_error_in(exc) if isinstance(exc, Exception) else None
        if cause is not None and (cause is not exc or exc.filename is None or exc.filename == tmp):
            named = _with_filename(cause, path)  # name the file being written, not its temporary
            if named is not exc:
                raise named from exc
        raise


def _os_error_in(exc: BaseException) -> Optional[OSError]:
    """``exc`` if it is an OSError, else the OSError it was raised while handling (a writer such
    as torch.save may fail again while closing after a full disk: the disk is the cause)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _with_filename(exc: OSError, path: Path) -> OSError:
    """``exc`` as the same OSError type, naming ``path``."""
    if exc.filename is not None and os.fsdecode(exc.filename) == str(path):
        return exc
    try:
        return type(exc)(exc.errno, exc.strerror or str(exc), str(path))
    except TypeError:  # an OSError subclass with another constructor
        return OSError(exc.errno, exc.strerror or str(exc), str(path))


def _remove_empty_dirs(deepest: Path, top: Path) -> None:
    """Remove ``deepest`` and its parents up to ``top`` (included; both absolute) where they are
    empty (another process may have put a file there meanwhile: then it stays)."""
    current = deepest
    while within(current, top):
        with contextlib.suppress(OSError):
            current.rmdir()
        if current == top or current == current.parent:
            return
        current = current.parent


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path: PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------------------ user paths
class UserPathError(OSError):
    """An ``OSError`` on a path the user gave: ``{flag} {path}: {problem}: {advice}``.

    ``flag`` is the flag (``--json``) or a ``{field}`` placeholder (``{out}``) that the error
    boundary writes as the entry point's flag; ``user_path`` the value the user gave; ``problem``
    what failed and why; ``advice`` what would be accepted. Made by :func:`user_path_error`."""

    flag: str = ""
    user_path: str = ""
    problem: str = ""
    advice: str = ""

    def message(self, flag: Optional[str] = None) -> str:
        return f"{flag or self.flag} {self.user_path}: {self.problem}: {self.advice}"

    def __str__(self) -> str:
        return self.message()


def os_reason(exc: OSError) -> str:
    """The reason of an OSError in words: ``read-only file system``, ``no space left on device``."""
    text = exc.strerror or (os.strerror(exc.errno) if exc.errno else "") or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def user_path_error(flag: str, path: PathLike, exc: OSError, kind: str = "directory",
                    doing: Optional[str] = None, advice: Optional[str] = None) -> UserPathError:
    """The :class:`UserPathError` of ``exc``, met while writing the user's ``path`` (given with
    ``flag``), a ``kind`` of ``"directory"`` or ``"file"``. ``doing`` says what failed (default:
    taken from the file ``exc`` names, relative to ``path`` where it lies below it)."""
    if isinstance(exc, UserPathError):
        return exc
    path = Path(path)
    if doing is None:
        doing = _doing(path, exc, kind)
    if advice is None:
        advice = ("free space on that filesystem or choose another one" if exc.errno in _FULL
                  else f"choose a writable {'directory' if kind == 'directory' else 'file path'}")
    reason = exc.strerror if getattr(exc, "says_all", False) else os_reason(exc)
    problem = f"{doing} ({reason})" if doing else reason
    error = UserPathError(exc.errno, problem, str(path))
    error.flag, error.user_path, error.problem, error.advice = flag, str(path), problem, advice
    return error


def _doing(path: Path, exc: OSError, kind: str) -> str:
    if getattr(exc, "says_all", False):  # the probe's own finding ("is a directory"): nothing to add
        return ""
    name = exc.filename
    failed = Path(os.fsdecode(name)) if isinstance(name, (str, bytes, os.PathLike)) else None
    # the path itself, a directory above it (where it is made, or probed), or a probe's name
    if failed is None or within(path, failed) or PROBE_PREFIX in failed.name:
        if not path.exists():
            return "cannot create it"
        return "cannot write in it" if kind == "directory" else "cannot write it"
    try:
        return f"cannot write {failed.relative_to(path)}"
    except ValueError:
        return f"cannot write {failed}"


def within(path: PathLike, folder: PathLike) -> bool:
    """``path`` is ``folder`` or lies below it (both made absolute, not resolved)."""
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
        return True
    except ValueError:
        return False


def missing_ancestor(path: PathLike) -> Optional[Path]:
    """The topmost of ``path`` and its parents that does not exist (None if ``path`` exists):
    what ``mkdir(parents=True)`` creates, and the one directory to remove to undo it."""
    path = Path(os.path.abspath(path))
    top = None
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return top
        top = candidate
    return top


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor)


def _probe_in(directory: Path) -> None:
    """Write and sync a byte in a new file in ``directory``, leaving no trace. Where the
    filesystem supports it the file has no name (``O_TMPFILE``: the directory is not even
    modified, so ranks probing it at once do not see each other); else a uniquely named
    directory and a file in it are made and removed, and the directory's times set back.
    Raises the OSError of the first step that fails."""
    tmpfile = getattr(os, "O_TMPFILE", None)
    if tmpfile is not None:
        try:
            fd = os.open(directory, tmpfile | os.O_WRONLY, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL):
                raise
        else:
            with os.fdopen(fd, "wb") as handle:
                _write_probe(handle)
            return
    times = os.stat(directory)
    made = tempfile.mkdtemp(prefix=PROBE_PREFIX, dir=directory)
    try:
        fd, name = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=made)
        try:
            with os.fdopen(fd, "wb") as handle:
                _write_probe(handle)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(made)
        with contextlib.suppress(OSError):
            os.utime(directory, ns=(times.st_atime_ns, times.st_mtime_ns))


def _write_probe(handle: IO[bytes]) -> None:
    handle.write(b"\0")
    handle.flush()
    os.fsync(handle.fileno())


def probe_directory(path: PathLike) -> None:
    """Check that the directory ``path`` can be created (where missing, with its parents) and
    written into; leave nothing behind. Raises an ``OSError`` naming the path that failed."""
    path = Path(path)
    existing = _existing_ancestor(path)
    if not existing.is_dir():
        if existing == Path(os.path.abspath(path)):
            raise _finding(NotADirectoryError, errno.ENOTDIR, "exists and is not a directory", path)
        raise _finding(NotADirectoryError, errno.ENOTDIR, f"{existing} is not a directory", existing)
    _probe_in(existing)


def probe_file(path: PathLike) -> None:
    """Check that the file ``path`` can be written (atomically: a new file beside it, renamed
    over it); leave nothing behind. Raises an ``OSError`` naming the path that failed."""
    path = Path(path)
    if path.is_dir():
        raise _finding(IsADirectoryError, errno.EISDIR, "is a directory", path)
    existing = _existing_ancestor(path.parent)
    if not existing.is_dir():
        raise _finding(NotADirectoryError, errno.ENOTDIR, f"{existing} is not a directory", existing)
    _probe_in(existing)


def _finding(cls, code: int, text: str, path: Path) -> OSError:
    """An OSError of a probe whose text says all (no reason of the system's to add)."""
    exc = cls(code, text, str(path))
    exc.says_all = True
    return exc


def remove_created(root: Path, created: Optional[Path], before: Optional[Set[str]]) -> None:
    """Undo what a call wrote below ``root``: remove ``created`` (the topmost directory the call
    created, see :func:`missing_ancestor`) or, where ``root`` existed, the entries of ``root``
    that were not in ``before`` (its listing then). Best effort: errors are ignored."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    if before is None:
        return
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            if entry.name not in before:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


def _listing(path: Path) -> Optional[Set[str]]:
    try:
        return set(os.listdir(path))
    except OSError:
        return None


@contextlib.contextmanager
def user_output(flag: str, path: PathLike, kind: str = "directory", clean: bool = True,
                clean_on: tuple = (OSError,), keep: Optional[Callable[[], bool]] = None) -> Iterator[Path]:
    """Write outputs to the user's ``path`` (``kind``: ``"directory"`` or ``"file"``), given with
    ``flag``: probe it first (:class:`UserPathError` if it cannot be written), then turn every
    ``OSError`` inside into a :class:`UserPathError`.

    With ``clean``, when an exception of ``clean_on`` leaves the block, what it created is
    removed again: the directory (and parents) it created, else the new entries of the
    directory (a file: the file, if it is new), unless ``keep()`` says that what is there is of
    value. Existing files that were replaced stay replaced (each is written atomically: the new
    version, whole)."""
    path = Path(path)
    root = path if kind == "directory" else path.parent
    try:
        (probe_directory if kind == "directory" else probe_file)(path)
    except OSError as exc:
        raise user_path_error(flag, path, exc, kind) from None
    created = missing_ancestor(root)
    before = _listing(root) if created is None else None
    try:
        yield path
    except BaseException as exc:
        if clean and isinstance(exc, clean_on) and not (keep is not None and keep()):
            if kind == "file" and created is None:
                if before is not None and path.name not in before:
                    with contextlib.suppress(OSError):
                        path.unlink()
            else:
                remove_created(root, created, before)
        if isinstance(exc, OSError):
            raise user_path_error(flag, path, exc, kind) from None
        raise
