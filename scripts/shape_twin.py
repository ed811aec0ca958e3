"""A shape twin of a GGUF model, for timing it where the model itself cannot travel.

The twin keeps the model's header (metadata, tokenizer, tensor table), its f32 tensors, and
one real sample of each quantized type; every quantized tensor's data is that sample tiled.
Prompt evaluation and generation then cost what the real model's do (the same shapes and
kernels), while its text is noise. `pack` writes the compact form (15 MB for the default
model instead of 491 MB); `unpack` rebuilds a GGUF file of the original size from it.

    python scripts/shape_twin.py pack MODEL.gguf twin.pack   # needs llama.cpp's gguf-py
    python scripts/shape_twin.py unpack twin.pack twin.gguf  # standard library only
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

SAMPLE_BYTES = 1 << 21


def pack(model: str, out: str) -> None:
    import gguf  # type: ignore[import-not-found]  # llama.cpp's gguf-py, from the sdist

    reader = gguf.GGUFReader(model)
    raw = Path(model).read_bytes()
    tensors, parts = [], [("header", raw[:reader.data_offset])]
    sampled: set[str] = set()
    for tensor in reader.tensors:
        kind, start, size = tensor.tensor_type.name, int(tensor.data_offset), int(tensor.n_bytes)
        tensors.append([tensor.name, kind, start, size])
        if kind == "F32":
            parts.append(("f32:" + tensor.name, raw[start:start + size]))
        elif kind not in sampled:
            block = gguf.GGML_QUANT_SIZES[tensor.tensor_type][1]
            take = min(size, SAMPLE_BYTES) // block * block
            parts.append(("sample:" + kind, raw[start:start + take]))
            sampled.add(kind)
    index, offset = [], 0
    for name, data in parts:
        index.append([name, offset, len(data)])
        offset += len(data)
    head = json.dumps({"tensors": tensors, "parts": index, "size": len(raw)}).encode()
    with open(out, "wb") as file:
        file.write(struct.pack("<Q", len(head)) + head)
        for _, data in parts:
            file.write(data)


def unpack(twin: str, out: str) -> None:
    with open(twin, "rb") as file:
        head = json.loads(file.read(struct.unpack("<Q", file.read(8))[0]))
        body = file.read()
    parts = {name: body[start:start + size] for name, start, size in head["parts"]}
    with open(out, "wb") as file:
        file.truncate(head["size"])
        file.write(parts["header"])
        for name, kind, start, size in head["tensors"]:
            file.seek(start)
            if kind == "F32":
                file.write(parts["f32:" + name])
            else:  # whole blocks: tensors and samples are both multiples of the block size
                sample = parts["sample:" + kind]
                repeats, rest = divmod(size, len(sample))
                file.write(sample * repeats + sample[:rest])


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("pack", "unpack"):
        sys.exit(__doc__)
    (pack if sys.argv[1] == "pack" else unpack)(sys.argv[2], sys.argv[3])
