"""Single files written atomically (beside the target, then one rename; one PUT on an object
store), and JSON read back from any location.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.core.locations import Uri, is_uri, local_part, renames_atomically
from pipelines.io.filesystems import filesystem, read_bytes


def write_json_atomically(data: dict[str, Any], path: str | Path | Uri) -> None:
    """Write JSON so that readers see the old or the new content, never half: locally (and on
    shared mounts) a temporary sibling renamed into place; on a URI through ``write_bytes_atomically``."""
    if is_uri(path):
        write_bytes_atomically(json.dumps(data, indent=2, sort_keys=True).encode(), path)
        return
    path = Path(local_part(str(path)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


def write_bytes_atomically(content: bytes, uri: str | Uri) -> None:
    """Replace the file at ``uri`` (any pyarrow file system) so that readers see the old content or the
    new: where renames are atomic (HDFS), a temporary sibling renamed into place; on an object store
    one PUT of the whole object, which the store applies atomically."""
    fs, inner, _ = filesystem(uri)
    parent, _, name = inner.rpartition("/")
    fs.create_dir(parent, recursive=True)
    target = f"{parent}/.tmp-{uuid.uuid4().hex[:8]}-{name}" if renames_atomically(uri) else inner
    with fs.open_output_stream(target) as stream:
        stream.write(content)
    if target != inner:
        fs.move(target, inner)


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(staging)`` beside ``path`` (same name ending, e.g. ``.keras``), then rename it into
    place: readers (a resume, a serving job) see the old file or the new one, never half.
    Local files only (checkpoints, models: Keras and numpy write them to a local path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    write(staging)
    os.replace(staging, path)


def write_npz_atomically(path: Path, **arrays) -> None:
    """Write arrays as one .npz file, atomically (``write_atomically``)."""
    import numpy as np

    def savez(staging: Path) -> None:
        with open(staging, "wb") as handle:
            np.savez(handle, **arrays)

    write_atomically(path, savez)


def read_json(path: str | Path | Uri) -> dict[str, Any]:
    """The JSON file at ``path``, local or on any pyarrow file system."""
    if is_uri(path):
        return json.loads(read_bytes(str(path)))
    return json.loads(Path(local_part(str(path))).read_text())
