"""Where data lives: a local path, or a URI of another file system (``Uri``: ``s3://``, ``hdfs://``, ...),
and what each kind of place can do (``renames_atomically``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pipelines.core.errors import ConfigError

# Schemes whose rename of a folder is one atomic operation; every other remote scheme is treated
# as an object store (commit marker).
_RENAMING_SCHEMES = ("file", "hdfs", "viewfs")


_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class Uri:
    """A location on a file system reached by URI (``s3://bucket/key``, ``hdfs://namenode/path``).

    Joined with ``/`` and named like a ``Path`` (``name``, ``parent``, ``with_name``), but never
    resolved against the local disk: ``Path("s3://b/w")`` would be ``s3:/b/w``. ``os.fspath`` refuses
    it, so code that needs a local file fails loudly instead of writing to a folder named ``s3:``.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        scheme, rest = str(text).split("://", 1)
        authority, _, path = rest.partition("/")
        path = "/".join(part for part in path.split("/") if part)
        self.text = f"{scheme}://{authority}/{path}" if path else f"{scheme}://{authority}"

    def __truediv__(self, part: str) -> Uri:
        return Uri(f"{self.text}/{part}")

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Uri({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Uri) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    @property
    def scheme(self) -> str:
        return self.text.split("://", 1)[0]

    @property
    def name(self) -> str:
        head, _, tail = self.text.rpartition("/")
        return "" if head.endswith(":/") else tail  # the root (scheme://authority) has no name

    @property
    def parent(self) -> Uri:
        return self if not self.name else Uri(self.text.rsplit("/", 1)[0])

    def with_name(self, name: str) -> Uri:
        return self.parent / name

    def resolve(self) -> Uri:
        """A URI is absolute already (``Path.resolve``'s counterpart)."""
        return self


# Where a data set or file lives: a local path or a URI.
Location = Path | Uri


def scheme(location: str | Path | Uri) -> str | None:
    """The lower-case scheme of a URI (``s3``, ``file``, ...); None for a plain path."""
    match = _URI.match(str(location))
    return match.group(1).lower() if match else None


def is_uri(location: str | Path | Uri) -> bool:
    """Whether ``location`` is on a file system other than the local one (``file:`` URIs are local)."""
    if isinstance(location, Uri):
        return True
    match = _URI.match(str(location)) if isinstance(location, str) else None
    return bool(match) and match.group(1).lower() != "file"


def location(text: str | Path | Uri) -> Path | Uri:
    """``text`` as a ``Uri`` when it names another file system, else as an absolute local ``Path``
    (``file:/x`` and ``file:///x`` are ``/x``)."""
    if is_uri(text):
        return text if isinstance(text, Uri) else Uri(text)
    return Path(local_part(str(text))).resolve()


def local_part(text: str) -> str:
    """The local path in ``text`` (``file:/x`` and ``file:///x`` are ``/x``)."""
    if text.startswith("file://"):
        return text.removeprefix("file://")  # file:///x -> /x (file://host/x is not supported)
    return text.removeprefix("file:")


def require_local(where: str | Path | Uri, needs: str) -> Path:
    """``where`` as a local ``Path``, or one ConfigError line saying that ``needs`` (what keeps its
    files there) needs a local path or a shared mount, not a URI."""
    if is_uri(where):
        raise ConfigError(
            "workdir",
            f"{where} is a URI, but {needs} needs a local path or a shared mount (NFS, ...); "
            "data.source may be a URI",
        )
    return Path(local_part(str(where)))


def renames_atomically(location: str | Path | Uri) -> bool:
    """Whether a folder at ``location`` is replaced by one atomic rename (local, shared mounts, HDFS);
    False for object stores, where data sets are committed by ``COMMIT_MARKER`` instead."""
    match = _URI.match(str(location))
    return not match or match.group(1).lower() in _RENAMING_SCHEMES


def cache_folder() -> Path:
    """Where dlfusion keeps what it makes once per machine (``DLFUSION_CACHE``, default
    ``~/.cache/dlfusion``): the empty MLflow database, the Spark driver's class archive."""
    return Path(os.environ.get("DLFUSION_CACHE") or Path.home() / ".cache" / "dlfusion")
