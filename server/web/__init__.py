"""Live captions in a browser: a WebSocket bridge onto StreamingRecognize and the page that
uses it (`streamstt serve --web-port PORT`; protocol and close codes in docs/web.md)."""

from .bridge import Loopback, WebBridge

__all__ = ["Loopback", "WebBridge"]
