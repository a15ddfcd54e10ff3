"""One driver per output folder at a time.

    claim(output, kind)  exclusive create of <output>/_claim.json (O_EXCL on a disk, a
                         conditional PUT on S3): this driver's host, process and job kind
      -> a second driver is refused with one line naming the first
      -> a claim whose driver died on this host (its process is gone) is taken over
    release              the claim file is removed when the driver finishes, however it ends

Without it, two encode drivers started together on one output both "succeed" and leave a
mix of two jobs' files.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.core import storage
from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)
CLAIM = "_claim.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's process: alive
        return True
    return True


def _holder(uri: str) -> dict | None:
    try:
        data = json.loads(storage.read_bytes(uri))
    except FileNotFoundError:
        return None
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _stale(holder: dict) -> bool:
    """A claim left by a driver that died on this host."""
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid)


@contextmanager
def claim(output: str, kind: str) -> Iterator[None]:
    """Hold ``output`` for this driver while the block runs."""
    uri = storage.join(output, CLAIM)
    me = {"kind": kind, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    for _ in range(2):
        try:
            if storage.create_exclusive(uri, json.dumps(me).encode()):
                break
        except PermissionError as err:
            raise ConfigError(f"{output}: cannot write to the output folder ({err})") from err
        holder = _holder(uri)
        if holder is not None and _stale(holder):
            log.warning("taking over %s: its driver (pid %s) is gone", uri, holder.get("pid"))
            storage.remove(uri)
            continue
        if holder is None:  # released between our try and our look
            continue
        who = f"{holder.get('kind', '?')} driver, pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
        raise ConfigError(
            f"{output} is in use by another {who} ({uri}); wait for it to finish, or delete that "
            "file if its driver is gone"
        )
    else:
        raise ConfigError(f"{output}: could not claim the output folder ({uri})")
    try:
        yield
    finally:
        storage.remove(uri)
