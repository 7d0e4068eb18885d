"""``read_file`` / ``list_dir`` stay inside the workspace, also while a path is being swapped
under them (actors/tools/workspace.py), with both ways of resolving a path: ``openat2`` (the
kernel's RESOLVE_BENEATH) and the ``O_NOFOLLOW`` walk used where the kernel lacks it."""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.tools import EscapesWorkspace, ToolRunner, Workspace, openat2_available
from actors.tools.workspace import Resolver

RESOLVERS: list[Resolver] = ["walk", *(["openat2"] if openat2_available() else [])]  # type: ignore[list-item]


def runner(root: Path, resolver: Resolver, cap: int = 10_000) -> ToolRunner:
    return ToolRunner(root, enabled=["read_file", "list_dir"], timeout_s=5, output_cap=cap,
                      path_resolver=resolver)


def build_tree(base: Path) -> Path:
    """A workspace with every kind of symlink, beside an ``outside`` folder it must not reach."""
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("OUTSIDE SECRET\n")
    ws = base / "ws"
    (ws / "a" / "b").mkdir(parents=True)
    (ws / "file.txt").write_text("top\n")
    (ws / "a" / "b" / "deep.txt").write_text("deep\n")
    links = {
        "to_b": "a/b",                      # inside, relative: followed
        "a/up.txt": "../file.txt",          # inside through ..: followed
        "a/b/to_root": "../..",             # the root itself: followed
        "chain": "to_b",                    # a link to a link: followed
        "dot": ".",
        "out_rel": "../outside",            # leaves through ..: refused
        "a/b/out_deep": "../../../outside/secret.txt",
        "out_abs": str(outside),            # absolute: refused
        "in_abs": str(ws / "file.txt"),     # absolute, even pointing inside: refused
        "loop": "loop",
        "dangling": "nope.txt",
        "file_slash": "file.txt/",          # a file named as a directory
    }
    for name, target in links.items():
        os.symlink(target, ws / name)
    return ws


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return build_tree(tmp_path)


def outcome(ws: Workspace, path: str) -> tuple[object, ...]:
    try:
        fd = ws.open(path)
    except EscapesWorkspace:
        return ("escapes",)
    except OSError as exc:
        return ("errno", errno.errorcode.get(exc.errno or 0, exc.errno))
    try:
        st_ = os.fstat(fd)
        return ("ok", st_.st_dev, st_.st_ino)
    finally:
        os.close(fd)


@pytest.mark.parametrize("resolver", RESOLVERS)
def test_what_each_path_resolves_to(tree: Path, resolver: Resolver) -> None:
    ws = Workspace(tree, resolver=resolver)
    ino = {name: os.stat(tree / name).st_ino for name in ("file.txt", "a/b", "a/b/deep.txt", ".")}
    ok = {path: ino[want] for path, want in {
        "file.txt": "file.txt", "./file.txt": "file.txt", "file.txt/": "file.txt",
        "a/../file.txt": "file.txt", "a/up.txt": "file.txt", "to_b/deep.txt": "a/b/deep.txt",
        "chain/deep.txt": "a/b/deep.txt", "to_b/../b/deep.txt": "a/b/deep.txt",
        "a/b/to_root/file.txt": "file.txt", "dot/dot/file.txt": "file.txt", ".": ".",
        "to_b": "a/b", "to_b/": "a/b", str(tree / "a" / "b"): "a/b",
        "a/b/deep.txt/": "a/b/deep.txt",  # a trailing "/" of the path given is dropped
        str(tree / "file.txt"): "file.txt", str(tree): ".",
    }.items()}
    for path, want in ok.items():
        got = outcome(ws, path)
        assert got[0] == "ok" and got[2] == want, path
    for path in ["..", "../outside/secret.txt", "a/../../outside/secret.txt", "out_rel",
                 "out_rel/secret.txt", "a/b/out_deep", "out_abs/secret.txt", "in_abs",
                 "/etc/passwd", str(tree.parent / "outside" / "secret.txt"),
                 str(tree) + "/../outside/secret.txt", "a/b/to_root/.."]:
        assert outcome(ws, path) == ("escapes",), path
    assert outcome(ws, "loop") == ("errno", "ELOOP")
    for path in ["missing", "dangling", "file.txt/x", "file_slash", "a/b/deep.txt/x"]:
        assert outcome(ws, path) == ("errno", "ENOENT"), path


_COMPONENTS = ["a", "b", "..", ".", "file.txt", "deep.txt", "to_b", "a/up.txt", "chain", "dot",
               "to_root", "out_rel", "out_abs", "in_abs", "out_deep", "loop", "dangling",
               "file_slash", "secret.txt", "outside", ""]


@pytest.fixture(scope="module")
def shared_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tree(tmp_path_factory.mktemp("equiv"))


@settings(max_examples=400, deadline=None)
@given(parts=st.lists(st.sampled_from(_COMPONENTS), min_size=1, max_size=6),
       trailing_slash=st.booleans())
def test_the_walk_resolves_exactly_as_openat2(shared_tree: Path, parts: list[str],
                                             trailing_slash: bool) -> None:
    """The user-space walk is the fallback for kernels without openat2: on any path it must
    give what the kernel gives (the same file, or the same refusal)."""
    assert openat2_available(), "this kernel has openat2 (Linux 5.6+); it is the oracle here"
    path = "/".join(parts) + ("/" if trailing_slash else "")
    assert outcome(Workspace(shared_tree, resolver="walk"), path) == \
        outcome(Workspace(shared_tree, resolver="openat2"), path), path


@pytest.mark.parametrize("resolver", RESOLVERS)
async def test_tools_on_symlinks(tree: Path, resolver: Resolver) -> None:
    r = runner(tree, resolver)
    with trio.fail_after(10):
        assert (await r.run("read_file", '{"path": "to_b/deep.txt"}')).output == "deep\n"
        assert (await r.run("read_file", '{"path": "a/up.txt"}')).output == "top\n"
        for path in ["out_rel/secret.txt", "a/b/out_deep", "in_abs"]:
            res = await r.run("read_file", f'{{"path": "{path}"}}')
            assert not res.success and res.output == f"error: path escapes the workspace: {path}"
        res = await r.run("list_dir", '{"path": "out_rel"}')
        assert res.output == "error: path escapes the workspace: out_rel"
        res = await r.run("list_dir", '{"path": "."}')
        # links to directories inside end in "/", as directories do; the others do not
        assert res.output.split("\n") == [
            "a/", "chain/", "dangling", "dot/", "file.txt", "file_slash", "in_abs", "loop",
            "out_abs", "out_rel", "to_b/"]
        res = await r.run("list_dir", '{"path": "to_b"}')
        assert res.output == "deep.txt\nout_deep\nto_root/"


@pytest.mark.parametrize("resolver", RESOLVERS)
async def test_special_files_are_not_read(tree: Path, resolver: Resolver) -> None:
    """A FIFO planted in the workspace neither blocks a thread nor is read."""
    os.mkfifo(tree / "pipe")
    r = runner(tree, resolver)
    with trio.fail_after(5):
        res = await r.run("read_file", '{"path": "pipe"}')
        assert not res.success and res.output == "error: not a file: pipe"
        res = await r.run("read_file", '{"path": "nul\\u0000byte"}')
        assert not res.success and res.output == "error: path contains a NUL byte"


@pytest.mark.parametrize("resolver", RESOLVERS)
async def test_read_is_bounded_by_the_cap(tmp_path: Path, resolver: Resolver) -> None:
    (tmp_path / "big.txt").write_text("é" * 100_000 + "\r\nend")
    with trio.fail_after(5):
        res = await runner(tmp_path, resolver, cap=10).run("read_file", '{"path": "big.txt"}')
        assert res.success and res.output == "é" * 10 + "\n[output truncated at 10 characters]"


# --- the race ----------------------------------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                      _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@pytest.fixture(params=["relative", "absolute"])
def swapping(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, list[int]]]:
    """``ws/d`` flips between a folder (holding ``f`` and ``inside.txt``) and a symlink to a
    folder outside (holding ``f`` and ``secret.txt``), atomically, in a tight loop."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("OUTSIDE SECRET\n")
    (outside / "secret.txt").write_text("OUTSIDE SECRET\n")
    ws = tmp_path / "ws"
    (ws / "d").mkdir(parents=True)
    (ws / "d" / "f").write_text("inside\n")
    (ws / "d" / "inside.txt").write_text("inside\n")
    os.symlink("../outside" if request.param == "relative" else str(outside), ws / "d.swap")
    stop = threading.Event()
    swaps = [0]

    def swap() -> None:
        while not stop.is_set():
            _exchange(ws / "d", ws / "d.swap")
            swaps[0] += 1

    thread = threading.Thread(target=swap, daemon=True)
    thread.start()
    try:
        yield ws, swaps
    finally:
        stop.set()
        thread.join(5)


@pytest.mark.parametrize("resolver", RESOLVERS)
async def test_a_swapped_symlink_never_leaks_an_outside_byte(
        swapping: tuple[Path, list[int]], resolver: Resolver) -> None:
    ws, swaps = swapping
    r = runner(ws, resolver)
    reads: dict[str, int] = {}
    listings: dict[str, int] = {}
    with trio.fail_after(60):
        for _ in range(2000):
            out = (await r.run("read_file", '{"path": "d/f"}')).output
            reads[out] = reads.get(out, 0) + 1
        for _ in range(300):
            out = (await r.run("list_dir", '{"path": "d"}')).output
            listings[out] = listings.get(out, 0) + 1
    print(f"\n{resolver}: {swaps[0]} swaps, reads {reads}, listings {listings}")
    assert set(reads) <= {"inside\n", "error: path escapes the workspace: d/f"}
    assert set(listings) <= {"f\ninside.txt", "error: path escapes the workspace: d"}
    # both states were really seen, so the race was on
    assert reads.get("inside\n", 0) > 0 and reads.get("error: path escapes the workspace: d/f", 0)
    assert swaps[0] > 1000
