"""On-disk cache of native object code.

Key: sha256 of the LLVM IR text and `jit.target_key()` (llvmlite and LLVM versions, target
triple, CPU name and features), so code built for another CPU or LLVM is never reused.
Objects hold no absolute addresses (externals are relinked by name), so they are valid in any
process.  Location: $GRADC_CACHE_DIR, else ~/.cache/gradc.

Entry file: MAGIC, sha256 of the payload (32 bytes), payload = externals line + object bytes.
Writes are atomic (a temporary file in the same directory, then os.replace); an entry that is
truncated, altered or unreadable is ignored and rebuilt, never trusted.
"""
from __future__ import annotations

import hashlib
import os
import tempfile

MAGIC = b"GRADC-OBJ-1\n"


def cache_dir() -> str:
    return os.environ.get("GRADC_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "gradc")


def key(ir_text: str, target: str) -> str:
    h = hashlib.sha256()
    h.update(target.encode())
    h.update(b"\0")
    h.update(ir_text.encode())
    return h.hexdigest()


def path_for(k: str) -> str:
    return os.path.join(cache_dir(), k[:2], k + ".o")


def get(k: str):
    """(object bytes, externals) for key `k`, or None if missing or corrupt."""
    try:
        with open(path_for(k), "rb") as f:
            data = f.read()
    except OSError:
        return None
    head = len(MAGIC) + 32
    if len(data) < head or not data.startswith(MAGIC):
        return None
    digest, payload = data[len(MAGIC):head], data[head:]
    if hashlib.sha256(payload).digest() != digest:
        return None
    line, sep, obj = payload.partition(b"\n")
    if not sep or not obj:
        return None
    ext = [e for e in line.decode("ascii", "replace").split(",") if e]
    return obj, ext


def put(k: str, obj: bytes, ext) -> bool:
    """Store an entry atomically; False (and no error) if the directory is not writable."""
    payload = ",".join(ext).encode("ascii") + b"\n" + obj
    data = MAGIC + hashlib.sha256(payload).digest() + payload
    target = path_for(k)
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(target))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError:
        return False
    return True
