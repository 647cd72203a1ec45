"""benchmarks/accuracy.py --noise-seeds: more draws of the white-noise fixtures, so a
pipeline comparison is not one draw's luck. Each draw must be the fixture's kind of file:
read_clean plus a seeded white noise at the named SNR, one draw for both SNRs."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import soundfile as sf
from conftest import DATA, unavailable

ROOT = DATA.parents[1]


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_draw_is_read_clean_under_its_seeds_noise_at_the_named_snr(tmp_path, monkeypatch):
    accuracy = _load(ROOT / "benchmarks" / "accuracy.py")
    speech_power = _load(DATA / "make_hard_fixtures.py").speech_power  # the fixtures' SNR rule
    monkeypatch.setattr(accuracy, "SEEDS", tmp_path)
    names = accuracy.make_noise_seeds(2)
    assert names == ["read_white10_s1", "read_white5_s1", "read_white10_s2", "read_white5_s2"]
    clean, _ = sf.read(DATA / "hard" / "read_clean.flac", dtype="float64")
    for name in names:
        snr, seed = (int(part) for part in name.removeprefix("read_white").split("_s"))
        assert accuracy.fixture_path(name) == tmp_path / f"{name}.flac"
        assert (tmp_path / f"{name}.txt").read_text() == (
            DATA / "hard" / "read_clean.txt"
        ).read_text()
        mixed, rate = sf.read(tmp_path / f"{name}.flac", dtype="float64")
        assert rate == 16000 and mixed.shape == clean.shape
        # mixed = a * clean + b * noise (then 16-bit): least squares recovers both gains
        white = np.random.default_rng(seed).standard_normal(len(clean))
        (a, b), *_ = np.linalg.lstsq(np.stack([clean, white], axis=1), mixed, rcond=None)
        measured = speech_power(a * clean) / np.mean((b * white) ** 2)
        assert abs(10 * np.log10(measured) - snr) < 0.1, (name, measured)


def test_the_held_out_passages_are_other_texts_in_each_kind_of_noise(tmp_path, monkeypatch):
    """benchmarks/replay.py --passages: 24 files of texts the fixtures do not read, each beside
    its exact text; the white-noise files at their named SNR over their seed's noise."""
    missing = [tool for tool in ("flite", "espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not installed", "flite, espeak-ng, sox")
    accuracy = _load(ROOT / "benchmarks" / "accuracy.py")
    maker = _load(DATA / "make_hard_fixtures.py")
    monkeypatch.setattr(accuracy, "PASSAGES_DIR", tmp_path)
    files = accuracy.make_passages()
    assert len(files) == 24 and all(f.exists() for f in files)
    fixture_text = (DATA / "hard" / "read_clean.txt").read_text()
    texts = {f.with_suffix(".txt").read_text() for f in files}
    assert len(texts) == 3 and fixture_text not in texts
    white5 = tmp_path / "p0_rms_white5.flac"
    assert white5 in files and (tmp_path / "p0_rms_phone.wav") in files
    assert sf.info(tmp_path / "p0_rms_phone.wav").samplerate == 8000
    clean = maker.passage("rms", maker.PASSAGE_B, maker.SENTENCE_PAUSE_S, tmp_path)
    mixed, _ = sf.read(white5, dtype="float64")
    white = np.random.default_rng(300).standard_normal(len(clean))
    (a, b), *_ = np.linalg.lstsq(np.stack([clean, white], axis=1), mixed, rcond=None)
    snr = 10 * np.log10(maker.speech_power(a * clean) / np.mean((b * white) ** 2))
    assert abs(snr - 5) < 0.1, snr
    assert accuracy.make_passages() == files  # made once: a second call reuses them


def test_the_paired_differences_over_draws_are_the_bars_quantities():
    """The second table: per SNR, streamed - offline and offline - faster-whisper int8 over
    the draws only (the fixture, one draw of its own, is left out), with the mean's
    standard error."""
    accuracy = _load(ROOT / "benchmarks" / "accuracy.py")

    def run(**wers):
        return {"fixtures": {name: {"wer": wer, "wall_s": 1.0} for name, wer in wers.items()}}

    results = {
        "ours auto": run(read_white10=0.15, read_white10_s1=0.10, read_white10_s2=0.20),
        accuracy.BASELINE: run(read_white10=0.20, read_white10_s1=0.20, read_white10_s2=0.20),
        "ours streamed": run(read_white10=0.30, read_white10_s1=0.12, read_white10_s2=0.20),
    }
    rows = accuracy.differences(results).splitlines()[2:]
    # streamed - offline: +2 and 0 points; offline - baseline: -10 and 0 points
    assert rows == [
        "| read_white10 | ours streamed - ours auto | +1.00 | 1.00 | 2 |",
        "| read_white10 | ours auto - faster-whisper int8 | -5.00 | 5.00 | 2 |",
    ]
    assert accuracy.differences({"ours auto": results["ours auto"]}) == ""


def test_replay_pairs_each_fixture_and_its_draws_with_offline():
    """benchmarks/replay.py --offline: a fixture and its draws form one group (the name
    without `_sN`), the held-out passages one per kind; per group the streamed - offline
    mean, its standard error, and the files within the streaming bar (offline + 1 point).
    Files without an offline WER are left out."""
    replay = _load(ROOT / "benchmarks" / "replay.py")
    results = {
        "hard/read_white5.flac": {"wer": 0.50, "offline_wer": 0.44},
        "seeds/read_white5_s1.flac": {"wer": 0.40, "offline_wer": 0.44},
        "seeds/read_white5_s2.flac": {"wer": 0.45, "offline_wer": 0.44},
        "hard/read_clean.flac": {"wer": 0.036, "offline_wer": 0.029},
        "other/x.wav": {"wer": 0.5},
        "passages/p0_rms_phone.wav": {"wer": 0.05, "offline_wer": 0.03},
        "passages/p1_slt_phone.wav": {"wer": 0.03, "offline_wer": 0.03},
    }
    assert replay.paired(results) == [
        "read_white5: 3 files, streamed - offline +1.00 ± 2.89 points, within offline + 1: 2",
        "read_clean: 1 files, streamed - offline +0.70 points, within offline + 1: 1",
        "passages_phone: 2 files, streamed - offline +1.00 ± 1.00 points, within offline + 1: 1",
    ]


def test_several_offline_runs_give_medians_each_runs_ratio_and_unsteady_text(monkeypatch):
    """benchmarks/accuracy.py --runs N: the configurations run in turns; per fixture the
    median WER and wall time, each run's time ratio against the baseline's run of the same
    turn, and the fixtures whose text was not the same in every run."""
    accuracy = _load(ROOT / "benchmarks" / "accuracy.py")
    reference = (DATA / "hard" / "read_clean.txt").read_text()

    def run(text, wall_s):
        return {"plan": "bf16", "fixtures": {"read_clean": {"text": text, "wall_s": wall_s}}}

    turns = iter(
        [run(reference, 10.0), run(reference, 10.0)]  # ours, baseline
        + [run("one two", 9.0), run(reference, 10.0)]
        + [run(reference, 12.0), run(reference, 11.0)]
    )
    monkeypatch.setattr(accuracy, "run_config", lambda *_: next(turns))
    configs = {"ours auto": [], accuracy.BASELINE: []}
    results = accuracy.run_offline(configs, 2, ["read_clean"], runs=3)
    ours = results["ours auto"]
    assert ours["fixtures"]["read_clean"] == {"wer": 0.0, "wall_s": 10.0}
    assert ours["run_walls"] == [10.0, 9.0, 12.0] and ours["unsteady"] == ["read_clean"]
    assert results[accuracy.BASELINE]["unsteady"] == []
    lines = accuracy.markdown(results).splitlines()
    assert "| time / faster-whisper int8 | 1.00 | 1.00 |" in lines
    assert "ours auto: time / faster-whisper int8 in each run: 1.00, 0.90, 1.09" in lines
    assert any(
        line.startswith("ours auto: text changed between runs on read_clean") for line in lines
    )


def test_a_failed_offline_run_leaves_the_other_turns_paired(monkeypatch):
    """A run that failed (its process exited non-zero) is left out of the medians and shown
    as '-' in the per-run ratios; the other turns keep their own baseline run."""
    accuracy = _load(ROOT / "benchmarks" / "accuracy.py")
    reference = (DATA / "hard" / "read_clean.txt").read_text()

    def run(wall_s):
        return {"plan": "bf16", "fixtures": {"read_clean": {"text": reference, "wall_s": wall_s}}}

    turns = iter([run(9.0), run(10.0), run(8.0), None, run(12.0), run(10.0)])
    monkeypatch.setattr(accuracy, "run_config", lambda *_: next(turns))
    configs = {"ours auto": [], accuracy.BASELINE: []}
    results = accuracy.run_offline(configs, 2, ["read_clean"], runs=3)
    assert results[accuracy.BASELINE]["run_walls"] == [10.0, None, 10.0]
    assert results[accuracy.BASELINE]["fixtures"]["read_clean"]["wall_s"] == 10.0
    lines = accuracy.markdown(results).splitlines()
    assert "ours auto: time / faster-whisper int8 in each run: 0.90, -, 1.20" in lines
