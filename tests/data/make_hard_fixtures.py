"""Make the hard-audio fixtures in tests/data/hard/: read speech in noise, babble, telephony
and reverberation, and a long-form recording with pauses. Deterministic: fixed texts, voices
and seeds (numpy seed 0; sox -R), so two runs with the same tool versions write the same files.

    python tests/data/make_hard_fixtures.py

Needs festival with the HTS voice cmu_us_slt_arctic_hts (text2wave), flite (voices slt, rms,
awb), espeak-ng and sox on PATH, and numpy + soundfile.
Every FILE.flac gets FILE.txt, its exact text. Files:

  read_clean       passage A read by festival's HTS voice (US female), sentences joined with
                   0.3 s pauses (shorter than silence_ms: continuous reading), 16 kHz, 44.5 s
  read_white10/5   read_clean + white Gaussian noise at 10 / 5 dB SNR
  read_babble10/5  read_clean + babble (four espeak-ng voices reading other texts at once,
                   offset, summed) at 10 / 5 dB SNR
  read_phone       read_clean band-limited to 300-3400 Hz, 8 kHz, G.711 mu-law
  read_reverb      read_clean through sox reverb (reverberance 60 %, room scale 100 %)
  longform         passages A, B, C, D (HTS, flite rms, slt, awb), every sentence followed by
                   2 s of silence (about 3 minutes)

SNR is the ratio of speech power (over the samples of voiced 20 ms frames, those within 30 dB
of the loudest) to noise power over the whole file.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000
OUT = Path(__file__).resolve().parent / "hard"
SENTENCE_PAUSE_S = 0.3  # between the sentences of a read passage
LONGFORM_PAUSE_S = 2.0  # after every sentence of the long-form file
PEAK = 10 ** (-3 / 20)  # -3 dBFS

PASSAGE_A = [
    "The train left the station a few minutes after seven.",
    "Most of the passengers were still half asleep, holding paper cups of coffee and looking "
    "out at the grey fields.",
    "A woman near the window was reading a thick book about gardens, and a young man across "
    "the aisle was trying to finish a letter before the first stop.",
    "Outside, the river ran beside the tracks for a while, wide and slow, with small boats "
    "tied along the bank.",
    "When the sun came through the clouds, the whole carriage seemed to wake up at once.",
    "People folded their newspapers, children pressed their faces to the glass, and the "
    "conductor walked along the rows, checking tickets and wishing everyone a good morning.",
    "By the time the train reached the city, the rain had stopped and the streets were shining.",
]
PASSAGE_B = [
    "On Saturday the market opens early.",
    "Farmers arrive before dawn with crates of apples, potatoes and fresh eggs, and they set "
    "up their tables under striped awnings.",
    "By the middle of the morning the square is full of people.",
    "Some come with long shopping lists, others just to walk around and taste the cheese.",
    "A man with a guitar plays old songs near the fountain, and a small dog sits beside him "
    "as if it knew every word.",
    "At noon the bakers sell the last of their bread at half price, and the crowd slowly "
    "drifts away toward the cafes.",
]
PASSAGE_C = [
    "Learning to swim as an adult is harder than it looks.",
    "The water feels heavy and strange, and every instinct tells you to keep your head up.",
    "A good teacher starts slowly, with breathing and floating, long before anyone tries to "
    "move across the pool.",
    "After a few weeks, most people discover that they can relax, and once they relax, the "
    "water begins to carry them.",
    "The first full length of the pool, without stopping and without panic, is a moment that "
    "many swimmers remember for years.",
]
PASSAGE_D = [
    "The old house at the end of the lane had been empty for years.",
    "Its garden was wild, full of tall grass and roses that climbed over the walls.",
    "One spring a family with three children moved in and began to mend the roof.",
    "They painted the door a bright yellow and planted beans along the fence.",
    "By the summer the neighbours had stopped calling it the empty house, and started "
    "calling it the yellow one.",
]
BABBLE = [  # espeak-ng voice, words a minute, text
    ("en-us", 160, "We could meet at the corner and walk to the office together tomorrow."),
    ("en-gb", 150, "The kitchen needs a new light, and the tap in the bathroom is dripping."),
    ("en-us+f3", 170, "Did you see the match last night? Nobody expected the second goal."),
    ("en-gb-scotland", 155, "Bring the blue folder and the spare keys when you come down."),
]


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def _read(path: Path) -> np.ndarray:
    samples, rate = sf.read(path, dtype="float64")
    assert rate == RATE and samples.ndim == 1, (path, rate, samples.shape)
    return samples


def speak(voice: str, text: str, tmp: Path) -> np.ndarray:
    """16 kHz mono speech, trimmed to its voiced part. `voice`: "hts" (festival's HTS voice
    cmu_us_slt_arctic_hts) or a flite voice."""
    raw, out = tmp / "raw.wav", tmp / "speech.wav"
    if voice == "hts":
        (tmp / "text.txt").write_text(text)
        _run("text2wave", "-eval", "(voice_cmu_us_slt_arctic_hts)", str(tmp / "text.txt"),
             "-o", str(raw))  # fmt: skip
    else:
        _run("flite", "-voice", voice, "-t", text, "-o", str(raw))
    trim = ["silence", "1", "0.02", "0.5%", "reverse"]  # from the start, then from the end
    _run("sox", "-R", "-D", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out), *trim * 2)
    return _read(out)


def espeak(voice: str, wpm: int, text: str, tmp: Path) -> np.ndarray:
    raw, out = tmp / "raw.wav", tmp / "speech.wav"
    _run("espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), text)
    _run("sox", "-R", "-D", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out))
    return _read(out)


def passage(voice: str, sentences: list[str], pause_s: float, tmp: Path) -> np.ndarray:
    gap = np.zeros(int(pause_s * RATE))
    pieces = [part for s in sentences for part in (speak(voice, s, tmp), gap)]
    return _normalise(np.concatenate(pieces))


def _normalise(x: np.ndarray) -> np.ndarray:
    return x * (PEAK / max(1e-9, np.abs(x).max()))


def speech_power(x: np.ndarray) -> float:
    frame = RATE // 50
    frames = x[: len(x) // frame * frame].reshape(-1, frame)
    power = (frames**2).mean(axis=1)
    voiced = power > power.max() * 10 ** (-30 / 10)
    return float(power[voiced].mean())


def mix(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    noise = np.resize(noise, len(speech))
    gain = np.sqrt(speech_power(speech) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return _normalise(speech + gain * noise)


def babble(length: int, tmp: Path) -> np.ndarray:
    """Four espeak-ng talkers at once, each looped and offset so they never pause together."""
    out = np.zeros(length)
    for k, (voice, wpm, text) in enumerate(BABBLE):
        talker = espeak(voice, wpm, text, tmp)
        talker = np.roll(np.resize(talker, length), k * RATE // 3)
        out += talker / np.sqrt(np.mean(talker**2))
    return out


def telephone(speech: np.ndarray, tmp: Path, narrow: Path | None = None) -> Path:
    """`speech` band-limited to 300-3400 Hz as 8 kHz G.711 mu-law, written to `narrow`
    (read_phone.wav in OUT unless given)."""
    wide, narrow = tmp / "wide.wav", narrow or OUT / "read_phone.wav"
    sf.write(wide, speech, RATE, subtype="PCM_16")
    _run("sox", "-R", "-D", str(wide), "-r", "8000", "-e", "u-law", "-b", "8", str(narrow),
         "sinc", "300-3400")  # fmt: skip
    return narrow


def reverb(speech: np.ndarray, tmp: Path) -> np.ndarray:
    dry, wet = tmp / "dry.wav", tmp / "wet.wav"
    sf.write(dry, speech, RATE, subtype="PCM_16")
    _run("sox", "-R", "-D", str(dry), str(wet), "reverb", "60", "50", "100", "remix", "1")
    return _normalise(_read(wet))


def write(name: str, audio: np.ndarray, text: str) -> None:
    sf.write(OUT / f"{name}.flac", audio, RATE, subtype="PCM_16")
    (OUT / f"{name}.txt").write_text(text + "\n")


def main() -> None:
    for tool in ("text2wave", "flite", "espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SystemExit(
                f"error: {tool} not found (apt-get install festival festvox-us-slt-hts flite "
                "espeak-ng sox)"
            )
    OUT.mkdir(exist_ok=True)
    generator = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        clean = passage("hts", PASSAGE_A, SENTENCE_PAUSE_S, tmp)
        text_a = " ".join(PASSAGE_A)
        write("read_clean", clean, text_a)
        white = generator.standard_normal(len(clean))
        crowd = babble(len(clean), tmp)
        for snr in (10, 5):
            write(f"read_white{snr}", mix(clean, white, snr), text_a)
            write(f"read_babble{snr}", mix(clean, crowd, snr), text_a)
        (OUT / "read_phone.txt").write_text(text_a + "\n")
        telephone(clean, tmp)
        write("read_reverb", reverb(clean, tmp), text_a)
        parts = [("hts", PASSAGE_A), ("rms", PASSAGE_B), ("slt", PASSAGE_C), ("awb", PASSAGE_D)]
        longform = np.concatenate([passage(v, p, LONGFORM_PAUSE_S, tmp) for v, p in parts])
        write("longform", longform, " ".join(s for _, p in parts for s in p))


if __name__ == "__main__":
    main()
