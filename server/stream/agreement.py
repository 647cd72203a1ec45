"""LocalAgreement-2: which interim words are committed (shown as stable) and which are not.

A pure step over a frozen `Agreement` state: a word is committed once two consecutive
hypotheses agree on it (compared as normalised words); the rest of the newest hypothesis is
the tentative tail. A committed word is shown as it was committed; the next decodes are given
it with the sign that the newest decode going on past it wrote. Committed words of a long
utterance settle: later interim windows leave their audio out, so a long utterance costs no
more per step than a short one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from streamstt.models.audio import SAMPLE_RATE
from streamstt.models.results import compression_ratio, normal
from streamstt.models.transcriber import Transcript, Word

# seconds: hypothesis words ending before the last committed word's end (minus this jitter)
# were committed already; repeats that survive are removed as n-grams
COMMIT_TOLERANCE = 0.02
REPEAT_CHECK_WORDS = 5  # longest repeat of the committed tail that a hypothesis may open with
SETTLE_AFTER = int(12.0 * SAMPLE_RATE)  # interim window length past which committed words settle
# Two agreeing decodes commit a word the model is this sure of (mean token probability); a
# less sure one needs a third decode that heard it too (docs/architecture.md).
MIN_COMMIT_PROBABILITY = 0.6
THIRD_VOTE_S = 0.3  # an earlier hypothesis's word this close in time is the same word
# A word the model all but ruled out is never committed, however many decodes agree on it:
# decodes of overlapping windows given the same start are not independent votes. Nor is the
# word before it: that is most often one word the model split in two ("Be pole" for
# "People"), and the final, free of it, may still write it as one.
MIN_WORD_PROBABILITY = 0.2
# A hypothesis commits nothing when it shows the signs of a guess that Whisper's own
# transcribe loop acts on: a low average log-probability (noisy or unclear audio), a likely
# absence of speech, or a degenerate repetition.
MIN_COMMIT_LOGPROB = -0.4
MAX_NO_SPEECH = 0.6
MAX_COMPRESSION_RATIO = 2.4


@dataclass(frozen=True)
class Agreement:
    settled: tuple[Word, ...] = ()  # committed; their audio is left out of interim windows
    committed: tuple[Word, ...] = ()  # committed; their audio is still in the window
    tentative: tuple[Word, ...] = ()  # the newest hypothesis after the committed words
    earlier: tuple[Word, ...] = ()  # the hypothesis before it (its words after the committed)
    agreed: int = 0  # tentative words on which the two newest hypotheses agree (not sure yet)
    window_start: int = 0  # first sample interim windows see (settled audio lies before it)
    doubted: bool = False  # the newest hypothesis was untrusted (`trustworthy`)
    # The first committed words as the newest decode that went on past them wrote them
    # (`_respelled`): what the next decode is given. Shown, they keep the text they were
    # committed with; words committed since are given as shown.
    written: tuple[str, ...] = ()

    @property
    def stable(self) -> tuple[Word, ...]:
        """Every committed word of the open utterance."""
        return self.settled + self.committed

    @property
    def given(self) -> tuple[str, ...]:
        """The committed words as a decode is given them: as the model last wrote them, or
        as shown where no decode wrote them since (committed by the newest hypothesis, or
        carried over a cut)."""
        rest = self.committed[len(self.written) :]
        return self.written[: len(self.committed)] + tuple(w.word for w in rest)

    @property
    def heard(self) -> tuple[Word, ...]:
        """The words two decodes agree on: committed, and agreed but not sure yet."""
        return self.stable + self.tentative[: self.agreed]


def trustworthy(transcript: Transcript) -> bool:
    """Whether a decode may commit words (no hallucination signs)."""
    return (
        transcript.avg_logprob >= MIN_COMMIT_LOGPROB
        and transcript.no_speech_prob <= MAX_NO_SPEECH
        and not transcript.repetition_loop
        and compression_ratio(transcript.text) <= MAX_COMPRESSION_RATIO
    )


def agreed_prefix(new: Sequence[Word], previous: Sequence[Word]) -> int:
    """Length of the longest common prefix of two hypotheses, compared as normalised words."""
    count = 0
    for a, b in zip(new, previous):
        if normal(a.word) != normal(b.word):
            break
        count += 1
    return count


def same_words(a: Sequence[Word], b: Sequence[Word]) -> bool:
    """Whether two runs of words read the same, compared as normalised words."""
    return len(a) == len(b) and agreed_prefix(a, b) == len(a)


def commit(
    state: Agreement, hypothesis: Sequence[Word], window_first_s: float, trusted: bool = True
) -> tuple[Agreement, tuple[Word, ...]]:
    """Fold a new hypothesis of the window starting at `window_first_s` in. Returns the new
    state and the words it newly commits: those on which it agrees with the previous one
    after the committed ones, up to the first the model is unsure of; an untrusted
    hypothesis (hallucination signs) commits none."""
    state = _respelled(state, hypothesis)
    new = _after_committed(state, hypothesis, window_first_s)
    agreed = tuple(new[: agreed_prefix(new, state.tentative)])
    votes = (new, state.tentative)
    unsure = (i for i in range(len(agreed)) if not _committable(votes, i, state.earlier))
    newly = agreed[: next(unsure, None)] if trusted else ()
    rest = tuple(new[len(newly) :])
    earlier = state.tentative
    state = replace(
        state, committed=state.committed + newly, tentative=rest, earlier=earlier,
        doubted=not trusted,
    )  # fmt: skip
    return replace(state, agreed=len(agreed) - len(newly)), newly


def _respelled(state: Agreement, hypothesis: Sequence[Word]) -> Agreement:
    """The committed words as written by a hypothesis that opens with them and goes on past
    them. A decode given them as its start puts its own sign after the last one ("Outside,"
    once ", the river" follows; planning.known_start leaves the old one off); given them as
    first committed, the next decodes would get a start the model never wrote, and it
    steers them ("Outside the river and" where the model, given "Outside,", hears "ran").
    What the client was shown stays as it was (`Agreement.written`)."""
    committed = state.committed
    goes_on = len(hypothesis) > len(committed)  # a sign the words after it decided
    if not (committed and goes_on and same_words(hypothesis[: len(committed)], committed)):
        return state
    return replace(state, written=tuple(h.word for h in hypothesis[: len(committed)]))


def _committable(
    votes: tuple[Sequence[Word], Sequence[Word]], i: int, earlier: Sequence[Word]
) -> bool:
    """Whether agreed word `i` of the two hypotheses that agree on it (newest first) may be
    committed: in neither is it or the word after it one the model all but ruled out, and
    it is sure (`_sure`)."""
    doubtful = (w.probability < MIN_WORD_PROBABILITY for vote in votes for w in vote[i : i + 2])
    return not any(doubtful) and _sure(votes[0][i], earlier)


def _sure(word: Word, earlier: Sequence[Word]) -> bool:
    """An agreed word may be committed when the model is sure of it, or when a third decode
    (the one before the two that agree) heard it there too."""
    if word.probability >= MIN_COMMIT_PROBABILITY:
        return True
    text = normal(word.word)
    return any(normal(w.word) == text and abs(w.end - word.end) <= THIRD_VOTE_S for w in earlier)


def _after_committed(
    state: Agreement, hypothesis: Sequence[Word], window_first_s: float
) -> list[Word]:
    """The hypothesis's words after the committed ones. A decode is given the committed words
    as its known start, so they open the hypothesis; judged by time only when they do not
    (alignment stretches words at a window's edge, so the new words' times can overlap them)."""
    committed = state.committed
    if committed and same_words(hypothesis[: len(committed)], committed):
        return list(hypothesis[len(committed) :])
    done = state.committed or state.settled
    last_end = done[-1].end if done else window_first_s
    new = [w for w in hypothesis if w.end > last_end - COMMIT_TOLERANCE]
    if done and new:  # the model often repeats the last committed words: drop the overlap
        for n in range(min(REPEAT_CHECK_WORDS, len(done), len(new)), 0, -1):
            if same_words(done[-n:], new[:n]):
                return new[n:]
    return new


def settle(state: Agreement, window_end: int) -> Agreement:
    """Past SETTLE_AFTER of interim window, the committed words settle and the window moves
    on to after them (their audio stays held for the final)."""
    if window_end - state.window_start <= SETTLE_AFTER or not state.committed:
        return state
    settled = state.settled + state.committed
    start = max(state.window_start, int(settled[-1].end * SAMPLE_RATE))
    return replace(state, settled=settled, committed=(), window_start=start, written=())
