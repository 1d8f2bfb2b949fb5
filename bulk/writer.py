"""Writing an export's NDJSON files: `<directory>/<Type>-<n>.ndjson`, one stored resource per line.

Each type is read in keyset batches (bulk.selection) and appended to its current file; after
every batch the file is flushed and the type's state (files with their counts and byte lengths,
the last id written) goes to `checkpoint`, which the worker stores in the job row. A worker
that dies between two checkpoints leaves at most one batch beyond the recorded length: the next
worker cuts the file back to that length and reads on after the recorded id, so no line is
written twice and none is lost. A file shorter than recorded (lost with a machine crash before
the page cache reached the disk) restarts its type. Files are fsynced when they are complete.

Lines are the stored JSON text, which the repository writes compact (orjson, no newline: JSON
strings escape theirs), after `phi.reveal` decrypts what the PHI policy encrypts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import orjson
from django.conf import settings

from bulk.selection import Selection, read_batch
from fhirserver.storage.phi import reveal

ERROR_FILE = "error-1.ndjson"  # lowercase: no resource type can be named like it

# (resource type, its state) -> False when the export was cancelled meanwhile
Checkpoint = Callable[[str, dict], bool]


def write_type(
    selection: Selection, resource_type: str, directory: Path, state: dict, checkpoint: Checkpoint
) -> bool:
    """Write (or go on writing) one type's files; False when cancelled."""
    files: list[dict] = state.setdefault("files", [])
    if state.get("done"):
        return True
    handle = _resume(resource_type, directory, state)
    limit, batch_size = settings.EXPORT_FILE_MAX_RESOURCES, settings.EXPORT_BATCH_SIZE
    try:
        while True:
            written, last = 0, None
            for resource_id, content in read_batch(
                selection, resource_type, state.get("after", ""), batch_size
            ):
                if handle is None or files[-1]["count"] >= limit:
                    handle = _next_file(handle, resource_type, directory, files)
                handle.write(f"{reveal(resource_type, resource_id, content)}\n".encode())
                files[-1]["count"] += 1
                written, last = written + 1, resource_id
            if written:
                handle.flush()
                files[-1]["bytes"] = handle.tell()
                state["after"] = last
            if written < batch_size:
                break
            if not checkpoint(resource_type, state):
                return False
        _close(handle)
        handle = None
        state["done"] = True
        return checkpoint(resource_type, state)
    finally:
        if handle is not None:
            handle.close()


def _resume(resource_type: str, directory: Path, state: dict):
    """The open last file of an interrupted type, cut back to its checkpoint; None to start
    a new file (or the type afresh when its file is shorter than recorded)."""
    files = state["files"]
    if not files:
        return None
    last = directory / files[-1]["name"]
    if last.exists() and last.stat().st_size >= files[-1]["bytes"]:
        handle = open(last, "r+b")
        handle.truncate(files[-1]["bytes"])
        handle.seek(files[-1]["bytes"])
        return handle
    for entry in files:
        (directory / entry["name"]).unlink(missing_ok=True)
    state.clear()
    state["files"] = []
    return None


def _next_file(handle, resource_type: str, directory: Path, files: list[dict]):
    _close(handle)
    name = f"{resource_type}-{len(files) + 1}.ndjson"
    files.append({"name": name, "count": 0, "bytes": 0})
    return open(directory / name, "wb")


def _close(handle) -> None:
    if handle is not None:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()


def write_notes(directory: Path, notes: list[str]) -> str | None:
    """The error file of the manifest: one OperationOutcome per note (ignored parameters,
    types left out). None when there is nothing to say."""
    if not notes:
        return None
    outcomes = [
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "warning", "code": "informational", "diagnostics": note}],
        }
        for note in notes
    ]
    (directory / ERROR_FILE).write_bytes(b"".join(orjson.dumps(outcome) + b"\n" for outcome in outcomes))
    return ERROR_FILE


def total(progress: dict) -> int:
    """Resources written so far, over every type."""
    return sum(entry["count"] for state in progress.values() for entry in state.get("files", []))
