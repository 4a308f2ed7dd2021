#!/usr/bin/env python3
"""Writes the bytes of a file as an llm.c version-1 token shard (uint16 tokens 0..255), the format of
dilatron's data.format: tokens (trainer/data.cc). It lets a model with a real vocabulary (GPT-2's
50304) train on the byte stream of a text file; the GPU throughput configs use it.

    python3 bench/reference/text_to_byte_shard.py data/tinyshakespeare.txt runs/data/tinyshakespeare-bytes.bin

Header: 256 little-endian int32, [0] magic 20240520, [1] version 1, [2] token count, the rest 0.
"""
import os
import struct
import sys

SHARD_MAGIC, SHARD_VERSION, HEADER_INTS = 20240520, 1, 256


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: text_to_byte_shard.py TEXT_FILE SHARD_FILE")
    source, target = sys.argv[1:]
    with open(source, "rb") as f:
        data = f.read()
    if not data:
        sys.exit(f"text_to_byte_shard: {source} is empty")
    header = [SHARD_MAGIC, SHARD_VERSION, len(data)] + [0] * (HEADER_INTS - 3)
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    partial = target + ".partial"
    with open(partial, "wb") as f:
        f.write(struct.pack(f"<{HEADER_INTS}i", *header))
        f.write(struct.pack(f"<{len(data)}H", *data))
    os.replace(partial, target)  # never leave a truncated shard under the final name
    print(f"text_to_byte_shard: {len(data)} tokens -> {target}")


if __name__ == "__main__":
    main()
