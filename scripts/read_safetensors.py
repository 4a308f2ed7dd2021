#!/usr/bin/env python3
"""Reads a safetensors file with the standard library only (struct + json), by the format spec.

Format (huggingface/safetensors): an unsigned 64-bit little-endian header length N, N bytes of
UTF-8 JSON mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (byte
offsets into the data area that follows the header) plus an optional "__metadata__" of
string -> string; then the data area, little-endian, row-major. This checks what the
`safetensors` Python library checks: offsets in range, sized to dtype x shape, tiling the data
area without gaps or overlap.

Usage: read_safetensors.py FILE        prints {"metadata": ..., "tensors": {name: {dtype, shape, values}}}
       as JSON (values flattened, row-major; floats print exactly, so they round-trip).
"""
import json
import struct
import sys

# dtype -> (struct code, bytes per element); BF16 is widened to float32 by hand.
DTYPES = {"F64": ("d", 8), "F32": ("f", 4), "I64": ("q", 8), "I32": ("i", 4), "I16": ("h", 2),
          "I8": ("b", 1), "U8": ("B", 1), "BOOL": ("?", 1), "BF16": (None, 2)}


def load(path):
    """Returns (tensors, metadata): tensors maps name -> (dtype, shape, flat list of values)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for safetensors")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise ValueError(f"{path}: header length {n} exceeds the file")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    metadata = header.pop("__metadata__", {})
    spans = []
    tensors = {}
    for name, entry in header.items():
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        code, size = DTYPES[dtype]
        numel = 1
        for d in shape:
            numel *= d
        if not 0 <= begin <= end <= len(data) or end - begin != numel * size:
            raise ValueError(f"{path}: tensor {name}: data_offsets {begin, end} do not fit shape {shape} of {dtype}")
        chunk = data[begin:end]
        if code is None:
            values = [struct.unpack("<f", b"\0\0" + chunk[i:i + 2])[0] for i in range(0, len(chunk), 2)]
        else:
            values = list(struct.unpack(f"<{numel}{code}", chunk))
        tensors[name] = (dtype, list(shape), values)
        spans.append((begin, end, name))
    covered = 0
    for begin, end, name in sorted(spans):
        if begin != covered:
            raise ValueError(f"{path}: tensor {name} starts at {begin}, previous ends at {covered}")
        covered = end
    if covered != len(data):
        raise ValueError(f"{path}: tensors cover {covered} of {len(data)} data bytes")
    return tensors, metadata


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    tensors, metadata = load(argv[1])
    out = {"metadata": metadata,
           "tensors": {name: {"dtype": d, "shape": s, "values": v} for name, (d, s, v) in tensors.items()}}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv)
