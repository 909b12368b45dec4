"""Reads a W&B offline run file (run-ID.wandb) back, for tests: the file is a LevelDB-style log of
protobuf `Record`s (a 7-byte header ':W&B', 0xBEE1, version; 32 KiB blocks; each chunk a 7-byte header
of crc32, length and type FULL/FIRST/MIDDLE/LAST). Only what the tests compare is decoded."""

from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1 and version == 0, "not a W&B run file"
    pos, parts = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        parts = chunk if kind in (FULL, FIRST) else parts + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            yield record


def history(path: Path) -> list[dict]:
    """Every logged history row: {key: value} with `_step`."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            row = {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in record.history.item}
            if record.history.HasField("step"):
                row["_step"] = record.history.step.num
            rows.append(row)
    return rows
