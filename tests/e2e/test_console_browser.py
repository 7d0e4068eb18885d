"""The web console in a real browser: Debian's chromium driven by Playwright (sync API, so
these are plain sync tests; pytest-trio runs them as they are), against one real
``cody serve`` per module, through a loopback TCP proxy that a test cuts to drop the page's
connections mid-run.

The server replays ``tests/console_fixture.py`` (thinking, a read_file call, then 80 numbered
words) with a pause between SSE blocks, so a run lasts a few seconds: long enough to watch it
arrive, cut it, cancel it.

Skipped (with the reason) only where ``/usr/bin/chromium`` is missing; ``.ci/run`` installs it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.console_fixture import MODEL, PROMPT, THINKING, answer_text
from tests.e2e.console_server import console_server
from tests.e2e.server import ServerProcess
from tests.threaded_proxy import ThreadedProxy

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 20_000
expect.set_options(timeout=TIMEOUT_MS)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="no /usr/bin/chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with console_server(tmp_path_factory.mktemp("console")) as proc:
        yield proc


@pytest.fixture(scope="module")
def proxy(server: ServerProcess) -> Iterator[ThreadedProxy]:
    p = ThreadedProxy(server.port).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    p = context.new_page()
    yield p
    context.close()


def _start_turn(page: Page, base: str, prompt: str = PROMPT) -> None:
    page.goto(f"{base}/#/threads/new")
    page.get_by_test_id("prompt-input").fill(prompt)
    _pick_model(page)
    page.get_by_test_id("send").click()


def _pick_model(page: Page) -> None:
    picker = page.locator("[data-testid=model-select], [data-testid=model-input]")
    if picker.get_attribute("data-testid") == "model-select":
        picker.select_option(MODEL)
    else:  # the server has no GET /api/v2/models: a text field
        picker.fill(MODEL)


def test_thread_view_runs_a_turn_with_thinking_a_tool_call_and_text(
        page: Page, proxy: ThreadedProxy) -> None:
    _start_turn(page, proxy.url)
    turn = page.get_by_test_id("turn").first
    expect(turn.get_by_test_id("prompt")).to_have_text(PROMPT, timeout=TIMEOUT_MS)
    reasoning = turn.get_by_test_id("reasoning")
    expect(reasoning).to_be_visible()
    expect(reasoning.locator("details")).not_to_have_attribute("open", "")  # collapsed
    expect(turn.get_by_test_id("tool-name")).to_have_text("read_file")
    expect(turn.get_by_test_id("tool-args")).to_have_text('{"path": "notes.txt"}')
    expect(turn.get_by_test_id("tool-output")).to_contain_text("Cody Core notes")
    expect(turn.get_by_test_id("message-text")).to_contain_text("w001")
    expect(turn).to_have_attribute("data-status", "in_progress")  # text arrives as it runs
    expect(turn).to_have_attribute("data-status", "complete")
    assert turn.get_by_test_id("reasoning-text").text_content() == "".join(THINKING)
    assert turn.get_by_test_id("message-text").text_content() == answer_text()
    expect(turn.get_by_test_id("usage")).to_contain_text("tokens:")
    assert re.search(r"#/threads/[0-9a-f-]{36}$", page.url)

    # the thread view from the server: every turn of the thread, and a box for the next one
    page.reload()
    turn = page.get_by_test_id("turn")
    expect(turn).to_have_count(1)
    expect(turn).to_have_attribute("data-status", "complete")
    assert turn.get_by_test_id("message-text").text_content() == answer_text()
    expect(page.get_by_test_id("prompt-input")).to_be_visible()


def test_a_dropped_stream_resumes_with_no_duplicated_text(page: Page,
                                                          proxy: ThreadedProxy) -> None:
    _start_turn(page, proxy.url)
    turn = page.get_by_test_id("turn").first
    text = turn.get_by_test_id("message-text")
    expect(text).to_contain_text("w010", timeout=TIMEOUT_MS)
    before = proxy.proxy.connections
    proxy.cut()  # every connection of the page drops, mid-text
    cut_at = text.text_content() or ""
    assert cut_at != answer_text()
    time.sleep(1.0)
    proxy.restore()
    full = answer_text()
    deadline = time.monotonic() + 30
    seen = []
    while time.monotonic() < deadline:
        shown = text.text_content() or ""
        seen.append(shown)
        assert full.startswith(shown), f"not a prefix of the answer: {shown!r}"
        if turn.get_attribute("data-status") == "complete":
            break
        time.sleep(0.05)
    assert text.text_content() == full
    assert proxy.proxy.connections > before  # it came back through the proxy
    assert len(set(seen)) > 2  # and was watched arriving after the cut


def test_cancel_button_aborts_the_run(page: Page, proxy: ThreadedProxy) -> None:
    _start_turn(page, proxy.url)
    turn = page.get_by_test_id("turn").first
    expect(turn.get_by_test_id("reasoning")).to_be_visible()
    turn.get_by_test_id("cancel").click()
    expect(turn).to_have_attribute("data-status", "aborted")
    expect(turn.get_by_test_id("cancel")).to_be_hidden()
    expect(turn.get_by_test_id("run-error")).to_contain_text("aborted")


def test_runs_list_updates_live(page: Page, proxy: ThreadedProxy,
                                server: ServerProcess) -> None:
    page.goto(f"{proxy.url}/#/")
    expect(page.get_by_test_id("runs-table")).to_be_visible()
    r = httpx.post(f"{server.base_url}/api/v2/runs", json={"prompt": "list me", "model": MODEL},
                   timeout=10)
    assert r.status_code == 202
    run_id = r.json()["run_id"]
    row = page.locator(f"tr[data-run-id='{run_id}']")
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-status", re.compile("queued|in_progress"))
    expect(row).to_have_attribute("data-status", "complete")
    expect(row.get_by_test_id("row-tokens")).to_have_text(re.compile(r"^\d+$"))
    # the run view of an ended run: from its Response
    row.locator("a").first.click()
    turn = page.get_by_test_id("turn")
    expect(turn).to_have_attribute("data-status", "complete")
    assert turn.get_by_test_id("message-text").text_content() == answer_text()
    expect(turn.get_by_test_id("thread-link")).to_have_attribute(
        "href", f"#/threads/{r.json()['thread_id']}")


KEY = "console-test-key-0123456789"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with console_server(tmp_path_factory.mktemp("console-keys"),
                        CODY_API_KEYS=f"acme:{KEY}") as proc:
        yield proc


def test_with_api_keys_the_console_asks_for_a_key_and_never_puts_it_in_a_url(
        page: Page, keyed_server: ServerProcess) -> None:
    """A server with API keys: the page asks for the key on the first 401, sends it as
    ``Authorization: Bearer`` on every API call, streams through the signed ``events_url``
    of the submit as given (EventSource cannot send headers), and no URL holds the key."""
    requests: list[tuple[str, str | None]] = []
    page.on("request", lambda req: requests.append((req.url, req.headers.get("authorization"))))
    page.goto(f"{keyed_server.base_url}/#/threads/new")
    dialog = page.get_by_test_id("key-dialog")
    expect(dialog).to_be_visible()
    page.get_by_test_id("key-input").fill(KEY)
    page.get_by_test_id("key-submit").click()
    expect(dialog).to_be_hidden()
    page.get_by_test_id("prompt-input").fill(PROMPT)
    _pick_model(page)
    page.get_by_test_id("send").click()
    turn = page.get_by_test_id("turn").first
    expect(turn).to_have_attribute("data-status", "complete")
    assert turn.get_by_test_id("message-text").text_content() == answer_text()
    # the next turn of the thread, from the box under it
    page.get_by_test_id("prompt-input").fill("And again.")
    page.get_by_test_id("send").click()
    turns = page.get_by_test_id("turn")
    expect(turns).to_have_count(2)
    expect(turns.nth(1)).to_have_attribute("data-status", "complete")
    # and the runs list, with the key still in the page's memory
    page.goto(f"{keyed_server.base_url}/#/")
    expect(page.locator("tr[data-run-id]")).to_have_count(2)

    api = [(url, auth) for url, auth in requests if "/api/v2/" in url]
    streams = [url for url, _ in api if "/events" in url]
    assert streams and all("?token=" in url for url in streams)
    assert not any(KEY in url for url, _ in requests)
    others = [auth for url, auth in api if "/events" not in url]
    assert others[0] is None  # the first call, before the key was asked for
    assert all(auth == f"Bearer {KEY}" for auth in others[1:]), others
