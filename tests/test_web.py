"""The WebSocket bridge (server/web): a real server on port 0 with `web_port=0`, real audio
through the real model, and the same refusals as gRPC, word for word. The browser test is in
tests/test_web_page.py."""

from __future__ import annotations

import asyncio
import json
import ssl

import aiohttp
import grpc
import pytest
from conftest import DATA, reference, wer
from test_security import pki  # noqa: F401 - the fixture: a CA, server and client certificates

from streamstt.client.client import StreamingClient, file_chunks, streaming_config
from streamstt.server.web.protocol import HAS_FINALIZE, close_code
from streamstt.v1 import asr_pb2

TOKEN = "web-secret"


@pytest.fixture(scope="module")
def web_server(transcriber):
    from conftest import ServerThread, server_config

    running = ServerThread(server_config(web_port=0, idle_timeout_s=20), transcriber).start()
    yield running
    running.stop()


def _url(running, query: str = "") -> str:
    return f"ws://127.0.0.1:{running.running.web_port}/v1/stream{query}"


def config_json(config: asr_pb2.StreamingRecognitionConfig) -> str:
    from google.protobuf.json_format import MessageToJson

    return MessageToJson(config)


def ws_stream(url: str, messages: list, protocols: tuple[str, ...] = (), tls=None) -> dict:
    """Send the messages (str: text, bytes: binary), then read until the server closes."""

    async def run() -> dict:
        texts: list[dict] = []
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, protocols=protocols, ssl=tls if tls else True) as ws,
        ):
            for message in messages:
                if isinstance(message, bytes):
                    await ws.send_bytes(message)
                else:
                    await ws.send_str(message)
            async for reply in ws:
                texts.append(json.loads(reply.data))
            code = ws.close_code
        errors = [t["error"] for t in texts if "error" in t]
        responses = [t for t in texts if "error" not in t]
        return {"responses": responses, "error": errors[0] if errors else None, "code": code}

    return asyncio.run(asyncio.wait_for(run(), 120))


def grpc_error(target: str, requests: list, token: str | None = None) -> grpc.RpcError:
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(
            "/streamstt.v1.Recognizer/StreamingRecognize",
            request_serializer=asr_pb2.StreamingRecognizeRequest.SerializeToString,
            response_deserializer=asr_pb2.StreamingRecognizeResponse.FromString,
        )
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        with pytest.raises(grpc.RpcError) as raised:
            list(call(iter(requests), metadata=metadata, timeout=30))
    return raised.value


def finals_text(responses: list[dict]) -> str:
    return " ".join(
        r["alternatives"][0]["transcript"]
        for response in responses
        for r in response.get("results", [])
        if r.get("isFinal")
    )


def test_a_file_over_websocket_gets_its_finals(web_server):
    rate, channels, chunks = file_chunks(DATA / "en_us_female.wav")
    config = config_json(streaming_config(rate, channels=channels))
    got = ws_stream(_url(web_server), [config, *chunks, json.dumps({"end": True})])
    assert got["code"] == 1000 and got["error"] is None
    assert any(not r.get("isFinal") for x in got["responses"] for r in x.get("results", []))
    assert wer([reference("en_us_female")], [finals_text(got["responses"])]) <= 0.10
    assert all("processing" in x for x in got["responses"] if x.get("results"))


def _config(**changes) -> asr_pb2.StreamingRecognitionConfig:
    config = streaming_config(16000)
    for name, value in changes.items():
        setattr(config.config, name, value)
    return config


# Each refusal as a gRPC call and as the same stream over the bridge.
REFUSALS = {
    "container encoding": ([_config(encoding=asr_pb2.MP3)], []),
    "rate out of range": ([_config(sample_rate_hertz=4000)], []),
    "unknown model": ([_config(model="no-such-model")], []),
    "audio before config": ([], [b"\0\0" * 1600]),
    "odd LINEAR16 bytes": ([_config()], [b"\0" * 3201]),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_are_the_grpc_ones_word_for_word(web_server, case):
    configs, audio = REFUSALS[case]
    requests = [asr_pb2.StreamingRecognizeRequest(streaming_config=c) for c in configs]
    requests += [asr_pb2.StreamingRecognizeRequest(audio_content=a) for a in audio]
    expected = grpc_error(web_server.target, requests)
    got = ws_stream(_url(web_server), [*(config_json(c) for c in configs), *audio])
    assert got["error"] == {"code": expected.code().name, "message": expected.details()}
    assert got["code"] == close_code(expected.code()) == 4000 + expected.code().value[0]


@pytest.mark.parametrize(
    "messages, code, words",
    [
        (["{not json"], "INVALID_ARGUMENT", "StreamingRecognitionConfig in protobuf JSON"),
        (['{"config": {"encoding": "OPUS_LOUD"}}'], "INVALID_ARGUMENT", "OPUS_LOUD"),
        ([config_json(_config()), '{"end": true}', b"\0\0"], "INVALID_ARGUMENT", "after"),
        ([config_json(_config()), '{"stop": 1}'], "INVALID_ARGUMENT", '{"end": true}'),
    ],
)
def test_messages_only_the_bridge_reads_get_precise_errors(web_server, messages, code, words):
    got = ws_stream(_url(web_server), messages)
    assert got["error"]["code"] == code and words in got["error"]["message"], got
    assert got["code"] == close_code(getattr(grpc.StatusCode, code))


def test_finalize_closes_the_utterance_and_keeps_the_stream(web_server):
    """`{"finalize": true}` is the contract's Finalize request where asr.proto has it (issue
    18), else UNIMPLEMENTED, said so."""
    rate, channels, chunks = file_chunks(DATA / "en_us_female.wav")
    config = config_json(streaming_config(rate, channels=channels))
    finalize, end = json.dumps({"finalize": True}), json.dumps({"end": True})
    got = ws_stream(_url(web_server), [config, *chunks[:30], finalize, *chunks[30:], end])
    if not HAS_FINALIZE:
        assert got["error"]["code"] == "UNIMPLEMENTED" and got["code"] == 4012, got
        return
    finals = [r for x in got["responses"] for r in x.get("results", []) if r.get("isFinal")]
    assert got["code"] == 1000 and len(finals) >= 2, got
    assert wer([reference("en_us_female")], [finals_text(got["responses"])]) <= 0.15


def test_a_socket_without_a_config_is_closed_after_the_idle_timeout(make_server):
    running = make_server(web_port=0, idle_timeout_s=0.5)
    got = ws_stream(_url(running), [])
    assert got["code"] == 4004 and got["error"]["code"] == "DEADLINE_EXCEEDED", got


def test_bearer_token_by_subprotocol_or_query(make_server, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    running = make_server(web_port=0, auth_tokens_file=str(tokens))
    config = config_json(_config())
    expected = grpc_error(running.target, [asr_pb2.StreamingRecognizeRequest()])
    refused = ws_stream(_url(running), [config, json.dumps({"end": True})])
    assert expected.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused["error"] == {"code": "UNAUTHENTICATED", "message": expected.details()}
    assert refused["code"] == 4016
    silence = b"\0\0" * 16000
    for url, protocols in (
        (_url(running), ("bearer", TOKEN)),
        (_url(running, f"?token={TOKEN}"), ()),
    ):
        got = ws_stream(url, [config, silence, json.dumps({"end": True})], protocols)
        assert got["code"] == 1000 and got["error"] is None, got


def test_the_page_is_served(web_server):
    async def get() -> tuple[int, str]:
        page = f"http://127.0.0.1:{web_server.running.web_port}/"
        async with aiohttp.ClientSession() as session, session.get(page) as reply:
            return reply.status, await reply.text()

    status, page = asyncio.run(get())
    assert status == 200 and "audioWorklet" in page and "/v1/stream" in page
    assert "http" not in page.replace("https:", "").replace("http-equiv", "")  # no CDN


def test_grpc_and_websocket_streams_share_the_server(web_server):
    """The bridge's streams are the server's streams: the drain and max_streams count them."""
    rate, channels, chunks = file_chunks(DATA / "sample.wav")
    with StreamingClient(web_server.target) as client:
        over_grpc = [
            r for x in client.stream(streaming_config(rate, channels=channels), chunks)
            for r in x.results if r.is_final
        ]  # fmt: skip
    config = config_json(streaming_config(rate, channels=channels))
    got = ws_stream(_url(web_server), [config, *chunks, json.dumps({"end": True})])
    assert finals_text(got["responses"]) == " ".join(
        r.alternatives[0].transcript for r in over_grpc
    )


def test_bench_sends_the_first_streams_over_the_bridge(web_server, tmp_path):
    """`streamstt bench --websocket 1`: one stream over gRPC, one over the bridge, one report."""
    from streamstt.client.cli.parser import build_parser

    web = f"127.0.0.1:{web_server.running.web_port}"
    args = build_parser().parse_args(
        ["bench", "--server", web_server.target, "--web-server", web, "--websocket", "1",
         "--audio", str(DATA / "sample.wav"), "--streams", "2", "--latency-budget-ms", "3000",
         "--no-plots", "--out", str(tmp_path)]
    )  # fmt: skip
    assert args.func(args) == 0
    level = json.loads((tmp_path / "report.json").read_text())["systems"]["streamstt"]
    streams = level["levels"][0]["per_stream"]
    assert [s["transport"] for s in streams] == ["grpc", "websocket"]  # spread evenly
    assert all(s["error"] is None and s["wer_reference"] <= 0.10 for s in streams), streams
    assert set(level["levels"][0]["by_transport"]) == {"websocket", "grpc"}


def test_a_drain_finalises_websocket_streams_then_closes_the_bridge(make_server):
    """SIGTERM's drain covers the bridge's streams: after grace_s the audio heard gets its
    final, then UNAVAILABLE (close 4014), and the web port is closed with the server."""
    running = make_server(web_port=0, grace_s=0.5, drain_finals_s=10)
    rate, channels, chunks = file_chunks(DATA / "en_us_female.wav")
    config = config_json(streaming_config(rate, channels=channels))

    async def stream_then_drain() -> dict:
        texts, loop = [], asyncio.get_running_loop()
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(_url(running))
            await ws.send_str(config)
            for chunk in chunks[:40]:  # 4 s at real time, then the drain starts mid-speech
                await ws.send_bytes(chunk)
                await asyncio.sleep(0.1)
            drain = loop.run_in_executor(None, running.call, running.running.drain_and_stop())
            async for reply in ws:
                texts.append(json.loads(reply.data))
            await drain
            return {"texts": texts, "code": ws.close_code}

    got = asyncio.run(asyncio.wait_for(stream_then_drain(), 120))
    assert got["code"] == 4014 and got["texts"][-1]["error"]["code"] == "UNAVAILABLE", got
    assert finals_text(got["texts"][:-1]).startswith("The children played")
    with pytest.raises(aiohttp.ClientConnectionError):
        ws_stream(_url(running), [config])


def test_the_web_port_serves_mtls_like_the_grpc_port(make_server, pki):  # noqa: F811
    """With TLS and a client CA on the gRPC port, the bridge is wss:// with the same
    certificate and asks for a client certificate from the same CA: no plaintext side door."""
    running = make_server(
        web_port=0,
        tls_cert=str(pki["server.crt"]),
        tls_key=str(pki["server.key"]),
        tls_client_ca=str(pki["ca.crt"]),
    )
    url = f"wss://localhost:{running.running.web_port}/v1/stream"
    rate, channels, chunks = file_chunks(DATA / "sample.wav")
    messages = [config_json(streaming_config(rate, channels=channels)), *chunks, '{"end": true}']
    anonymous = ssl.create_default_context(cafile=str(pki["ca.crt"]))
    with pytest.raises(aiohttp.ClientError):
        ws_stream(url, messages, tls=anonymous)
    with pytest.raises(aiohttp.ClientError):
        ws_stream(url.replace("wss:", "ws:"), messages)
    known = ssl.create_default_context(cafile=str(pki["ca.crt"]))
    known.load_cert_chain(str(pki["client.crt"]), str(pki["client.key"]))
    got = ws_stream(url, messages, tls=known)
    assert (
        got["code"] == 1000 and wer([reference("sample")], [finals_text(got["responses"])]) <= 0.1
    )
