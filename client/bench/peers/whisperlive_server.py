"""WhisperLive's server as its own run_server.py starts it, for `streamstt bench --peer`.

Run with the peer venv's Python (benchmarks/peers/setup.sh), never imported by streamstt:
it imports whisper_live, which is not one of our dependencies. The wheel ships no
run_server.py, so this does what upstream's does with its defaults: the faster_whisper
backend, one shared model (a custom model path), OMP_NUM_THREADS from the caller.

    python whisperlive_server.py PORT MODEL_DIR MAX_CLIENTS
"""

import sys

# run_server.py's own defaults (collabora/WhisperLive): a week per connection, cache dir.
MAX_CONNECTION_TIME_S = 7 * 24 * 60 * 60
CACHE_PATH = "~/.cache/whisper-live/"


def main(argv: list[str]) -> None:
    port, model_dir, max_clients = int(argv[0]), argv[1], int(argv[2])
    from whisper_live.server import TranscriptionServer

    # run_server.py's choices for a custom faster_whisper model: one model for all clients.
    settings = dict(backend="faster_whisper", faster_whisper_custom_model_path=model_dir)
    settings.update(single_model=True, max_clients=max_clients)
    settings.update(max_connection_time=MAX_CONNECTION_TIME_S, cache_path=CACHE_PATH)
    TranscriptionServer().run("127.0.0.1", port=port, **settings)


if __name__ == "__main__":
    main(sys.argv[1:])
