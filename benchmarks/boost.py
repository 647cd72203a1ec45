"""Phrase boost (SpeechContext.boost) on a recording of rare names: how many of the phrases
the transcript has (recall) and its WER, offline (`Transcriber.transcribe`, as Recognize)
and streamed in virtual time (`benchmarks/replay.py`: a real session, decodes at once) at
each boost. The phrases are the prompt at every boost, as the server gives them.

    python benchmarks/boost.py [--boosts 0,4,8,12,20] [--file tests/data/rare_terms.wav]
        [--phrases "Okonkwo,Llanelli,..."] (default: tests/data/rare_terms.phrases)
        [--schedules 1:0,12:6] (streamed: decode after every n-th 100 ms chunk, n:phase)

A coarse schedule stands in for a busy server, where a window may end anywhere in a name.

A recall bought by boosting shows in the WER too: a phrase put where it was not said (or a
list of phrases in place of speech) raises it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from replay import replay

from streamstt.client.bench.latency import final_transcript, phrase_recall, word_error_rate
from streamstt.models.audio import decode_audio
from streamstt.models.options import OFFLINE_OPTIONS
from streamstt.models.transcriber import Transcriber
from streamstt.server import validation
from streamstt.server.stream.vad import SileroVad
from streamstt.v1 import asr_pb2

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
RARE_TERMS = ",".join((DATA / "rare_terms.phrases").read_text().splitlines())  # one a line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, default=DATA / "rare_terms.wav")
    parser.add_argument("--phrases", default=RARE_TERMS, help="comma-separated")
    parser.add_argument("--boosts", default="0,4,8,12,20")
    parser.add_argument("--schedules", default="1:0", help="every:phase, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    phrases = args.phrases.split(",")
    reference = args.file.with_suffix(".txt").read_text()
    model, vad = Transcriber.load(device="cpu"), SileroVad()
    audio = decode_audio(args.file)
    for boost in (float(b) for b in args.boosts.split(",")):
        # the hints as the server reads them from a request: prompt text, boosted phrases
        config = asr_pb2.RecognitionConfig(
            speech_contexts=[asr_pb2.SpeechContext(phrases=phrases, boost=boost)]
        )
        prompt, hot = validation.phrases(config), validation.hotwords(config)
        offline = model.transcribe(audio, OFFLINE_OPTIONS, prompt, hot).text
        row = {"boost": boost, "offline": _score(offline, reference, phrases)}
        for every, phase in (map(int, s.split(":")) for s in args.schedules.split(",")):
            timeline = asyncio.run(replay(model, vad, audio.numpy(), prompt, hot, (every, phase)))
            streamed = _score(final_transcript(timeline), reference, phrases)
            row["streamed" if every == 1 else f"streamed {every}:{phase}"] = streamed
        print(json.dumps(row), flush=True)
    return 0


def _score(text: str, reference: str, phrases: list[str]) -> dict:
    wer = 100 * word_error_rate([reference], [text])
    return {"recall": phrase_recall(text, phrases), "wer": round(wer, 1), "text": text}


if __name__ == "__main__":
    sys.exit(main())
