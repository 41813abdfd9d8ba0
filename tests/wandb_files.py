"""Reading W&B's offline run files (`run-<id>.wandb`) back, once W&B's service process has finished them."""
from __future__ import annotations

import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768  # W&B's run file is a leveldb-style log: 32 KiB blocks of records, each with a 7-byte header
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_run_file(path: Path) -> list[wandb_internal_pb2.Record]:
    """The records of a W&B run file (`run-<id>.wandb`), in order."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, position, pieces = [], 7, b""
    while position + 7 <= len(data):
        if BLOCK - position % BLOCK < 7:  # a block's tail too short for a header is padding
            position += BLOCK - position % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0 and length == 0:
            break
        pieces += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            records.append(record)
            pieces = b""
    return records


def finished_run_records(path: Path, timeout_s: float = 60.0) -> list[wandb_internal_pb2.Record]:
    """The records of a run file once it holds the run's exit record: W&B's service process writes the file and
    may still be writing its last records after wandb.finish() has returned, so this waits for that record
    (not for a time) and fails only if it never comes."""
    deadline = time.monotonic() + timeout_s
    records = read_run_file(path)
    while not any(record.WhichOneof("record_type") == "exit" for record in records):
        assert time.monotonic() < deadline, f"the W&B run in {path} was never finished"
        time.sleep(0.2)
        records = read_run_file(path)
    return records
