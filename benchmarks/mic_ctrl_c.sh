#!/usr/bin/env bash
# Ctrl-C on `streamstt mic`, recorded: a private PulseAudio null sink is the microphone,
# a fixture is played into it, then SIGINT; prints the final and the time to exit.
# Needs pulseaudio, pulseaudio-utils, libportaudio2, libasound2-plugins (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d); trap 'HOME=$work XDG_RUNTIME_DIR=$work/run pulseaudio --kill || true; kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -m 700 "$work/run"
printf 'pcm.!default { type pulse }\nctl.!default { type pulse }\n' > "$work/.asoundrc"
export HOME=$work XDG_RUNTIME_DIR=$work/run
pulseaudio --daemonize=yes --exit-idle-time=-1 -n -L module-native-protocol-unix -L "module-null-sink sink_name=mic"
pactl set-default-source mic.monitor && pactl set-default-sink mic
streamstt serve --port 50077 2> "$work/server.log" & server=$!
until streamstt health --server 127.0.0.1:50077 > /dev/null 2>&1; do sleep 1; done
streamstt mic --server 127.0.0.1:50077 > "$work/out.txt" 2> "$work/err.txt" & mic=$!
until grep -q listening "$work/err.txt"; do sleep 0.2; done
paplay --device=mic "${1:-tests/data/en_us_female.wav}"
sleep 0.2
start=$(date +%s.%N); kill -INT $mic; set +e; wait $mic; code=$?; set -e; end=$(date +%s.%N)
echo "--- stdout (finals)"; cat "$work/out.txt"
echo "--- stderr"; cat "$work/err.txt"
printf -- '--- exit code %s, %.2f s from Ctrl-C to exit\n' "$code" "$(echo "$end - $start" | bc)"
