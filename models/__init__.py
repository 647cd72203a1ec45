"""Whisper in our own torch code: loaders, front end, batched decoding, quantization."""
