"""Regenerate the committed Python gRPC stubs from the .proto files, or check them for drift.

Usage::

    python protos/generate.py          # rewrite protos/streamstt/**/*_pb2*.py{,i}
    python protos/generate.py --check  # exit 1 and list the files that differ

The stubs are committed so that the package installs without grpcio-tools. Every
``streamstt/**/*.proto`` under this folder is compiled with ``grpc_tools.protoc``, using this
folder as the include root, so ``streamstt/v1/asr.proto`` becomes
``streamstt/v1/asr_pb2.py`` (+ ``.pyi`` and ``_pb2_grpc.py``), and the gRPC module imports
``from streamstt.v1 import asr_pb2``, matching the installed package name.

Versions: the generated code embeds the protobuf and grpcio versions of the grpcio-tools that
produced it, and refuses to import under an older protobuf / grpcio runtime. Regenerate with
the grpcio-tools version the test environment installs. So that the drift check does not fail
merely because CI resolved a newer grpcio-tools, ``--check`` ignores those version stamps (see
``_normalise``); any other difference is reported as drift.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
# Only our own packages; this keeps stray protos (e.g. vendored ones) out.
PROTO_PACKAGE_DIR = PROTO_ROOT / "streamstt"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")

# Lines (or, for the runtime check, a whole call) that only record the generator's version.
_VERSION_PATTERNS = (
    # asr_pb2.py header: "# Protobuf Python Version: 7.35.1"
    re.compile(r"^# Protobuf Python Version: .*$", re.MULTILINE),
    # asr_pb2.py: _runtime_version.ValidateProtobufRuntimeVersion(<domain>, 7, 35, 1, '', 'x')
    # spans several lines; the arguments contain no parentheses, so [^()]* stops at the ")".
    re.compile(r"ValidateProtobufRuntimeVersion\([^()]*\)"),
    # asr_pb2_grpc.py: GRPC_GENERATED_VERSION = '1.85.1'
    re.compile(r"^GRPC_GENERATED_VERSION = .*$", re.MULTILINE),
)


def _protoc_include_dir() -> Path:
    """Return grpc_tools' bundled include dir (holds google/protobuf/duration.proto)."""
    import grpc_tools

    return Path(grpc_tools.__file__).resolve().parent / "_proto"


def proto_files() -> list[Path]:
    """Return the .proto files to compile, relative to PROTO_ROOT, in a stable order."""
    return sorted(p.relative_to(PROTO_ROOT) for p in PROTO_PACKAGE_DIR.rglob("*.proto"))


def generated_names(protos: list[Path]) -> list[Path]:
    """Return the stub paths (relative to the output root) that ``protos`` compile to."""
    return [
        proto.with_name(proto.stem + suffix) for proto in protos for suffix in GENERATED_SUFFIXES
    ]


def run_protoc(out_dir: Path) -> list[Path]:
    """Compile every proto into ``out_dir``; return the generated paths relative to it."""
    from grpc_tools import protoc

    protos = proto_files()
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_PACKAGE_DIR}")
    args = [
        "grpc_tools.protoc",  # argv[0]; protoc ignores it
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={_protoc_include_dir()}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(proto.as_posix() for proto in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    return generated_names(protos)


def _normalise(text: str) -> str:
    """Blank out generator version stamps so stubs from different grpcio-tools compare equal."""
    for pattern in _VERSION_PATTERNS:
        text = pattern.sub("<version>", text)
    return text


def _committed_stubs() -> set[Path]:
    """Return generated-looking files that are committed under PROTO_PACKAGE_DIR."""
    return {
        p.relative_to(PROTO_ROOT)
        for p in PROTO_PACKAGE_DIR.rglob("*_pb2*")
        if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
    }


def find_drift(fresh_dir: Path, names: list[Path]) -> list[str]:
    """Compare freshly generated stubs with the committed ones; describe each mismatch."""
    problems = []
    for name in names:
        committed = PROTO_ROOT / name
        if not committed.is_file():
            problems.append(f"{committed}: missing")
            continue
        fresh_text = (fresh_dir / name).read_text(encoding="utf-8")
        if _normalise(fresh_text) != _normalise(committed.read_text(encoding="utf-8")):
            problems.append(f"{committed}: differs from the generated code")
    # A stub whose .proto was deleted or renamed would otherwise linger unnoticed.
    for stale in sorted(_committed_stubs() - set(names)):
        problems.append(f"{PROTO_ROOT / stale}: stale, no .proto generates it")
    return problems


def check() -> int:
    """Regenerate into a temporary dir and report drift; return the process exit status."""
    with tempfile.TemporaryDirectory(prefix="streamstt-protos-") as tmp:
        problems = find_drift(Path(tmp), run_protoc(Path(tmp)))
    if problems:
        print("Generated stubs are out of date:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        print("Run: python protos/generate.py", file=sys.stderr)
        return 1
    print("Generated stubs are up to date.")
    return 0


def generate() -> int:
    """Regenerate the committed stubs in place; return the process exit status."""
    with tempfile.TemporaryDirectory(prefix="streamstt-protos-") as tmp:
        for name in run_protoc(Path(tmp)):
            target = PROTO_ROOT / name
            shutil.copyfile(Path(tmp) / name, target)
            print(f"wrote {target}")
    for stale in sorted(_committed_stubs() - set(generated_names(proto_files()))):
        print(f"warning: {PROTO_ROOT / stale} has no .proto; delete it", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the committed stubs differ from freshly generated ones",
    )
    args = parser.parse_args(argv)
    return check() if args.check else generate()


if __name__ == "__main__":
    sys.exit(main())
