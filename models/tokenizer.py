"""Whisper's byte-level BPE tokenizer and its special tokens.

The BPE itself is done by Hugging Face `tokenizers` from the `tokenizer.json` that ships beside
the weights (a maintained Rust implementation; hand-written BPE merges would only add bugs).
Special-token ids are looked up by name, never hard-coded, so English-only and multilingual
vocabularies both work.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from .checkpoints import ModelLoadError

TIME_PRECISION = 0.02  # seconds per timestamp token step
# Characters that belong to the previous word when words are split from tokens.
PUNCTUATION = set("\"'“¿([{-.,!?:;)]}」。、，？！：”")


@dataclass(frozen=True)
class SpecialTokens:
    eot: int  # <|endoftext|>: end of the transcript
    sot: int  # <|startoftranscript|>
    sot_prev: int  # <|startofprev|>: the prompt (previous text) follows
    no_timestamps: int  # <|notimestamps|>
    no_speech: int  # <|nospeech|> or <|nocaptions|>: its probability says "no speech here"
    timestamp_begin: int  # <|0.00|>; timestamp k is timestamp_begin + k
    transcribe: int
    translate: int
    sot_lm: int
    english: int | None  # <|en|> for multilingual vocabularies, None for .en models


class WhisperTokenizer:
    """Encodes prompts and decodes token ids; knows Whisper's special tokens."""

    def __init__(self, tokenizer: Tokenizer, multilingual: bool) -> None:
        self._tok = tokenizer
        self.multilingual = multilingual
        vocab = tokenizer.get_vocab(with_added_tokens=True)

        def find(*names: str) -> int:
            for name in names:
                if name in vocab:
                    return vocab[name]
            raise ModelLoadError(f"tokenizer.json has none of the special tokens {names}")

        no_timestamps = find("<|notimestamps|>")
        self.special = SpecialTokens(
            eot=find("<|endoftext|>"),
            sot=find("<|startoftranscript|>"),
            sot_prev=find("<|startofprev|>"),
            no_timestamps=no_timestamps,
            no_speech=find("<|nospeech|>", "<|nocaptions|>"),
            timestamp_begin=no_timestamps + 1,
            transcribe=find("<|transcribe|>"),
            translate=find("<|translate|>"),
            sot_lm=find("<|startoflm|>"),
            english=vocab.get("<|en|>") if multilingual else None,
        )

    @classmethod
    def from_file(cls, path: Path, multilingual: bool) -> WhisperTokenizer:
        try:
            return cls(Tokenizer.from_file(str(path)), multilingual)
        except Exception as exc:
            if isinstance(exc, ModelLoadError):
                raise
            raise ModelLoadError(f"{path}: not a readable tokenizer.json ({exc})") from exc

    @property
    def sot_sequence(self) -> list[int]:
        """The tokens that open every transcript (English transcription)."""
        s = self.special
        if self.multilingual:
            return [s.sot, s.english, s.transcribe]
        return [s.sot]

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_text(self, text: str | Sequence[int]) -> list[int]:
        """Tokens of text that follows other text (a prompt, a prefix): it gets the leading
        space words carry in Whisper's vocabulary. Token ids pass through as they are."""
        if not isinstance(text, str):
            return list(text)
        return self.encode(" " + text.strip()) if text.strip() else []

    def decode(self, ids: list[int]) -> str:
        """Text of the ordinary (non-special) tokens in `ids`."""
        text_ids = [i for i in ids if i < self.special.eot]
        return self._tok.decode(text_ids, skip_special_tokens=False)

    def is_timestamp(self, token: int) -> bool:
        return token >= self.special.timestamp_begin

    def timestamp_seconds(self, token: int) -> float:
        return (token - self.special.timestamp_begin) * TIME_PRECISION

    def non_speech_tokens(self) -> list[int]:
        """Tokens for speaker tags and sound-event marks, which Whisper suppresses by default."""
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += [
            "<<",
            ">>",
            "<<<",
            ">>>",
            "--",
            "---",
            "-(",
            "-[",
            "('",
            '("',
            "((",
            "))",
            "(((",
            ")))",
            "[[",
            "]]",
            "{{",
            "}}",
            "♪♪",
            "♪♪♪",
        ]
        miscellaneous = set("♩♪♫♬♭♮♯")
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols + list(miscellaneous):
            for ids in (self.encode(symbol), self.encode(" " + symbol)):
                if len(ids) == 1 or symbol in miscellaneous:
                    result.add(ids[0])
        return sorted(result)

    def split_to_words(self, tokens: list[int]) -> list[tuple[str, list[int]]]:
        """Group text tokens into words: a token starting with a space starts a new word, and
        punctuation-only tokens stay with the word before them."""
        words: list[tuple[str, list[int]]] = []
        for token in tokens:
            piece = self.decode([token])
            starts_word = piece.startswith(" ") or not words
            if piece.strip() and all(c in PUNCTUATION for c in piece.strip()) and words:
                starts_word = False
            if starts_word:
                words.append((piece, [token]))
            else:
                text, ids = words[-1]
                words[-1] = (text + piece, ids + [token])
        return words


def load_suppress_config(config_path: Path) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """(suppress_ids, suppress_ids_begin, alignment_heads) from CTranslate2's config.json."""
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{config_path}: not a readable JSON config ({exc})") from exc
    heads = [tuple(pair) for pair in config.get("alignment_heads", [])]
    return config.get("suppress_ids", []), config.get("suppress_ids_begin", []), heads
