"""`streamstt bench --peer whisperlive` without the peer: the protocol adapter (WhisperLive
segments -> results, words, metrics) on synthetic messages with known answers and on a
recorded real exchange (tests/data/whisperlive_timeline.json: whisper-live 0.10.0 on
two_utterances.wav, N=1), and the WebSocket client against a stand-in server on loopback."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from conftest import DATA

from streamstt.client.bench import latency
from streamstt.client.bench.peers import whisperlive as wl
from streamstt.client.bench.peers.whisperlive_stream import (
    PeerStream,
    StreamOptions,
    float_chunks,
    stream_to_whisperlive,
)

RECORDED = DATA / "whisperlive_timeline.json"
# 20 chunks of 100 ms; chunk k (audio (k*0.1, (k+1)*0.1]) is sent at 10 + k*0.1.
CHUNKS = tuple(latency.ChunkSend(10.0 + k * 0.1, round((k + 1) * 0.1, 3)) for k in range(20))


def seg(start: float, end: float, text: str, completed: bool = False) -> dict:
    # as WhisperLive formats them: times as strings with three decimals
    return {"start": f"{start:.3f}", "end": f"{end:.3f}", "text": text, "completed": completed}


def exchange(*messages: tuple[float, dict], end_t: float | None = 13.0) -> wl.Exchange:
    bodies = tuple(wl.PeerMessage(t, {"uid": "u", **body}) for t, body in messages)
    return wl.Exchange(CHUNKS, bodies, 2.0, end_t)


def texts(result: latency.Result) -> list[str]:
    return [w.text for w in result.words]


# ---- word times ------------------------------------------------------------------------------
def test_a_segment_span_is_spread_over_its_words_by_length():
    ab, c = wl.spread_words(" ab c ", 1.0, 2.5)
    assert (ab.text, ab.start_s, ab.end_s) == ("ab", 1.0, 2.0)  # 2 of 3 characters
    assert (c.text, c.start_s, c.end_s) == ("c", 2.0, 2.5)
    assert wl.spread_words("  ", 0.0, 1.0) == ()
    (word,) = wl.spread_words("late", 3.0, 2.0)  # an inverted span collapses to its start
    assert word.start_s == word.end_s == 3.0


# ---- segments -> results ----------------------------------------------------------------------
ONE = seg(0.0, 0.8, " one two", completed=True)
RESENT = exchange(
    (10.5, {"segments": [seg(0.0, 0.5, " one")]}),
    (10.9, {"segments": [ONE, seg(0.8, 1.0, " three")]}),
    (11.0, {"segments": [ONE, seg(0.8, 1.0, " three")]}),  # nothing new: no response
    (11.3, {"segments": [ONE, seg(0.8, 1.6, " three four")]}),
    (11.8, {"segments": [ONE, seg(0.8, 1.6, " three four", completed=True)]}),
)


def test_completed_segments_are_finals_once_and_the_last_one_an_interim():
    stream = wl.timeline(RESENT)
    assert [r.recv_t for r in stream.responses] == [10.5, 10.9, 11.3, 11.8]
    first, second, third, fourth = (r.results for r in stream.responses)
    assert [(r.is_final, r.utterance, texts(r)) for r in first] == [(False, 0, ["one"])]
    # the final of utterance 0, then the next segment as utterance 1's interim
    assert [(r.is_final, r.utterance, texts(r)) for r in second] == [
        (True, 0, ["one", "two"]),
        (False, 1, ["three"]),
    ]
    assert [(r.is_final, r.utterance) for r in third] == [(False, 1)]  # ONE is not repeated
    assert [(r.is_final, r.utterance, texts(r)) for r in fourth] == [(True, 1, ["three", "four"])]
    assert latency.final_transcript(stream) == "one two three four"
    assert second[0].end_s == 0.8 and second[0].words[0].end_s == pytest.approx(0.8 * 3 / 6)
    # every final counted once: two finals, however often WhisperLive resent them
    assert len(latency.final_latencies(stream)) == 2


def test_emission_on_resent_segments_counts_from_the_first_sighting():
    one, two, three, four = latency.word_emissions(wl.timeline(RESENT))
    # "one" ends at 0.4 in the final (chunk 3, sent 10.3), shown at 10.5 as an interim
    assert one.first_seen_t == 10.5 and one.emission_s == pytest.approx(0.2)
    assert two.first_seen_t == 10.9  # only the final shows it
    assert three.first_seen_t == 10.9 and four.first_seen_t == 11.3
    assert four.final_t == 11.8


def test_a_segment_completed_unchanged_keeps_the_times_of_its_interim():
    # same_output_threshold completes the pending segment from the undecoded audio's start
    stream = wl.timeline(
        exchange(
            (10.9, {"segments": [seg(1.0, 1.8, " hello there")]}),
            (12.0, {"segments": [seg(0.2, 1.8, " hello there", completed=True)]}),
        )
    )
    final = stream.responses[-1].results[0]
    assert final.is_final and [w.start_s for w in final.words] == [1.0, 1.0 + 0.8 * 5 / 10]
    hello, there = latency.correct_prefix_emissions(stream)
    assert hello.first_seen_t == there.first_seen_t == 10.9


def test_overlapping_completed_segments_are_dropped_as_the_peer_client_does():
    stream = wl.timeline(
        exchange(
            (10.5, {"segments": [seg(0.0, 1.0, " a b", completed=True)]}),
            (10.9, {"segments": [seg(0.0, 1.0, " a b", True), seg(0.5, 1.2, " b c", True)]}),
        )
    )
    assert latency.final_transcript(stream) == "a b"


def test_the_pending_segment_is_final_when_the_audio_ends():
    messages = ((10.5, {"segments": [seg(0.0, 1.0, " left open")]}),)
    (_, last) = wl.timeline(exchange(*messages, end_t=12.5)).responses
    assert (
        last.recv_t == 12.5
        and last.results[0].is_final
        and texts(last.results[0])
        == [
            "left",
            "open",
        ]
    )
    broken = wl.timeline(exchange(*messages, end_t=None))  # no END_OF_AUDIO: no final
    assert latency.final_transcript(broken) == ""


def test_a_wait_status_is_a_stream_error():
    stream = wl.timeline(exchange((10.1, {"status": "WAIT", "message": 2.5}), end_t=None))
    assert stream.error == "WAIT" and stream.error_detail == "2.5" and stream.responses == ()


# ---- the recorded exchange ----------------------------------------------------------------------
def recorded() -> tuple[dict, latency.StreamTimeline]:
    data = json.loads(RECORDED.read_text())
    return data, wl.timeline(wl.exchange_from_json(data))


def test_the_recorded_exchange_round_trips_through_json():
    data = json.loads(RECORDED.read_text())
    again = wl.exchange_to_json(wl.exchange_from_json(data))
    assert again == {k: data[k] for k in again}


def test_recorded_exchange_maps_to_three_utterances_and_zero_wer():
    data, stream = recorded()
    finals = latency.finals_by_utterance(stream)
    assert sorted(finals) == [0, 1, 2]
    assert latency.final_transcript(stream) == (
        "Good morning. How are you feeling on this lovely day? "
        "I think we should take a walk in the park after lunch."
    )
    assert latency.word_error_rate([data["reference"]], [latency.final_transcript(stream)]) == 0
    # WhisperLive sent 30 messages; the unchanged resends are not responses
    assert len(data["messages"]) == 30 and len(stream.responses) == 16
    assert stream.error is None and len(stream.chunks) == 80


def test_recorded_emissions_have_known_answers():
    data, stream = recorded()
    send = [t for t, _ in data["chunks"]]
    recv = [t for t, _ in data["messages"]]
    emissions = latency.word_emissions(stream)
    good, morning = emissions[:2]
    # "Good morning." completed at 0.000-0.840: "Good" ends at 0.84 * 4/12 = 0.28 (chunk 2),
    # first shown by message 1 (the first pass, on the first second of audio)
    assert good.end_s == pytest.approx(0.28)
    assert good.emission_s == pytest.approx(recv[1] - send[2])
    assert morning.emission_s == pytest.approx(recv[1] - send[8])
    assert good.final_t == recv[2]  # completed in the second pass
    # the last utterance was completed by the peer's repetition rule, in the last message
    lunch = emissions[-1]
    assert lunch.text == "lunch." and lunch.final_t == recv[-1]
    # correct prefix: "How are you feeling on this lovely day?" first right in message 7
    prefix = latency.correct_prefix_emissions(stream)
    day = next(e for e in prefix if e.text == "day?")
    assert day.first_seen_t == recv[7]
    assert len(emissions) == len(prefix) == 22


def test_recorded_timeline_goes_through_the_same_level_report():
    from pathlib import Path

    from streamstt.client.bench import report as bench_report
    from streamstt.client.bench.run import BenchInput, LevelRun, StreamRun

    data, stream = recorded()
    item = BenchInput(Path(data["file"]), data["reference"], 16000, 1, (), (), False)
    level = LevelRun("whisperlive", 1, (StreamRun(0, item, 0.0, stream, "websocket"),), 14.0, None)
    report = bench_report.level_report(level, 2000.0, {})
    emitted = [e.emission_s for e in latency.word_emissions(stream)]
    assert report["emission_ms"] == latency.summary_ms(emitted)
    assert report["wer_reference"] == 0.0 and report["final_ms"]["count"] == 3
    assert report["within_budget"] == (report["emission_ms"]["p95"] < 2000.0)


# ---- the client, against a stand-in WhisperLive server -------------------------------------------
async def _stand_in_server(received: list):
    """Speaks WhisperLive's protocol: options, SERVER_READY, a completed segment per second
    of audio, close after END_OF_AUDIO."""
    from aiohttp import WSMsgType, web

    async def handle(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        options = json.loads((await ws.receive()).data)
        received.append(options)
        await ws.send_str(json.dumps({"uid": options["uid"], "message": "SERVER_READY"}))
        samples = 0
        async for message in ws:
            if message.type != WSMsgType.BINARY or message.data == b"END_OF_AUDIO":
                received.append(message.data)
                break
            samples += len(message.data) // 4
            received.append(len(message.data))
            end = samples / 16000
            done = seg(0.0, end, " whole", completed=end >= 0.5)
            await ws.send_str(json.dumps({"uid": options["uid"], "segments": [done]}))
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"ws://127.0.0.1:{port}/"


def test_the_client_speaks_whisperlive_protocol_and_records_the_exchange():
    pytest.importorskip("aiohttp")
    received: list = []
    ends = (0.2, 0.4, 0.6)
    chunks = float_chunks(np.zeros(16000, dtype=np.float32), ends)

    async def run():
        runner, url = await _stand_in_server(received)
        try:
            stream = PeerStream(url, tuple(chunks), ends, 0.01, StreamOptions(drain_idle_s=2.0))
            return await stream_to_whisperlive(stream)
        finally:
            await runner.cleanup()

    recorded_exchange = asyncio.run(run())
    options = received[0]
    assert options["use_vad"] is True and options["language"] == "en"
    assert received[1:] == [3200 * 4, 3200 * 4, 3200 * 4, b"END_OF_AUDIO"]  # float32 frames
    assert [c.audio_end_s for c in recorded_exchange.chunks] == list(ends)
    assert recorded_exchange.error is None and recorded_exchange.end_t is not None
    stream = wl.timeline(recorded_exchange)
    assert latency.final_transcript(stream) == "whole"  # the 0.6 s segment, completed


def test_bench_without_the_peer_venv_says_how_to_make_it(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from streamstt.client.cli import main

    code = main(
        [
            "bench",
            "--server",
            "127.0.0.1:1",
            "--audio",
            str(DATA / "sample.wav"),
            "--peer",
            "whisperlive",
            "--peer-venv",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    assert "benchmarks/peers/setup.sh" in capsys.readouterr().err
