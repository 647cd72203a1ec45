"""How `streamstt stream`, `mic` and `demo` show responses."""

from __future__ import annotations

import json
import sys

from google.protobuf.json_format import MessageToDict


class Display:
    """Partial transcript redrawn in place on a terminal (else on stderr, one a line);
    finals on their own lines on stdout."""

    def __init__(self, json_lines: bool) -> None:
        self.json_lines = json_lines
        self.tty = sys.stdout.isatty()
        self.partial = ""

    def show(self, response) -> None:
        if self.json_lines:
            print(json.dumps(MessageToDict(response)), flush=True)
            return
        for result in response.results:
            if result.is_final:
                self.clear()
                tag = f"[channel {result.channel_tag}] " if result.channel_tag else ""
                print(tag + result.alternatives[0].transcript, flush=True)
        interim = " ".join(
            r.alternatives[0].transcript
            for r in response.results
            if not r.is_final and r.alternatives
        )
        if interim and self.tty:
            self.clear()
            self.partial = interim
            sys.stdout.write("\x1b[2m" + interim[-200:] + "\x1b[0m")
            sys.stdout.flush()
        elif interim:  # finals alone on stdout, so `> out.txt` captures the transcript
            print(f"... {interim}", file=sys.stderr, flush=True)

    def clear(self) -> None:
        if self.tty and self.partial:
            sys.stdout.write("\r\x1b[2K")
            self.partial = ""
