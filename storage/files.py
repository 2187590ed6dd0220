"""Durable file operations: what it takes for a rename or a write to survive power loss."""

import os


def fsync_dir(path: str) -> None:
    """Make a rename or creation inside directory `path` durable."""
    fsync_file(path)


def fsync_file(path: str) -> None:
    """Make what was written to `path` (a file or a directory) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes, durable: bool = True) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never half."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(os.path.dirname(os.path.abspath(path)))
