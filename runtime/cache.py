"""On-disk cache of native object code.

Key: sha256 of the compiled text and `jit.target_key()` (llvmlite and LLVM versions, target
triple, CPU name and features), so code built for another CPU or LLVM is never reused.  The
LLVM kernel (runtime/llvm_kernel.py) keys on the graph's text form plus `codegen_version()` (a
hash of the code generator's sources) rather than on the LLVM IR, so a warm cache hit never
emits IR.
Objects hold no absolute addresses (externals are relinked by name), so they are valid in any
process.  Location: $GRADC_CACHE_DIR, else ~/.cache/gradc.

Entry file: MAGIC, sha256 of the payload (32 bytes), payload = externals line + object bytes.
Writes are atomic (a temporary file in the same directory, then os.replace); an entry that is
truncated, altered or unreadable is ignored and rebuilt, never trusted.
"""
from __future__ import annotations

import glob
import os

try:                        # the builtin SHA-256 (importing hashlib loads OpenSSL: ~9 ms)
    from _sha2 import sha256          # Python >= 3.12
except ImportError:
    try:
        from _sha256 import sha256    # Python 3.10, 3.11
    except ImportError:
        from hashlib import sha256

MAGIC = b"GRADC-OBJ-1\n"


def cache_dir() -> str:
    return os.environ.get("GRADC_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "gradc")


# every source that turns a graph into object code, as patterns: a new lowering module or pass
# is covered without anyone remembering to list it
_CODEGEN_GLOBS = ("compiler/codegen/llvm_*.py", "compiler/passes/*.py", "compiler/ir.py",
                  "runtime/jit.py", "runtime/blas.py")
_version: list = []


def codegen_version() -> str:
    """sha256 of the sources that turn a graph into object code (the LLVM lowerings, the fusion
    analysis, the JIT's optimization settings): a kernel keyed by its graph's text plus this
    never reuses an object built by other code generator sources."""
    if not _version:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        h = sha256()
        files = sorted({os.path.relpath(f, root) for pattern in _CODEGEN_GLOBS
                        for f in glob.glob(os.path.join(root, pattern))})
        for rel in files:
            try:
                with open(os.path.join(root, rel), "rb") as f:
                    h.update(f.read())
            except OSError:
                h.update(b"missing " + rel.encode())
            h.update(b"\0")
        _version.append(h.hexdigest())
    return _version[0]


def key(ir_text: str, target: str) -> str:
    h = sha256()
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
    if sha256(payload).digest() != digest:
        return None
    line, sep, obj = payload.partition(b"\n")
    if not sep or not obj:
        return None
    ext = [e for e in line.decode("ascii", "replace").split(",") if e]
    return obj, ext


def put(k: str, obj: bytes, ext) -> bool:
    """Store an entry atomically; False (and no error) if the directory is not writable."""
    payload = ",".join(ext).encode("ascii") + b"\n" + obj
    data = MAGIC + sha256(payload).digest() + payload
    target = path_for(k)
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        import tempfile
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
