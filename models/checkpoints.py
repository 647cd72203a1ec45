"""Offline weight loaders: CTranslate2 `model.bin`, openai-whisper `.pt`, Hugging Face safetensors.

Each loader returns (ModelDimensions, state dict in openai-whisper names). Nothing here touches
the network. Every failure is a `ModelLoadError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from .whisper import ModelDimensions

CT2_MIN_VERSION = 5  # binary versions we parse (CTranslate2 >= 3 writes 6)
CT2_MAX_VERSION = 6
# CTranslate2's DataType enum (include/ctranslate2/types.h).
_CT2_DTYPES = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
    5: "bfloat16",
}


class ModelLoadError(RuntimeError):
    """A model path or file that cannot be loaded; the message names the file and the fault."""


def _read_exact(handle: BinaryIO, size: int, path: Path, what: str) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise ModelLoadError(
            f"{path}: truncated while reading {what} (wanted {size} bytes, got {len(data)})"
        )
    return data


def _read_string(handle: BinaryIO, path: Path) -> str:
    (length,) = struct.unpack("<H", _read_exact(handle, 2, path, "a name length"))
    raw = _read_exact(handle, length, path, "a name")
    try:
        return raw[:-1].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{path}: corrupt variable name {raw[:40]!r}") from exc


def _ct2_tensor(raw: bytes, dtype_id: int, shape: tuple[int, ...], path: Path, name: str):
    kind = _CT2_DTYPES.get(dtype_id)
    if kind is None:
        raise ModelLoadError(f"{path}: variable {name!r} has unknown data type id {dtype_id}")
    if kind == "bfloat16":
        words = np.frombuffer(raw, dtype=np.int16).copy()
        return torch.from_numpy(words).view(torch.bfloat16).float().reshape(shape)
    array = np.frombuffer(raw, dtype=kind)
    if array.size != int(np.prod(shape, dtype=np.int64)):
        raise ModelLoadError(
            f"{path}: variable {name!r} holds {array.size} values for shape {shape}"
        )
    return torch.from_numpy(array.copy()).reshape(shape)


def read_ct2_variables(path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """Parse a CTranslate2 model.bin into (spec name, {variable: tensor}), aliases resolved."""
    variables: dict[str, torch.Tensor] = {}
    with open(path, "rb") as handle:
        (version,) = struct.unpack("<I", _read_exact(handle, 4, path, "the format version"))
        if not CT2_MIN_VERSION <= version <= CT2_MAX_VERSION:
            raise ModelLoadError(
                f"{path}: not a CTranslate2 model.bin we can read (format version {version}, "
                f"expected {CT2_MIN_VERSION}-{CT2_MAX_VERSION})"
            )
        spec = _read_string(handle, path)
        _read_exact(handle, 4, path, "the spec revision")
        (count,) = struct.unpack("<I", _read_exact(handle, 4, path, "the variable count"))
        for _ in range(count):
            name = _read_string(handle, path)
            (rank,) = _read_exact(handle, 1, path, f"the rank of {name!r}")
            shape = struct.unpack(f"<{rank}I", _read_exact(handle, 4 * rank, path, "a shape"))
            (dtype_id,) = _read_exact(handle, 1, path, f"the type of {name!r}")
            (size,) = struct.unpack("<I", _read_exact(handle, 4, path, "a byte count"))
            raw = _read_exact(handle, size, path, f"the data of {name!r}")
            variables[name] = _ct2_tensor(raw, dtype_id, tuple(shape), path, name)
        (aliases,) = struct.unpack("<I", _read_exact(handle, 4, path, "the alias count"))
        for _ in range(aliases):
            alias, target = _read_string(handle, path), _read_string(handle, path)
            if target not in variables:
                raise ModelLoadError(f"{path}: alias {alias!r} points to missing {target!r}")
            variables[alias] = variables[target]
    return spec, variables


def _ct2_weight(variables: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """A weight dequantised to float32: int8 weights come with per-row `weight_scale`."""
    weight = variables[f"{name}/weight"]
    scale = variables.get(f"{name}/weight_scale")
    if weight.dtype == torch.int8:
        if scale is None:
            raise KeyError(f"{name}/weight_scale")
        scale = scale.float().reshape(-1, *([1] * (weight.dim() - 1)))
        return weight.float() / scale
    return weight.float()


def _ct2_attention(out: dict, vars_: dict, src: str, dst: str, fused_qkv: bool) -> None:
    """Split CTranslate2's fused projections into query/key/value/out."""
    if fused_qkv:
        qkv_w, qkv_b = _ct2_weight(vars_, f"{src}/linear_0"), vars_[f"{src}/linear_0/bias"].float()
        q_w, k_w, v_w = qkv_w.chunk(3, dim=0)
        q_b, _, v_b = qkv_b.chunk(3, dim=0)  # the key projection has no bias in Whisper
        out_name = f"{src}/linear_1"
    else:
        q_w, q_b = _ct2_weight(vars_, f"{src}/linear_0"), vars_[f"{src}/linear_0/bias"].float()
        kv_w, kv_b = _ct2_weight(vars_, f"{src}/linear_1"), vars_[f"{src}/linear_1/bias"].float()
        k_w, v_w = kv_w.chunk(2, dim=0)
        v_b = kv_b.chunk(2, dim=0)[1]
        out_name = f"{src}/linear_2"
    out[f"{dst}.query.weight"], out[f"{dst}.query.bias"] = q_w, q_b
    out[f"{dst}.key.weight"] = k_w
    out[f"{dst}.value.weight"], out[f"{dst}.value.bias"] = v_w, v_b
    out[f"{dst}.out.weight"] = _ct2_weight(vars_, out_name)
    out[f"{dst}.out.bias"] = vars_[f"{out_name}/bias"].float()


def _ct2_norm(out: dict, vars_: dict, src: str, dst: str) -> None:
    out[f"{dst}.weight"] = vars_[f"{src}/gamma"].float()
    out[f"{dst}.bias"] = vars_[f"{src}/beta"].float()


def _ct2_block(out: dict, vars_: dict, src: str, dst: str, decoder: bool) -> None:
    _ct2_attention(out, vars_, f"{src}/self_attention", f"{dst}.attn", fused_qkv=True)
    _ct2_norm(out, vars_, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
    if decoder:
        _ct2_attention(out, vars_, f"{src}/attention", f"{dst}.cross_attn", fused_qkv=False)
        _ct2_norm(out, vars_, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
    for index, name in ((0, "mlp.0"), (1, "mlp.2")):
        out[f"{dst}.{name}.weight"] = _ct2_weight(vars_, f"{src}/ffn/linear_{index}")
        out[f"{dst}.{name}.bias"] = vars_[f"{src}/ffn/linear_{index}/bias"].float()
    _ct2_norm(out, vars_, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")


def _count_layers(variables: dict, prefix: str) -> int:
    layers = 0
    while f"{prefix}/layer_{layers}/ffn/layer_norm/gamma" in variables:
        layers += 1
    return layers


def load_ct2(path: Path) -> tuple[ModelDimensions, dict[str, torch.Tensor]]:
    """Load a CTranslate2 Whisper model.bin (float32/float16/bfloat16/int8 weights)."""
    spec, v = read_ct2_variables(path)
    if spec != "WhisperSpec":
        raise ModelLoadError(f"{path}: a CTranslate2 {spec!r} model, not a Whisper model")
    try:
        conv1 = _ct2_weight(v, "encoder/conv1")
        dims = ModelDimensions(
            n_mels=conv1.shape[1],
            n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
            n_audio_state=conv1.shape[0],
            n_audio_head=int(v["encoder/num_heads"]),
            n_audio_layer=_count_layers(v, "encoder"),
            n_vocab=v["decoder/embeddings/weight"].shape[0],
            n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
            n_text_state=v["decoder/embeddings/weight"].shape[1],
            n_text_head=int(v["decoder/num_heads"]),
            n_text_layer=_count_layers(v, "decoder"),
        )
        out: dict[str, torch.Tensor] = {
            "encoder.conv1.weight": conv1,
            "encoder.conv1.bias": v["encoder/conv1/bias"].float(),
            "encoder.conv2.weight": _ct2_weight(v, "encoder/conv2"),
            "encoder.conv2.bias": v["encoder/conv2/bias"].float(),
            "encoder.positional_embedding": v["encoder/position_encodings/encodings"].float(),
            "decoder.token_embedding.weight": _ct2_weight(v, "decoder/embeddings"),
            "decoder.positional_embedding": v["decoder/position_encodings/encodings"].float(),
        }
        _ct2_norm(out, v, "encoder/layer_norm", "encoder.ln_post")
        _ct2_norm(out, v, "decoder/layer_norm", "decoder.ln")
        for i in range(dims.n_audio_layer):
            _ct2_block(out, v, f"encoder/layer_{i}", f"encoder.blocks.{i}", decoder=False)
        for i in range(dims.n_text_layer):
            _ct2_block(out, v, f"decoder/layer_{i}", f"decoder.blocks.{i}", decoder=True)
    except KeyError as exc:
        raise ModelLoadError(f"{path}: Whisper variable {exc.args[0]!r} is missing") from exc
    return dims, out


def load_openai(path: Path) -> tuple[ModelDimensions, dict[str, torch.Tensor]]:
    """Load an official openai-whisper checkpoint (`{"dims": ..., "model_state_dict": ...}`)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad pickle/zip
        raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    if not isinstance(checkpoint, dict) or "dims" not in checkpoint:
        raise ModelLoadError(f"{path}: not an openai-whisper checkpoint (no 'dims' entry)")
    try:
        dims = ModelDimensions(**checkpoint["dims"])
    except TypeError as exc:
        raise ModelLoadError(f"{path}: unexpected model dimensions ({exc})") from exc
    state = {k: t.float() for k, t in checkpoint["model_state_dict"].items()}
    return dims, state


_HF_RENAMES = (
    ("model.encoder.embed_positions.weight", "encoder.positional_embedding"),
    ("model.decoder.embed_positions.weight", "decoder.positional_embedding"),
    ("model.decoder.embed_tokens.weight", "decoder.token_embedding.weight"),
    ("model.encoder.layer_norm.", "encoder.ln_post."),
    ("model.decoder.layer_norm.", "decoder.ln."),
    ("model.encoder.layers.", "encoder.blocks."),
    ("model.decoder.layers.", "decoder.blocks."),
    ("model.encoder.", "encoder."),
    (".self_attn_layer_norm.", ".attn_ln."),
    (".encoder_attn_layer_norm.", ".cross_attn_ln."),
    (".final_layer_norm.", ".mlp_ln."),
    (".self_attn.", ".attn."),
    (".encoder_attn.", ".cross_attn."),
    (".q_proj.", ".query."),
    (".k_proj.", ".key."),
    (".v_proj.", ".value."),
    (".out_proj.", ".out."),
    (".fc1.", ".mlp.0."),
    (".fc2.", ".mlp.2."),
)


def load_huggingface(directory: Path) -> tuple[ModelDimensions, dict[str, torch.Tensor]]:
    """Load a Hugging Face Whisper folder: model.safetensors + config.json."""
    from safetensors.torch import load_file  # optional dependency, only for this format

    config_path = directory / "config.json"
    try:
        config = json.loads(config_path.read_text())
        dims = ModelDimensions(
            n_mels=config["num_mel_bins"],
            n_audio_ctx=config["max_source_positions"],
            n_audio_state=config["d_model"],
            n_audio_head=config["encoder_attention_heads"],
            n_audio_layer=config["encoder_layers"],
            n_vocab=config["vocab_size"],
            n_text_ctx=config["max_target_positions"],
            n_text_state=config["d_model"],
            n_text_head=config["decoder_attention_heads"],
            n_text_layer=config["decoder_layers"],
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{config_path}: not a Whisper config ({exc!r})") from exc
    try:
        raw = load_file(str(directory / "model.safetensors"))
    except Exception as exc:
        raise ModelLoadError(f"{directory / 'model.safetensors'}: unreadable ({exc})") from exc
    state = {}
    for name, tensor in raw.items():
        if name == "proj_out.weight":
            continue  # tied to the token embedding
        for old, new in _HF_RENAMES:
            name = name.replace(old, new)
        state[name] = tensor.float()
    return dims, state
