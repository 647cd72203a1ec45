#!/usr/bin/env bash
# Creates the venv that `streamstt bench --peer whisperlive` runs the peer server from.
# The peer's dependencies (torch, openvino, ...: several GB) live here, never in the
# project's own environment or in CI.
#
#   benchmarks/peers/setup.sh [--venv DIR] [--python PYTHON]
#
# Default DIR: ${STREAMSTT_PEER_VENV:-~/.cache/streamstt/peers/whisperlive}
set -euo pipefail

WHISPERLIVE_VERSION="0.10.0"  # the version the adapter's protocol was recorded against
venv="${STREAMSTT_PEER_VENV:-$HOME/.cache/streamstt/peers/whisperlive}"
python="${PYTHON:-python3}"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

# pyaudio (a whisper-live requirement, unused by the server) builds against PortAudio.
if ! [[ -e /usr/include/portaudio.h ]]; then
  if command -v apt-get >/dev/null && [[ $(id -u) -eq 0 ]]; then
    apt-get install -y portaudio19-dev
  else
    echo "portaudio19-dev is needed to build pyaudio: apt-get install portaudio19-dev" >&2
    exit 1
  fi
fi

if ! [[ -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --upgrade pip
"$venv/bin/python" -m pip install "whisper-live==$WHISPERLIVE_VERSION"
"$venv/bin/python" -c "import whisper_live.server, faster_whisper; print('whisper-live ready in $venv')"
