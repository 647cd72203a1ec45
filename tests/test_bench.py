"""`streamstt bench`: metric definitions on synthetic timelines with known answers, the
LocalAgreement baseline loop on a scripted model, and one end-to-end bench against a real
server (N=2, the sample clip at 4x real time)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from conftest import DATA

from streamstt.client.bench import baseline, latency
from streamstt.client.bench import report as bench_report
from streamstt.client.bench.latency import ChunkSend, Response, Result, StreamTimeline, Word

# ---- a synthetic stream ------------------------------------------------------------------------
# 20 chunks of 100 ms; chunk k (audio (k*0.1, (k+1)*0.1]) is sent at 10 + k*0.1.
CHUNKS = tuple(ChunkSend(10.0 + k * 0.1, round((k + 1) * 0.1, 3)) for k in range(20))


def timeline(*responses: Response, error: str | None = None) -> StreamTimeline:
    return StreamTimeline(CHUNKS, tuple(responses), audio_s=2.0, error=error)


HELLO = Word("hello", 0.0, 0.4)
WORLD = Word("world", 0.45, 0.8)
SIMPLE = timeline(
    # committed "hello" + tentative "word" (a misrecognition that the final corrects)
    Response(
        10.5,
        (
            Result(False, 0, 0.5, (HELLO,), 0.9),
            Result(False, 0, 0.5, (Word("word", 0.4, 0.5),), 0.1),
        ),
    ),
    Response(10.9, (Result(False, 0, 0.9, (HELLO, WORLD), 0.9),)),
    Response(11.2, (Result(True, 0, 1.0, (Word("Hello,", 0.0, 0.4), Word("world", 0.45, 0.85))),)),
)


# A wrong sentence start that the final corrects: "the bread" is shown, "the" is committed
# at once, "bread" later; the final says "Red bread". The reader never saw the right start
# before the final, so the correct-prefix latency of every word is the final's; difflib
# emission credits "bread" at its first sighting.
THE, BREAD = Word("the", 0.1, 0.3), Word("bread", 0.35, 0.7)
WRONG_START = timeline(
    Response(10.5, (Result(False, 0, 0.5, (THE,), 0.9), Result(False, 0, 0.5, (BREAD,), 0.1))),
    Response(10.9, (Result(False, 0, 0.9, (THE, BREAD), 0.9),)),
    Response(11.4, (Result(True, 0, 1.0, (Word("Red", 0.1, 0.3), Word("bread.", 0.35, 0.7))),)),
)


def test_correct_prefix_latency_waits_for_the_whole_start_to_be_right():
    red, bread = latency.correct_prefix_emissions(WRONG_START)
    assert red.first_seen_t == bread.first_seen_t == 11.4  # only the final shows "Red bread"
    assert red.emission_s == pytest.approx(11.4 - 10.2)  # "Red" ends at 0.3 s: chunk 2
    assert bread.emission_s == pytest.approx(11.4 - 10.6)
    assert latency.word_emissions(WRONG_START)[1].first_seen_t == 10.5  # difflib: at once
    # where the start is right, a word counts from the first response showing it after it
    hello, world = latency.correct_prefix_emissions(SIMPLE)
    assert hello.first_seen_t == 10.5 and world.first_seen_t == 10.9


def test_correct_prefix_needs_the_words_in_a_row_from_the_start():
    final = (Word("a", 0.1, 0.2), Word("b", 0.3, 0.4), Word("c", 0.5, 0.6))
    stream = timeline(
        Response(10.7, (Result(False, 0, 0.7, (final[0], Word("x", 0.3, 0.4), final[2])),)),
        Response(10.9, (Result(False, 0, 0.9, final[:2]),)),
        Response(11.3, (Result(True, 0, 1.0, final),)),
    )
    a, b, c = latency.correct_prefix_emissions(stream)
    assert (a.first_seen_t, b.first_seen_t, c.first_seen_t) == (10.7, 10.9, 11.3)


def test_committed_revision_rate_and_tentative_flicker():
    from streamstt.client.bench.stability import stability

    # committed "the" and "bread": the final keeps "bread" only; tentative "bread" (kept)
    measured = stability(WRONG_START)
    assert (measured.committed, measured.revised) == (2, 1)
    assert (measured.tentative, measured.flicker) == (1, 0)
    assert measured.revision_rate == 0.5
    # SIMPLE: committed hello, world (both kept); tentative "word" (not kept)
    measured = stability(SIMPLE)
    assert (measured.committed, measured.revised, measured.tentative, measured.flicker) == (
        2, 0, 1, 1,
    )  # fmt: skip


def test_committed_words_moved_to_the_next_utterance_by_a_cut_are_kept():
    from streamstt.client.bench.stability import stability

    stop, go = Word("stop", 0.1, 0.5), Word("go", 0.7, 0.9)
    stream = timeline(
        Response(10.9, (Result(False, 0, 1.0, (stop, go), 0.9),)),
        Response(11.2, (Result(True, 0, 0.6, (stop,)),)),
        Response(12.0, (Result(True, 1, 1.5, (go,)),)),
    )
    assert stability(stream).revised == 0
    # a committed word that a later interim of the same utterance replaced counts twice:
    # shown once as "cat", once as "hat"; the final keeps one of them
    cat, hat = Word("cat", 0.1, 0.4), Word("hat", 0.1, 0.4)
    flipped = timeline(
        Response(10.5, (Result(False, 0, 0.5, (cat,), 0.9),)),
        Response(10.8, (Result(False, 0, 0.8, (hat,), 0.9),)),
        Response(11.0, (Result(True, 0, 1.0, (hat,)),)),
    )
    measured = stability(flipped)
    assert (measured.committed, measured.revised) == (2, 1)


def test_send_time_at_picks_the_chunk_holding_the_offset():
    assert latency.send_time_at(CHUNKS, 0.05) == pytest.approx(10.0)
    assert latency.send_time_at(CHUNKS, 0.1) == pytest.approx(10.0)  # a chunk's own end
    assert latency.send_time_at(CHUNKS, 0.1004) == pytest.approx(10.0)  # within 1 ms rounding
    assert latency.send_time_at(CHUNKS, 0.15) == pytest.approx(10.1)
    assert latency.send_time_at(CHUNKS, 99.0) == pytest.approx(11.9)  # past the end: last chunk
    assert latency.send_time_at((), 1.0) is None


def test_emission_latency_counts_from_the_first_sighting():
    emissions = latency.word_emissions(SIMPLE)
    assert [e.text for e in emissions] == ["Hello,", "world"]
    hello, world = emissions
    # "hello" ends at 0.4 s (chunk 3, sent 10.3), first shown at 10.5
    assert hello.emission_s == pytest.approx(0.2)
    assert hello.first_seen_t == 10.5 and hello.final_t == 11.2
    # "world" ends at 0.85 s in the final (chunk 8, sent 10.8); the tentative "word" at 10.5 is
    # a different word, so it first appears at 10.9
    assert world.emission_s == pytest.approx(0.1)


def test_emission_alignment_survives_shifted_positions_but_not_distant_times():
    final = (Word("the", 0.1, 0.3), Word("cat", 0.3, 0.6), Word("sat", 0.6, 0.9))
    stream = timeline(
        # an extra leading word shifts positions; "cat" and "sat" still align
        Response(10.8, (Result(False, 0, 0.9, (Word("uh", 0.0, 0.1),) + final[1:]),)),
        # a hypothesis "the" whose time is far from the final's "the" is not that word
        Response(11.0, (Result(False, 0, 1.0, (Word("the", 1.5, 1.9),)),)),
        Response(11.5, (Result(True, 0, 1.0, final),)),
    )
    the, cat, sat = latency.word_emissions(stream)
    assert cat.first_seen_t == 10.8 and sat.first_seen_t == 10.8
    assert the.first_seen_t == 11.5  # only the final showed it
    assert the.emission_s == pytest.approx(11.5 - 10.2)  # ends at 0.3 s: chunk 2, sent 10.2


def test_untimed_interim_words_match_by_text_and_punctuation_is_skipped():
    stream = timeline(
        Response(10.6, (Result(False, 0, 0.7, (Word("Hi", timed=False),)),)),
        Response(11.0, (Result(True, 0, 1.0, (Word("hi", 0.0, 0.5), Word("—", 0.5, 0.5))),)),
    )
    (hi,) = latency.word_emissions(stream)  # the dash normalises to nothing: not counted
    assert hi.first_seen_t == 10.6 and hi.emission_s == pytest.approx(0.2)


def test_utterances_are_matched_separately():
    stream = timeline(
        Response(10.4, (Result(True, 0, 0.5, (Word("yes", 0.1, 0.4),)),)),
        # "yes" in utterance 1's interim is not utterance 0's word; it is utterance 1's
        Response(11.6, (Result(False, 1, 1.7, (Word("yes", 1.2, 1.6),)),)),
        Response(11.9, (Result(True, 1, 2.0, (Word("yes", 1.2, 1.6),)),)),
    )
    first, second = latency.word_emissions(stream)
    assert (first.utterance, first.first_seen_t) == (0, 10.4)
    assert (second.utterance, second.first_seen_t) == (1, 11.6)
    assert second.emission_s == pytest.approx(11.6 - 11.5)


def test_words_moved_to_the_next_utterance_by_a_cut_count_from_their_first_sighting():
    # a cut at a pause closes utterance 0 after "stop"; "go", shown in utterance 0's
    # interim at 10.9, is in utterance 1's final
    stop, go = Word("stop", 0.1, 0.5), Word("go", 0.7, 0.9)
    stream = timeline(
        Response(10.9, (Result(False, 0, 1.0, (stop, go)),)),
        Response(11.2, (Result(True, 0, 0.6, (stop,)),)),
        Response(11.6, (Result(False, 1, 1.5, (go,)),)),
        Response(12.0, (Result(True, 1, 1.5, (go,)),)),
    )
    first, second = latency.word_emissions(stream)
    assert (first.utterance, first.first_seen_t) == (0, 10.9)
    assert (second.utterance, second.first_seen_t) == (1, 10.9)
    # a closed utterance's words are not sightings of a later one's
    late = timeline(
        Response(10.4, (Result(True, 0, 0.5, (Word("go", 0.5, 0.9),)),)),
        Response(11.6, (Result(True, 1, 1.5, (Word("go", 1.1, 1.4),)),)),
    )
    assert latency.word_emissions(late)[1].first_seen_t == 11.6


def test_partial_lag_final_latency_and_time_to_first_result():
    lags = latency.partial_lags(SIMPLE)
    # one value per interim response, measured at its result end time
    assert [p.audio_s for p in lags] == [0.5, 0.9]
    assert [p.lag_s for p in lags] == pytest.approx([10.5 - 10.4, 10.9 - 10.8])
    # the final's last word ends at 0.85 s (chunk 8, sent 10.8)
    assert latency.final_latencies(SIMPLE) == pytest.approx([11.2 - 10.8])
    assert latency.time_to_first_result(SIMPLE) == pytest.approx(0.5)
    # a word-less final falls back to its result end time
    bare = timeline(Response(11.0, (Result(True, 0, 0.6, ()),)))
    assert latency.final_latencies(bare) == pytest.approx([11.0 - 10.5])
    assert latency.time_to_first_result(bare) is None
    assert latency.final_transcript(SIMPLE) == "Hello, world"


def test_lag_growth_compares_the_last_third_with_the_first():
    def lags(pairs):
        return [latency.PartialLag(a, lag) for a, lag in pairs]

    steady = latency.lag_growth(lags([(1, 0.2), (2, 0.2), (5, 0.3), (7, 0.6), (9, 0.6)]), 9.0)
    assert (steady.first_s, steady.last_s, steady.grew) == (0.2, 0.6, False)  # 0.6 <= 0.6
    growing = latency.lag_growth(lags([(1, 0.2), (3, 0.2), (8, 0.65)]), 9.0)
    assert growing.grew is True
    assert latency.lag_growth(lags([(1, 0.2), (5, 9.0)]), 9.0).grew is None  # no last third
    assert latency.lag_growth([], 9.0) == latency.LagGrowth(None, None, None)


def test_summary_percentiles_and_empty_input():
    stats = latency.summary_ms([k / 100 for k in range(11)])  # 0, 10, ..., 100 ms
    assert stats == {
        "count": 11,
        "mean": 50.0,
        "p50": 50.0,
        "p90": 90.0,
        "p95": 95.0,
        "p99": 99.0,
        "max": 100.0,
    }
    assert latency.summary_ms([]) == {
        "count": 0,
        "mean": None,
        "p50": None,
        "p90": None,
        "p95": None,
        "p99": None,
        "max": None,
    }


def test_budget_verdict_and_max_streams_rule():
    assert latency.level_verdict(1999.9, 0, False, 2000).within_budget
    assert not latency.level_verdict(2000.0, 0, False, 2000).within_budget  # strictly below
    assert "error" in latency.level_verdict(100, 1, False, 2000).reason
    assert "lag" in latency.level_verdict(100, 0, True, 2000).reason
    assert not latency.level_verdict(None, 0, False, 2000).within_budget
    ok, over = latency.Verdict(True, ""), latency.Verdict(False, "p95")
    assert latency.max_streams_within_budget({1: ok, 2: ok, 4: over}) == 2
    assert latency.max_streams_within_budget({1: over, 2: ok, 4: over}) == 2
    assert latency.max_streams_within_budget({1: over}) is None


def test_wer_normalises_and_skips_empty_references():
    assert latency.word_error_rate(["Real-time, speech!"], ["real time speech"]) == 0.0
    assert latency.word_error_rate(["a b c d"], ["a b x d"]) == pytest.approx(0.25)
    assert latency.word_error_rate([""], ["noise"]) is None


def test_phrase_recall_counts_whole_words_in_any_case():
    text = "Doctor okonkwo met Nguyens in Oaxaca."
    assert latency.phrase_recall(text, ["Okonkwo", "Nguyen", "Oaxaca", "Pfizer"]) == 2
    assert latency.phrase_recall("a C++ talk on C#", ["C++", "C#", "Java"]) == 2


def test_paired_wer_scores_only_the_streams_every_system_completed():
    def stream(index, file, transcript, error=None):
        return {
            "index": index,
            "file": file,
            "transcript": transcript,
            "error": error,
            "truncated": False,
        }

    files = [
        {"path": "a.wav", "reference": "one two three four"},
        {"path": "b.wav", "reference": "five six"},
    ]
    ours = [
        {"streams": 1, "per_stream": [stream(0, "a.wav", "one two three four")]},
        {
            "streams": 2,
            "per_stream": [
                stream(0, "a.wav", "one two three four"),
                stream(1, "b.wav", "", "RESOURCE_EXHAUSTED"),
            ],
        },
    ]
    theirs = [
        {"streams": 1, "per_stream": [stream(0, "a.wav", "one two tree four")]},
        {
            "streams": 2,
            "per_stream": [
                stream(0, "a.wav", "one two three four"),
                stream(1, "b.wav", "five sex"),
            ],
        },
    ]
    report = {
        "files": files,
        "systems": {"streamstt": {"levels": ours}, "baseline": {"levels": theirs}},
    }
    # b.wav at N=2 was refused by one system: left out of both scores, not counted as errors
    assert bench_report.paired_wer(report) == {
        "streams": 2,
        "reference_words": 8,
        "wer": {"streamstt": 0.0, "baseline": 0.125},
    }
    assert (
        bench_report.paired_wer({"files": files, "systems": {"streamstt": {"levels": ours}}})
        is None
    )


# ---- the baseline's LocalAgreement-2 loop, on a scripted model ---------------------------------


def tw(start: float, end: float, text: str):
    return baseline.TimedWord(start, end, text)


def test_local_agreement_commits_the_common_prefix():
    agreement = baseline.LocalAgreement()
    agreement.insert([tw(0, 0.4, "the"), tw(0.4, 0.8, "cap")])
    assert agreement.flush() == []  # nothing to agree with yet
    agreement.insert([tw(0, 0.4, "The"), tw(0.4, 0.8, "cat"), tw(0.8, 1.2, "sat")])
    assert [w.text for w in agreement.flush()] == ["The"]  # "cap" vs "cat": stop there
    # the model repeats the committed "the"; it is dropped, then "cat sat" agrees
    agreement.insert([tw(0.05, 0.4, "the"), tw(0.4, 0.8, "cat"), tw(0.8, 1.2, "sat")])
    assert [w.text for w in agreement.flush()] == ["cat", "sat"]
    assert agreement.uncommitted() == []


class ScriptedModel:
    """Says 'w<i>' for every whole 0.5 s of the buffer, the way Whisper would re-read it."""

    def __init__(self) -> None:
        self.prompts: list[str | None] = []

    def transcribe(self, audio, initial_prompt=None, **kwargs):
        self.prompts.append(initial_prompt)
        # The test audio's sample values encode their own time (t / 1000), so the buffer's
        # start is known; words are numbered by absolute position, as a real model would
        # re-read the same speech.
        first = round(float(audio[0]) * 1000 * 2)  # index of the buffer's first 0.5 s
        words = [
            SimpleNamespace(start=k * 0.5, end=(k + 1) * 0.5, word=f" w{first + k}")
            for k in range(int(len(audio) / 16000 / 0.5))
        ]
        return [SimpleNamespace(no_speech_prob=0.0, words=words)], None


def test_baseline_stream_commits_agreed_words_and_flushes_the_rest():
    import numpy as np

    seconds = 4.0
    samples = np.arange(int(seconds * 16000), dtype=np.float32) / 16000 / 1000  # t/1000
    model = ScriptedModel()
    config = baseline.BaselineConfig(min_chunk_s=1.0, trim_s=2.0)
    stream = baseline.run_stream(model, samples, config, chunk_s=0.1, pace=10.0, start_at=0.0)
    assert stream.error is None and len(stream.chunks) == 40
    assert latency.final_transcript(stream) == " ".join(f"w{k}" for k in range(8))
    # every word is output once, at or after the audio holding its end was sent
    emissions = latency.word_emissions(stream)
    assert [e.text for e in emissions] == [f"w{k}" for k in range(8)]
    assert all(e.emission_s >= 0 for e in emissions)
    # the buffer was trimmed past 2 s, and committed text that left it became the prompt
    assert any(p for p in model.prompts)


# ---- end to end ---------------------------------------------------------------------------------
def test_bench_end_to_end_two_streams(make_server, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from streamstt.client.cli import main

    # Admission control off: at 4x real time on a small CPU the server would (rightly) refuse
    # the second stream once earlier tests taught it the model's cost; this test is about the
    # harness, so both streams must run.
    server = make_server(max_streams=4, admission_utilization=1e6)

    out = tmp_path / "bench"
    code = main(
        [
            "bench",
            "--server",
            server.target,
            "--audio",
            str(DATA / "sample.wav"),
            "--streams",
            "2",
            "--pace",
            "4",
            "--stagger-ms",
            "150",
            "--settle-s",
            "0",
            "--baseline",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "max streams within budget" in table and "baseline" in table
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == "streamstt-bench/1"
    for system in ("streamstt", "baseline"):
        (level,) = report["systems"][system]["levels"]
        assert level["streams"] == 2 and level["ok"] == 2 and level["errors"] == {}
        assert level["emission_ms"]["count"] >= 20  # two streams of 14 words
        assert level["wer_reference"] is not None and level["wer_reference"] < 0.3
        assert [s["start_offset_s"] for s in level["per_stream"]] == [0.0, 0.15]
    streamstt = report["systems"]["streamstt"]["levels"][0]
    assert streamstt["partial_lag_ms"]["count"] > 0 and streamstt["final_ms"]["count"] >= 2
    for name in (
        "latency_cdf.png",
        "p95_emission_vs_streams.png",
        "timeline_streamstt.png",
        "timeline_baseline.png",
    ):
        assert (out / name).stat().st_size > 10_000


def test_committed_words_are_held_against_the_reference():
    from streamstt.client.bench.stability import correctness

    # utterance 0 commits "the", "red" (the reference says "the bread"); the final is forced
    # to keep them, so no revision shows, but one committed word is wrong. "rose" was
    # committed past the cut at 0.6 s and is counted in utterance 1, once.
    the, red, rose = Word("The", 0.1, 0.3), Word("red", 0.3, 0.6), Word("rose", 0.7, 1.0)
    stream = timeline(
        Response(10.5, (Result(False, 0, 0.5, (the,), 0.9),)),
        Response(10.9, (Result(False, 0, 0.9, (the, red, rose), 0.9),)),
        Response(11.0, (Result(True, 0, 0.6, (the, red)),)),
        Response(11.4, (Result(False, 1, 1.1, (rose,), 0.9),)),
        Response(11.6, (Result(True, 1, 1.1, (rose, Word("early.", 1.1, 1.4))),)),
    )
    measured = correctness(stream, "The bread rose early.")
    assert (measured.committed, measured.committed_wrong) == (3, 1)
    assert (measured.final, measured.final_wrong) == (4, 1)
    assert measured.committed_wrong_rate == pytest.approx(1 / 3)
    assert correctness(timeline(), "anything").committed_wrong_rate is None


def test_progress_never_counts_past_its_total():
    import warnings

    from streamstt.client.bench.run import Progress

    progress = Progress(0.3, "audio")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tqdm warns when its count passes the total
        for _ in range(4):
            progress.update(0.1)
    progress.close()
    assert progress.done == pytest.approx(0.3)
