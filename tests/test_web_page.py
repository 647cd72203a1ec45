"""The live-captions page in real headless Chromium: Chromium's fake microphone plays a
recording into getUserMedia, the page's AudioWorklet streams it over the WebSocket bridge to
a real server, and the final captions on the page must match the reference.

Chromium is driven through its DevTools protocol with aiohttp's WebSocket client (no npm).
On CI (`CI` set, as `.ci/run` does) a machine where Chromium cannot start fails the test with
the reason; elsewhere the test is skipped."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import NoReturn

import aiohttp
import soundfile
from conftest import DATA, ServerThread, reference, server_config, unavailable, wer

CLIP = "en_us_female"  # 16 kHz 16-bit PCM WAV: what Chromium's fake capture reads
START_TIMEOUT_S = 60.0  # Chromium start on a busy 2-core machine
TAIL_S = 2.5  # after the file's end: silence_ms of quiet and the last decode, then Stop
DONE_TIMEOUT_S = 30.0  # from Stop to the page's normal close (final received)


def _unavailable(reason: str) -> NoReturn:
    unavailable(f"no headless Chromium for the page test: {reason}", "Debian's chromium")


def _chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    _unavailable("no chromium on PATH (apt-get install chromium)")
    raise AssertionError  # unreachable: _unavailable raises


@contextlib.contextmanager
def chromium(profile: Path, audio: Path):
    """Headless Chromium whose microphone plays `audio` once; yields its DevTools port."""
    args = [
        _chromium_binary(), "--headless=new", "--no-sandbox", "--disable-gpu",
        "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={profile}",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={audio}%noloop",
        "--autoplay-policy=no-user-gesture-required", "about:blank",
    ]  # fmt: skip
    log = (profile.parent / "chromium.log").open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield _devtools_port(process, profile / "DevToolsActivePort")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _devtools_port(process: subprocess.Popen, port_file: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (port_file.parent.parent / "chromium.log").read_text(errors="replace")[-2000:]
            _unavailable(f"chromium exited with {process.returncode}:\n{tail}")
        if port_file.is_file() and (lines := port_file.read_text().split()):
            return int(lines[0])
        time.sleep(0.1)
    _unavailable(f"chromium did not open its DevTools port in {START_TIMEOUT_S:.0f} s")
    raise AssertionError


class Page:
    """One tab over the DevTools protocol: commands by id; console and errors are kept."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.ids, self.console = ws, itertools.count(1), []

    async def send(self, method: str, **params) -> dict:
        number = next(self.ids)
        await self.ws.send_json({"id": number, "method": method, "params": params})
        async for message in self.ws:
            reply = json.loads(message.data)
            if reply.get("id") == number:
                assert "error" not in reply, reply
                return reply["result"]
            if reply.get("method") in ("Runtime.consoleAPICalled", "Runtime.exceptionThrown"):
                self.console.append(reply["params"])
        raise ConnectionError("DevTools connection closed")

    async def evaluate(self, expression: str):
        result = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, userGesture=True,
            returnByValue=True,
        )  # fmt: skip
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if value := await self.evaluate(expression):
                return value
            await asyncio.sleep(0.1)
        state = await self.evaluate("document.body.dataset.state + ' ' + el('status').textContent")
        raise AssertionError(f"timed out waiting for {expression!r}; page: {state}; {self.console}")


FINALS = "Array.from(document.querySelectorAll('#finals li')).map(li => li.lastChild.textContent)"
KEY_CODES = {"Tab": 9, "Enter": 13}


async def press(page: Page, key: str) -> None:
    """A real key press (trusted input, as from a keyboard)."""
    code, text = KEY_CODES[key], "\r" if key == "Enter" else ""
    down = "keyDown" if text else "rawKeyDown"
    await page.send(
        "Input.dispatchKeyEvent", type=down, key=key, code=key, windowsVirtualKeyCode=code,
        text=text,
    )  # fmt: skip
    await page.send("Input.dispatchKeyEvent", type="keyUp", key=key, code=key)


@contextlib.asynccontextmanager
async def open_page(devtools_port: int, url: str):
    """The browser's tab, on `url`, with the Start button focused from the keyboard (Tab)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{devtools_port}/json/list") as reply:
            tab = next(t for t in await reply.json() if t["type"] == "page")
        async with session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = Page(ws)
            await page.send("Runtime.enable")
            await page.send("Page.enable")
            await page.send("Page.navigate", url=url)
            await page.wait_for("document.readyState === 'complete' && !!el('toggle')", 30)
            await press(page, "Tab")
            assert await page.evaluate("document.activeElement.id") == "toggle"
            yield page


async def caption_clip(devtools_port: int, url: str, audio_s: float, shot: Path) -> list[str]:
    """Open the page, press Start, let the clip play, press Stop; the finals on the page."""
    async with open_page(devtools_port, url) as page:
        await press(page, "Enter")
        await page.wait_for("document.body.dataset.state === 'listening'", 30)
        await asyncio.sleep(audio_s * 0.6)  # mid-speech: interims on the page
        live = await page.send("Page.captureScreenshot", format="png")
        shot.with_name("listening.png").write_bytes(base64.b64decode(live["data"]))
        await asyncio.sleep(audio_s * 0.4 + TAIL_S)
        await press(page, "Enter")
        state = await page.wait_for(
            "['done', 'error'].includes(document.body.dataset.state) && "
            "document.body.dataset.state",
            DONE_TIMEOUT_S,
        )
        picture = await page.send("Page.captureScreenshot", format="png")
        shot.write_bytes(base64.b64decode(picture["data"]))
        banner = await page.evaluate("el('banner').textContent")
        assert state == "done", f"page ended in {state}: {banner}; {page.console}"
        finals = await page.evaluate(FINALS)
        counts = await page.evaluate("JSON.stringify(document.body.dataset)")
        assert finals, f"no final caption on the page: {counts}; {page.console}"
        return finals


async def refusal_banner(devtools_port: int, url: str, shot: Path) -> str:
    """Press Start on a server that will refuse the stream; the banner's text."""
    async with open_page(devtools_port, url) as page:
        await press(page, "Enter")
        await page.wait_for("document.body.dataset.state === 'error'", DONE_TIMEOUT_S)
        picture = await page.send("Page.captureScreenshot", format="png")
        shot.write_bytes(base64.b64decode(picture["data"]))
        return await page.evaluate("el('banner').textContent")


def test_live_captions_in_chromium(transcriber, tmp_path):
    profile = tmp_path / "profile"
    profile.mkdir()
    audio = DATA / f"{CLIP}.wav"
    running = ServerThread(server_config(web_port=0, idle_timeout_s=20), transcriber).start()
    try:
        with chromium(profile, audio) as devtools_port:
            url = f"http://127.0.0.1:{running.running.web_port}/"
            duration = soundfile.info(audio).duration
            finals = asyncio.run(caption_clip(devtools_port, url, duration, tmp_path / "page.png"))
    finally:
        running.stop()
    assert (tmp_path / "page.png").stat().st_size > 0
    assert finals, "no final caption on the page"
    assert wer([reference(CLIP)], [" ".join(finals)]) <= 0.10, finals


def test_a_refused_stream_shows_its_status_in_the_banner(make_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("page-secret\n")
    running = make_server(web_port=0, auth_tokens_file=str(tokens))
    profile = tmp_path / "profile"
    profile.mkdir()
    with chromium(profile, DATA / f"{CLIP}.wav") as devtools_port:
        url = f"http://127.0.0.1:{running.running.web_port}/"
        banner = asyncio.run(refusal_banner(devtools_port, url, tmp_path / "refused.png"))
    assert banner.startswith("UNAUTHENTICATED: missing or invalid bearer token"), banner
