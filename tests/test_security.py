"""TLS, mTLS and bearer tokens on the bidirectional method, with real certificates."""

from __future__ import annotations

import datetime
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from conftest import DATA, reference, wer

from streamstt.client.client import (
    ClientOptions,
    StreamingClient,
    StreamInterrupted,
    file_chunks,
    streaming_config,
)
from streamstt.server.refusal import FIRST_REQUEST_WAIT_S
from streamstt.server.security import load_tokens
from streamstt.v1 import asr_pb2, asr_pb2_grpc

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _certificate(subject: str, issuer_key=None, issuer_name=None, ca: bool = False):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    certificate = builder.sign(issuer_key or key, hashes.SHA256())
    return key, certificate


def _pem(key, certificate) -> tuple[bytes, bytes]:
    return (
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        certificate.public_bytes(serialization.Encoding.PEM),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _certificate("streamstt test CA", ca=True)
    server_key, server_cert = _certificate("localhost", ca_key, ca_cert.subject)
    client_key, client_cert = _certificate("client", ca_key, ca_cert.subject)
    files = {}
    for name, (key, cert) in {
        "ca": (ca_key, ca_cert),
        "server": (server_key, server_cert),
        "client": (client_key, client_cert),
    }.items():
        key_pem, cert_pem = _pem(key, cert)
        (folder / f"{name}.key").write_bytes(key_pem)
        (folder / f"{name}.crt").write_bytes(cert_pem)
        files[f"{name}.key"], files[f"{name}.crt"] = folder / f"{name}.key", folder / f"{name}.crt"
    return files


def _stream(target: str, options: ClientOptions) -> str:
    rate, channels, chunks = file_chunks(DATA / "sample.wav", 100)
    with StreamingClient(target, options) as client:
        responses = list(
            client.stream(streaming_config(rate, channels=channels), chunks, timeout=60)
        )
    return " ".join(
        r.alternatives[0].transcript for resp in responses for r in resp.results if r.is_final
    )


def _localhost(running) -> str:
    return f"localhost:{running.running.port}"


def test_tls_works_and_plaintext_fails(make_server, pki):
    running = make_server(tls_cert=str(pki["server.crt"]), tls_key=str(pki["server.key"]))
    secure = ClientOptions(tls=True, root_certificates=pki["ca.crt"].read_bytes())
    assert wer([reference("sample")], [_stream(_localhost(running), secure)]) <= 0.10
    with pytest.raises(StreamInterrupted) as failed:
        _stream(_localhost(running), ClientOptions())
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE


def test_mtls_requires_a_client_certificate(make_server, pki):
    running = make_server(
        tls_cert=str(pki["server.crt"]),
        tls_key=str(pki["server.key"]),
        tls_client_ca=str(pki["ca.crt"]),
    )
    root = pki["ca.crt"].read_bytes()
    with pytest.raises(StreamInterrupted) as failed:
        _stream(_localhost(running), ClientOptions(tls=True, root_certificates=root))
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE
    with_cert = ClientOptions(
        tls=True,
        root_certificates=root,
        client_certificate=pki["client.crt"].read_bytes(),
        client_key=pki["client.key"].read_bytes(),
    )
    assert wer([reference("sample")], [_stream(_localhost(running), with_cert)]) <= 0.10


def test_bearer_token_on_the_bidi_method(make_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("first-token\nsecond-token\n")
    running = make_server(auth_tokens_file=str(tokens))
    before = running.scheduler.stats.steps
    for token in (None, "wrong", "second-token-but-longer"):
        with pytest.raises(StreamInterrupted) as failed:
            _stream(running.target, ClientOptions(token=token))
        assert failed.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert running.scheduler.stats.steps == before  # nothing reached the model
    text = _stream(running.target, ClientOptions(token="second-token"))
    assert wer([reference("sample")], [text]) <= 0.10
    with (
        StreamingClient(running.target, ClientOptions()) as client,
        pytest.raises(grpc.RpcError) as unary,
    ):
        client.list_models()
    assert unary.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("refusal", "code"),
    [("no token", grpc.StatusCode.UNAUTHENTICATED), ("draining", grpc.StatusCode.UNAVAILABLE)],
)
def test_a_refused_stream_is_refused_after_its_first_request(make_server, tmp_path, refusal, code):
    """A stream refused before its config is read (server.refusal) is refused once its first
    request has come (the write that could cross the refusal and turn the status into
    INTERNAL in grpc's asyncio client), and no more than FIRST_REQUEST_WAIT_S later where
    none comes."""
    tokens = tmp_path / "tokens"
    tokens.write_text("a-token\n")
    running = make_server(auth_tokens_file=str(tokens) if refusal == "no token" else "")
    running.running.servicer.draining = refusal == "draining"
    sent: list[float] = []
    never = threading.Event()

    def late_config():
        time.sleep(0.3)
        sent.append(time.monotonic())
        yield asr_pb2.StreamingRecognizeRequest()
        never.wait(10)  # no half-close: only the first request can end the wait

    def nothing():
        never.wait(10)
        yield from ()

    with grpc.insecure_channel(running.target) as channel:
        stub = asr_pb2_grpc.RecognizerStub(channel)
        ends: list[float] = []
        for requests in (late_config(), nothing()):
            start = time.monotonic()
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.StreamingRecognize(requests))
            ends.append(time.monotonic())
            assert refused.value.code() == code
            assert ends[-1] - start < FIRST_REQUEST_WAIT_S + 5
    never.set()
    assert sent and ends[0] >= sent[0]  # refused once its first request had gone out


def test_comment_lines_in_the_token_file_are_not_tokens(make_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# rotate monthly\n  # second comment\nreal-token\n\n")
    assert load_tokens(str(tokens)) == [b"real-token"]
    running = make_server(auth_tokens_file=str(tokens))
    for token in ("# rotate monthly", "#"):
        with pytest.raises(StreamInterrupted) as failed:
            _stream(running.target, ClientOptions(token=token))
        assert failed.value.code == grpc.StatusCode.UNAUTHENTICATED
    only_comments = tmp_path / "comments"
    only_comments.write_text("# nothing yet\n")
    with pytest.raises(ValueError, match="holds no tokens"):
        load_tokens(str(only_comments))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-client-ca", "ca.crt"], "tls_client_ca (mTLS) needs tls_cert"),
        (["--tls-cert", "server.crt"], "tls_cert and tls_key go together"),
        (["--tls-key", "server.key"], "tls_cert and tls_key go together"),
        # what a container without its Secret mounts sees
        (
            ["--tls-cert", "/etc/streamstt/tls/tls.crt", "--tls-key", "/etc/streamstt/tls/tls.key"],
            "cannot read TLS certificate (tls_cert) '/etc/streamstt/tls/tls.crt'",
        ),
        (["--auth-tokens-file", "/etc/streamstt/auth/tokens"], "cannot read token file"),
    ],
)
def test_inconsistent_tls_settings_refuse_to_start(flags, message):
    done = subprocess.run(
        [sys.executable, "-m", "streamstt.client.cli", "serve", "--port", "0", *flags],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
