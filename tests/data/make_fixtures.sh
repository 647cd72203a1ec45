#!/usr/bin/env bash
# make_fixtures.sh - regenerate the audio test fixtures in tests/data/.
#
# Usage:   bash tests/data/make_fixtures.sh      (from anywhere; writes next to this script)
# Needs:   flite (with the rms, slt and awb voices built in), festival with the
#          festvox-us-slt-hts voice (text2wave), espeak-ng (one hard-case clip), sox (with
#          FLAC and Ogg Vorbis support), python3 with numpy and soundfile; ffmpeg
#          (libmp3lame) for the optional MP3 variant.
#
# Idempotent: every run overwrites the same files with the same content. flite, festival
# (HTS) and espeak-ng are deterministic for a given version (the versions used are recorded
# in README.md), sox runs with -R (repeatable: fixed seeds, fixed Ogg serial) and -D (no
# dither, so silence stays exactly zero), and the noise is drawn from numpy with seed 0.
#
# Unless stated otherwise every file is 16 kHz, mono, 16-bit PCM WAV. Speech is synthesised
# by flite (16 kHz), festival's HTS voice (32 kHz) or espeak-ng (22050 Hz), converted with
# `sox rate -v` and normalised to -3 dBFS peak. Every speech clip NAME.wav has NAME.txt
# beside it: the exact text spoken, on one line, for WER checks. Sentences are ordinary
# everyday English with common words only - no numbers, names or abbreviations (Whisper
# writes numbers as digits) and no homophone traps.
#
# Speech clips (transcription accuracy; Whisper tiny.en gets all of these right):
#   en_us_male.wav        flite voice rms (US male), default rate, two sentences.
#   en_us_female.wav      flite voice slt (US female), default rate, two sentences.
#   en_scottish_fast.wav  flite voice awb (Scottish male), faster: duration_stretch=0.8
#                         (80 % of the normal duration), one long sentence.
#   en_hts_female.wav     festival, HTS voice cmu_us_slt_arctic_hts (US female),
#                         normal speed.
#   sample.wav            flite rms, a short demo sentence.
#   profane.wav           flite rms, a sentence with three listed profanities (the
#                         profanity_filter test).
#   rare_terms.wav        flite slt, rare names and terms in sentences (the boost test).
#
# Hard case (tests must NOT assert WER on it):
#   espeak_hard.wav       espeak-ng voice en-us, default speed (175 wpm). The robotic voice
#                         is often mis-heard by Whisper tiny.en.
#
# Segmentation / endpointing:
#   two_utterances.wav  utterance A (flite rms), exactly 1.5 s of digital silence,
#                       utterance B (flite slt), 0.5 s of digital silence. Each utterance
#                       is trimmed to its speech (first/last sample with |x| > 0.01), so
#                       the gap between them is exactly 1.5 s. two_utterances.json gives
#                       sample-accurate start/end seconds and the text of each utterance,
#                       measured on the written file. two_utterances.txt holds both
#                       sentences separated by a space.
#
# Long stream (streaming / latency tests):
#   long_read.wav       ~31 s of continuous read text, flite slt, with the short pauses
#                       flite puts at sentence ends.
#
# Non-speech (no .txt; the service should produce no text, or at least no words):
#   silence.wav         3 s of digital zeros.
#   noise.wav           3 s of white Gaussian noise, -30 dBFS RMS (numpy seed 0).
#   hum.wav             3 s of 50 Hz mains hum with harmonics 100/150/200/250 Hz,
#                       -25 dBFS RMS.
#   (dBFS RMS here means 20*log10(rms) with full scale = 1.0.)
#
# Format variants of en_us_male.wav (decoder / resampling tests; same words, see
# en_us_male.txt):
#   en_us_male_44k_stereo.flac  44.1 kHz, 2 identical channels, FLAC 16-bit.
#   en_us_male_8k.wav           8 kHz mono 16-bit WAV.
#   en_us_male.ogg              16 kHz mono Ogg Vorbis (sox, quality 3).
#   en_us_male.mp3              16 kHz mono MP3, 32 kbit/s CBR. Made with sox if its build
#                               has mp3 support, else with ffmpeg/libmp3lame; skipped (with
#                               a message) if neither is available.

set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$DIR"

for tool in flite text2wave espeak-ng sox python3; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found" >&2; exit 1; }
done
python3 -c 'import numpy, soundfile' 2>/dev/null \
    || { echo "error: python3 needs numpy and soundfile (pip install numpy soundfile)" >&2; exit 1; }
FLITE_VOICES="$(flite -lv 2>&1 || true)"
for v in rms slt awb; do
    grep -qw "$v" <<<"$FLITE_VOICES" || { echo "error: flite voice $v not available" >&2; exit 1; }
done

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Files from earlier versions of this script that no longer exist.
rm -f en_gb_female.wav en_gb_female.txt en_us_fast.wav en_us_fast.txt en_slow.wav en_slow.txt

echo "flite: $(flite --version 2>&1 | grep -i version | sed 's/^ *//')"
echo "festival: $(festival --version 2>&1)"
echo "espeak-ng: $(espeak-ng --version)"
echo "$(sox --version)"

SR=16000
SOX=(sox -R -D)                       # repeatable, no dither
OUTFMT=(-r "$SR" -c 1 -b 16 -e signed-integer)

# synth ENGINE VOICE RATE TEXT OUT.wav : TTS -> 16 kHz mono 16-bit, -3 dBFS peak.
#   ENGINE flite     VOICE = flite voice (rms, slt, awb), RATE = duration_stretch (1 = normal,
#                    < 1 = faster)
#   ENGINE festival  VOICE = festival voice function, e.g. voice_cmu_us_slt_arctic_hts;
#                    RATE unused ("-")
#   ENGINE espeak    VOICE = espeak-ng voice, RATE = words per minute
synth() {
    local engine="$1" voice="$2" rate="$3" text="$4" out="$5"
    case "$engine" in
        flite)
            flite -voice "$voice" --setf duration_stretch="$rate" -t "$text" -o "$TMP/raw.wav" ;;
        festival)
            printf '%s\n' "$text" > "$TMP/text.txt"
            text2wave -eval "($voice)" "$TMP/text.txt" -o "$TMP/raw.wav" ;;
        espeak)
            espeak-ng -v "$voice" -s "$rate" -w "$TMP/raw.wav" "$text" ;;
        *)
            echo "error: unknown engine $engine" >&2; exit 1 ;;
    esac
    "${SOX[@]}" "$TMP/raw.wav" "${OUTFMT[@]}" "$out" remix 1 rate -v "$SR" norm -3
}

# speech NAME ENGINE VOICE RATE TEXT : NAME.wav + NAME.txt
speech() {
    local name="$1" engine="$2" voice="$3" rate="$4" text="$5"
    printf '%s\n' "$text" > "$name.txt"
    synth "$engine" "$voice" "$rate" "$text" "$name.wav"
}

# ---------------------------------------------------------------- speech clips
speech en_us_male flite rms 1 \
    "She opened the window and let the fresh air into the room. After breakfast, we walked down to the river."

speech en_us_female flite slt 1 \
    "The children played in the garden until the sun went down. Then the whole family sat at the table and shared a warm dinner."

speech en_scottish_fast flite awb 0.8 \
    "Please turn off the lights when you leave the office this evening, because the baby is asleep upstairs."

speech en_hts_female festival voice_cmu_us_slt_arctic_hts - \
    "Reading a good book is a wonderful way to spend a rainy afternoon."

speech sample flite rms 1 \
    "Streaming speech recognition turns your voice into text while you are still talking."

speech espeak_hard espeak en-us 175 \
    "My brother bought a new bicycle last week, and now he rides it to work every day."

# profanity_filter test: words on the list in an ordinary sentence
speech profane flite rms 1 \
    "This damn printer is a piece of shit, and the man who sold it to me is a bastard."

# SpeechContext.boost test: rare names and terms in sentences (the names: rare_terms.phrases)
speech rare_terms flite slt 1 \
    "Doctor Okonkwo flew to Llanelli to meet Siobhan Nguyen. They discussed Kubernetes, the Zeebrugge ferry, and a new Pfizer trial. Later, Saoirse ordered quinoa at the Oaxaca cafe in Reykjavik."

speech long_read flite slt 1 \
    "In the morning, the small town wakes up slowly. The baker opens his shop before sunrise, and the smell of warm bread drifts down the empty street. A little later, children walk to school, talking and laughing as they go. In the old library on the corner, the rooms are quiet and warm, and the shelves are full of books. In the afternoon, the park fills with families. Dogs chase balls across the green grass, and friends sit together on the benches under the tall trees. In the evening, the lights go on in the windows, and the town grows calm again."

# ---------------------------------------------------------------- two utterances
TEXT_A="Good morning, how are you feeling on this lovely day?"
TEXT_B="I think we should take a walk in the park after lunch."
printf '%s %s\n' "$TEXT_A" "$TEXT_B" > two_utterances.txt
synth flite rms 1 "$TEXT_A" "$TMP/utt_a.wav"
synth flite slt 1 "$TEXT_B" "$TMP/utt_b.wav"

python3 - "$TMP/utt_a.wav" "$TMP/utt_b.wav" "$TEXT_A" "$TEXT_B" <<'PY'
import json
import sys

import numpy as np
import soundfile as sf

path_a, path_b, text_a, text_b = sys.argv[1:5]
SR = 16000
THRESH = 0.01          # |x| > 0.01 of full scale counts as speech
GAP_S, TAIL_S = 1.5, 0.5


def trim(path):
    x, sr = sf.read(path, dtype="int16")
    assert sr == SR and x.ndim == 1
    idx = np.flatnonzero(np.abs(x.astype(np.float64) / 32768.0) > THRESH)
    return x[idx[0] : idx[-1] + 1]


a, b = trim(path_a), trim(path_b)
gap = np.zeros(int(round(GAP_S * SR)), np.int16)
tail = np.zeros(int(round(TAIL_S * SR)), np.int16)
sf.write("two_utterances.wav", np.concatenate([a, gap, b, tail]), SR, subtype="PCM_16")

# Measure on the written file: speech regions are the runs of |x| > THRESH, split at the
# 1.5 s digital-silence gap.
y, _ = sf.read("two_utterances.wav", dtype="int16")
loud = np.flatnonzero(np.abs(y.astype(np.float64) / 32768.0) > THRESH)
split = np.flatnonzero(np.diff(loud) > GAP_S * SR * 0.9)
assert len(split) == 1, split
regions = [(loud[0], loud[split[0]]), (loud[split[0] + 1], loud[-1])]
utts = [
    {
        "text": text,
        "start_s": round(int(s) / SR, 6),
        "end_s": round((int(e) + 1) / SR, 6),     # end is exclusive: one past the last sample
        "start_sample": int(s),
        "end_sample": int(e) + 1,
    }
    for (s, e), text in zip(regions, (text_a, text_b))
]
assert utts[1]["start_sample"] - utts[0]["end_sample"] == int(GAP_S * SR)
meta = {
    "sample_rate": SR,
    "num_samples": int(len(y)),
    "duration_s": round(len(y) / SR, 6),
    "threshold": THRESH,
    "gap_s": GAP_S,
    "utterances": utts,
}
with open("two_utterances.json", "w") as f:
    json.dump(meta, f, indent=2)
    f.write("\n")
PY

# ---------------------------------------------------------------- non-speech
"${SOX[@]}" -n "${OUTFMT[@]}" silence.wav trim 0 3

python3 - <<'PY'
import numpy as np
import soundfile as sf

SR, DUR = 16000, 3.0
n = int(SR * DUR)


def write(name, x, dbfs):
    x = x / np.sqrt(np.mean(x**2)) * 10 ** (dbfs / 20)
    q = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
    sf.write(name, q, SR, subtype="PCM_16")


rng = np.random.default_rng(0)
write("noise.wav", rng.standard_normal(n), -30.0)

t = np.arange(n) / SR
hum = sum(a * np.sin(2 * np.pi * 50 * k * t) for k, a in ((1, 1.0), (2, 0.5), (3, 0.3), (4, 0.2), (5, 0.1)))
write("hum.wav", hum, -25.0)
PY

# ---------------------------------------------------------------- format variants
"${SOX[@]}" en_us_male.wav -r 44100 -c 2 -b 16 en_us_male_44k_stereo.flac rate -v 44100 remix 1 1
"${SOX[@]}" en_us_male.wav -r 8000 -c 1 -b 16 -e signed-integer en_us_male_8k.wav rate -v 8000
"${SOX[@]}" en_us_male.wav -C 3 en_us_male.ogg

# Capture the listings first: `cmd | grep -q` can SIGPIPE cmd and fail under pipefail.
SOX_FORMATS="$(sox -h 2>&1 || true)"
FFMPEG_ENCODERS="$(ffmpeg -hide_banner -encoders 2>/dev/null || true)"
if grep -qiw mp3 <<<"$SOX_FORMATS"; then
    "${SOX[@]}" en_us_male.wav -C 32 en_us_male.mp3
elif grep -q libmp3lame <<<"$FFMPEG_ENCODERS"; then
    # -bitexact and no metadata: no encoder version string, so the bytes are repeatable.
    ffmpeg -nostdin -hide_banner -loglevel error -y -i en_us_male.wav \
        -map_metadata -1 -fflags +bitexact -flags:a +bitexact \
        -c:a libmp3lame -b:a 32k -ar "$SR" -ac 1 -id3v2_version 0 en_us_male.mp3
else
    echo "note: no MP3 encoder (sox without mp3, no ffmpeg/libmp3lame) - skipping en_us_male.mp3" >&2
    rm -f en_us_male.mp3
fi

echo "fixtures written to $DIR:"
for f in *.wav *.flac *.ogg *.mp3; do
    if [ -e "$f" ]; then
        printf '  %-28s %8.3f s  %s\n' "$f" "$(soxi -D "$f" 2>/dev/null \
            || ffprobe -v error -show_entries format=duration -of csv=p=0 "$f" 2>/dev/null || echo 0)" "$(du -h "$f" | cut -f1)"
    fi
done
