"""The wire contract: committed stubs match asr.proto, and the proto compiles for clients."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "protos"
GENERATE_SCRIPT = PROTO_ROOT / "generate.py"

# (method, client_streaming, server_streaming), fixed by the product.
EXPECTED_METHODS = {
    "StreamingRecognize": (True, True),
    "Recognize": (False, False),
    "ListModels": (False, False),
}


def _load_generate() -> ModuleType:
    """Import protos/generate.py (a script, not part of the installed package)."""
    spec = importlib.util.spec_from_file_location("streamstt_protos_generate", GENERATE_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_proto() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATE_SCRIPT), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        "committed stubs are stale; run `python protos/generate.py`\n" + result.stderr
    )


def test_drift_check_ignores_only_version_stamps() -> None:
    generate = _load_generate()
    pb2 = textwrap.dedent(
        """\
        # Protobuf Python Version: {v}
        _runtime_version.ValidateProtobufRuntimeVersion(
            _runtime_version.Domain.PUBLIC,
            {major},
            {minor},
            1,
            '',
            'streamstt/v1/asr.proto'
        )
        GRPC_GENERATED_VERSION = '{v}'
        DESCRIPTOR = b'{body}'
        """
    )
    old = pb2.format(v="5.26.1", major=5, minor=26, body="x")
    new = pb2.format(v="7.35.1", major=7, minor=35, body="x")
    changed = pb2.format(v="7.35.1", major=7, minor=35, body="y")
    assert generate._normalise(old) == generate._normalise(new)
    assert generate._normalise(new) != generate._normalise(changed)


def _compile_proto(out_dir: Path) -> None:
    """Compile asr.proto with protoc as an external client would (no repo code involved)."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--proto_path={include}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            "streamstt/v1/asr.proto",
        ]
    )
    assert status == 0, "protoc failed to compile asr.proto"


# Runs in a fresh interpreter so the freshly generated module does not collide with the
# committed one in the protobuf descriptor pool or in sys.modules.
_CLIENT_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from streamstt.v1 import asr_pb2, asr_pb2_grpc
service = asr_pb2.DESCRIPTOR.services_by_name["Recognizer"]
print(json.dumps({
    "pb2_file": asr_pb2.__file__,
    "grpc_file": asr_pb2_grpc.__file__,
    "methods": {
        m.name: [m.client_streaming, m.server_streaming] for m in service.methods
    },
    "stub_has": [
        name for name in ("StreamingRecognize", "Recognize", "ListModels")
        if hasattr(asr_pb2_grpc.RecognizerServicer, name)
    ],
}))
"""


def test_proto_compiles_and_imports_for_an_external_client(tmp_path: Path) -> None:
    _compile_proto(tmp_path)
    # Make the output a regular package so it wins over any installed streamstt.v1.
    for package in (tmp_path / "streamstt", tmp_path / "streamstt" / "v1"):
        (package / "__init__.py").touch()
    result = subprocess.run(
        [sys.executable, "-c", _CLIENT_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    # The import really used the freshly compiled files, not the committed stubs.
    assert Path(probe["pb2_file"]).resolve().is_relative_to(tmp_path.resolve())
    assert Path(probe["grpc_file"]).resolve().is_relative_to(tmp_path.resolve())
    assert {name: tuple(flags) for name, flags in probe["methods"].items()} == EXPECTED_METHODS
    assert sorted(probe["stub_has"]) == sorted(EXPECTED_METHODS)


def test_product_fixed_names_exist() -> None:
    """Guard the names the product fixes: renaming any of them breaks clients."""
    from streamstt.v1 import asr_pb2

    encodings = asr_pb2.AudioEncoding
    assert [encodings.Name(i) for i in range(9)] == [
        "ENCODING_UNSPECIFIED",
        "LINEAR16",
        "FLOAT32",
        "MULAW",
        "ALAW",
        "FLAC",
        "WAV",
        "OGG_OPUS",
        "MP3",
    ]
    events = asr_pb2.StreamingRecognizeResponse.SpeechEventType
    assert [events.Name(i) for i in range(4)] == [
        "SPEECH_EVENT_UNSPECIFIED",
        "SPEECH_ACTIVITY_BEGIN",
        "SPEECH_ACTIVITY_END",
        "END_OF_SINGLE_UTTERANCE",
    ]
    fixed_fields = {
        "RecognitionConfig": "encoding sample_rate_hertz audio_channel_count language_code model "
        "enable_word_time_offsets enable_word_confidence speech_contexts profanity_filter "
        "enable_separate_recognition_per_channel",
        "StreamingRecognitionConfig": "config interim_results single_utterance "
        "latency_budget_ms endpointing enable_voice_activity_events",
        "StreamingRecognizeRequest": "streaming_config audio_content finalize",
        "StreamingRecognizeResponse": "results speech_event_type speech_event_time processing",
        "StreamingRecognitionResult": "alternatives is_final stability result_start_time "
        "result_end_time utterance_index channel_tag",
        "SpeechRecognitionAlternative": "transcript confidence words",
        "WordInfo": "start_time end_time word confidence",
        "RecognizeRequest": "config audio_content",
        "RecognizeResponse": "results total_audio",
        "SpeechRecognitionResult": "alternatives result_start_time result_end_time utterance_index "
        "channel_tag",
        "EndpointingConfig": "silence_ms max_utterance_ms",
        "SpeechContext": "phrases boost",
        "ProcessingInfo": "audio_received audio_processed queue_ms compute_ms",
        "ListModelsResponse": "models",
        "ModelInfo": "name language_codes precision device is_default sample_rate_hertz",
    }
    for message, fields in fixed_fields.items():
        descriptor = asr_pb2.DESCRIPTOR.message_types_by_name[message]
        missing = set(fields.split()) - set(descriptor.fields_by_name)
        assert not missing, f"{message} lost fields {sorted(missing)}"
    oneof = asr_pb2.StreamingRecognizeRequest.DESCRIPTOR.oneofs_by_name["streaming_request"]
    assert {f.name for f in oneof.fields} == {"streaming_config", "audio_content", "finalize"}
