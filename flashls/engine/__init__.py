"""Engines turn a fill-in-the-middle request into tokens: llama.cpp in-process, an
inference server over HTTP (`remote`), or a fake.

`base` holds the shared types, `worker` the single thread that owns the model.
"""
