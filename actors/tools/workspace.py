"""Open paths beneath the workspace root, with no window between the check and the open.

Checking a path and then opening it is two steps, and anything that can write to the workspace
(``exec``, another run, the user's editor) can swap a component for a symlink in between: the
old ``resolve()``-then-``open()`` read an outside file in 195 of 3,000 reads while a folder and a
symlink were swapped (issue 14). So nothing here checks a path and opens it later: the path is
resolved *by the open itself*, relative to a descriptor of the workspace root, and the open
refuses to leave it.

- Where the kernel has it (Linux 5.6+), ``openat2(root_fd, path, RESOLVE_BENEATH |
  RESOLVE_NO_MAGICLINKS)``: the kernel walks the whole path, ``..`` and symlinks included, and
  fails with ``EXDEV`` the moment the walk would leave the root, whatever is renamed meanwhile
  (``EAGAIN`` if a rename raced a ``..``; we retry).
- Elsewhere (Linux before 5.6, a seccomp filter that hides ``openat2``), the same walk in user
  space: one component at a time, each opened with ``O_NOFOLLOW`` (``O_PATH`` for the ones
  before the last) relative to the descriptor of the directory before it. ``..`` pops our own
  stack of directory descriptors (the file system's ``..`` is never opened, so a directory
  moved meanwhile cannot take us above the root); a symlink's target is read through the
  descriptor of that very symlink and spliced into the rest of the path, so what we follow is
  what we looked at, not what the name points to a moment later.

Symlinks (the decision): a symlink whose target stays inside the workspace is followed, as
before, because both ways above follow it without a race. A symlink with an *absolute* target
is refused even when it points inside (``RESOLVE_BENEATH``'s rule: its meaning depends on where
the workspace is mounted); magic links (``/proc/<pid>/fd/<n>``) never resolve. A path given
absolute is accepted only when it names the workspace root or something under it (models like
to echo the absolute paths they see); the rest of it is then resolved beneath the root.

What this does not cover: a hard link inside the workspace to an outside file, or a bind mount,
is the operator's own doing and is read like any other file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import stat
import sys
from collections import deque
from pathlib import Path
from typing import Literal

Resolver = Literal["auto", "openat2", "walk"]
"""How paths are resolved: ``auto`` picks ``openat2`` when the kernel has it."""

OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
"""Every open is read-only; ``O_NONBLOCK`` so that a FIFO planted in the workspace cannot block a
worker thread (the caller fstat()s the descriptor and reads only regular files)."""

_ENTRY_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
"""A descriptor of a directory entry itself (a symlink is not followed), usable as ``dir_fd``."""
_MAX_SYMLINKS = 40  # as the kernel (MAXSYMLINKS)
_EAGAIN_RETRIES = 8
_SWAP_RETRIES = 8

# openat2(2): the syscall number is the same on every Linux architecture that has it (437).
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_BENEATH = 0x08


class EscapesWorkspace(Exception):
    """The path (or a symlink on it) would leave the workspace root."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _openat2(dir_fd: int, path: str, flags: int) -> int:
    how = _OpenHow(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
    syscall = _libc().syscall
    syscall.restype = ctypes.c_long
    fd = int(syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dir_fd),
                     ctypes.c_char_p(os.fsencode(path)), ctypes.byref(how),
                     ctypes.c_size_t(ctypes.sizeof(how))))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


@functools.cache
def openat2_available() -> bool:
    """Whether this kernel (and any seccomp filter around us) lets us call ``openat2``.

    Probed once per process: the answer is a property of the kernel, not of any one runtime.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        root = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.close(_openat2(root, ".", OPEN_FLAGS))
    except OSError:  # ENOSYS on old kernels, EPERM or ENOSYS under a seccomp filter
        return False
    finally:
        os.close(root)
    return True


def _parts(path: str) -> list[str]:
    """The components of ``path``; a trailing ``/`` stays as a final ``.`` (it must be a
    directory, as the kernel reads a symlink's target)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if parts and path.endswith("/"):
        parts.append(".")
    return parts


def _open_openat2(root_fd: int, rel: str) -> int:
    for _ in range(_EAGAIN_RETRIES):
        try:
            return _openat2(root_fd, rel, OPEN_FLAGS)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise EscapesWorkspace(rel) from None
            if exc.errno != errno.EAGAIN:
                raise
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), rel)


def _open_walk(root_fd: int, rel: str) -> int:
    """``openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`` in user space (module docstring).

    Each component is looked up once, as ``O_PATH | O_NOFOLLOW``: that gives a descriptor of
    the entry itself, and what it is (directory, symlink, other) is asked of that descriptor,
    so an entry swapped after the lookup changes nothing. A symlink's target is read through
    the same descriptor. Only the last component, which needs a real descriptor, is opened by
    name (``O_NOFOLLOW``), and looked at again if it was a symlink a moment before.
    """
    parts = deque(_parts(rel))
    stack = [os.dup(root_fd)]  # stack[-1] is the directory the next component is looked up in
    links = swaps = 0
    try:
        while parts:
            name = parts.popleft()
            if name == "..":
                if len(stack) == 1:
                    raise EscapesWorkspace(rel)
                os.close(stack.pop())
                continue
            if not parts:
                try:
                    return os.open(name, OPEN_FLAGS | os.O_NOFOLLOW, dir_fd=stack[-1])
                except OSError as exc:
                    if exc.errno != errno.ELOOP:  # ELOOP: a symlink, read below
                        raise
            fd = os.open(name, _ENTRY_FLAGS, dir_fd=stack[-1])
            try:
                mode = os.fstat(fd).st_mode
                if stat.S_ISLNK(mode):
                    target = os.readlink("", dir_fd=fd)
                elif stat.S_ISDIR(mode):
                    if not parts:
                        return os.open(".", OPEN_FLAGS, dir_fd=fd)
                    stack.append(fd)
                    fd = -1
                    continue
                elif parts:
                    raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), rel)
                else:  # the last component was a symlink a moment ago: look at it again
                    swaps += 1
                    if swaps > _SWAP_RETRIES:
                        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), rel)
                    parts.appendleft(name)
                    continue
            finally:
                if fd >= 0:
                    os.close(fd)
            links += 1
            if links > _MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), rel)
            if target.startswith("/"):
                raise EscapesWorkspace(rel)
            parts.extendleft(reversed(_parts(target)))
        return os.open(".", OPEN_FLAGS, dir_fd=stack[-1])  # the path ended on a directory
    finally:
        for fd in stack:
            os.close(fd)


class Workspace:
    """The workspace root; ``open(path)`` gives a read-only descriptor of what ``path`` names
    beneath it, or raises ``EscapesWorkspace`` / ``FileNotFoundError`` / ``OSError``."""

    def __init__(self, root: Path, *, resolver: Resolver = "auto") -> None:
        self.root = root
        if resolver == "auto":
            resolver = "openat2" if openat2_available() else "walk"
        self.resolver: Literal["openat2", "walk"] = resolver

    def relative(self, path: str) -> str:
        """``path`` relative to the root: as given, or stripped of the root when absolute."""
        if "\0" in path:
            raise ValueError("path contains a NUL byte")
        given = [p for p in path.split("/") if p not in ("", ".")]
        if path.startswith("/"):
            for root in (str(self.root.absolute()), os.path.realpath(self.root)):
                prefix = [p for p in root.split("/") if p not in ("", ".")]
                if given[:len(prefix)] == prefix:
                    break
            else:
                raise EscapesWorkspace(path)
            given = given[len(prefix):]
        return "/".join(given) or "."

    def open(self, path: str) -> int:
        rel = self.relative(path)
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if self.resolver == "openat2":
                return _open_openat2(root_fd, rel)
            return _open_walk(root_fd, rel)
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:  # "file.txt/x": nothing of that name, as before
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None
            raise
        finally:
            with contextlib.suppress(OSError):
                os.close(root_fd)
