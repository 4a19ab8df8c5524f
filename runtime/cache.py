"""On-disk cache of native object code, trusted only where its own user wrote it.

Key: sha256 of the compiled text and `jit.target_key()` (llvmlite and LLVM versions, target
triple, CPU name and features), so code built for another CPU or LLVM is never reused.  The
LLVM kernel (runtime/llvm_kernel.py) keys on the graph's text form plus `codegen_version()` (a
hash of the code generator's sources) rather than on the LLVM IR, so a warm cache hit never
emits IR.
Objects hold no absolute addresses (externals are relinked by name), so they are valid in any
process.  Location: $GRADC_CACHE_DIR, else ~/.cache/gradc.

Trust (the rules of ccache, pip and Python's __pycache__; an entry is code that will run):
- Directories gradc creates are 0700 whatever the umask.  The cache root is used only if it is
  a directory owned by this user and not group/world writable; otherwise (a shared /tmp, a
  0777 directory, another user's) entries go to a private subdirectory `gradc-<uid>` inside it,
  checked the same way, and when that is not private either, nothing is read or written (the
  kernel is built in memory).  Every level below the root is opened relative to its parent's
  descriptor with O_NOFOLLOW, so a symbolic link or a swapped path is never followed.
- An entry is read only if it is a regular file owned by this user, not group/world writable,
  in a shard directory with the same properties.
- Entry file: MAGIC, HMAC-SHA256 (32 bytes) of MAGIC + key + payload under a per-user secret
  (KEY_FILE in the root: 32 random bytes, created 0600 with O_EXCL and published with link(),
  trusted only if owned by this user with no group/world bits), payload = externals line +
  object bytes.  A file written by anyone without the secret fails the check; entry names are
  predictable, their contents cannot be forged.
- Writes are atomic (a temporary file in the same directory, then rename over the old name; a
  planted symlink or foreign file in the way is replaced, never written through).
Anything refused is a miss (the object is rebuilt), with one CacheWarning per path and process;
an entry from an older gradc format is a silent miss.  What is read is still only bytes: the
JIT checks the object's structure and symbols (runtime/elf.py) before linking it.
"""
from __future__ import annotations

import os
import stat
import threading
import warnings

try:                        # the builtin SHA-256 (importing hashlib loads OpenSSL: ~9 ms)
    from _sha2 import sha256          # Python >= 3.12
except ImportError:
    try:
        from _sha256 import sha256    # Python 3.10, 3.11
    except ImportError:
        from hashlib import sha256
from _operator import _compare_digest as _same    # hmac.compare_digest, without hashlib

MAGIC = b"GRADC-OBJ-2\n"
OLD_MAGIC = b"GRADC-OBJ-"            # any earlier format: a silent miss
KEY_FILE = ".hmac-key"


class CacheWarning(UserWarning):
    """A cache directory, entry or key file was not trusted (wrong owner, writable by others,
    a symbolic link, or an entry whose keyed hash does not match): it is not used."""


def cache_dir() -> str:
    return os.environ.get("GRADC_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "gradc")


# every source that turns a graph into object code, as patterns: a new lowering module or pass
# is covered without anyone remembering to list it
_CODEGEN_GLOBS = ("compiler/codegen/llvm_*.py", "compiler/ops/*.py", "compiler/passes/*.py",
                  "compiler/artifact.py", "compiler/ir.py", "runtime/jit.py", "runtime/blas.py",
                  "runtime/llvm_opt.py")
_version: list = []


def _matching(root: str, pattern: str) -> list:
    """The files under `root` that `pattern` names (relative paths): a path, or `folder/a*b`
    (one `*` in the file name; hidden files excluded, as glob does).  Read with one listdir:
    glob and fnmatch compile regular expressions (about 1 ms of a warm start)."""
    folder, name = os.path.split(pattern)
    if "*" not in name:
        return [pattern] if os.path.isfile(os.path.join(root, pattern)) else []
    head, tail = name.split("*")
    try:
        names = os.listdir(os.path.join(root, folder))
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names if not n.startswith(".")
            and n.startswith(head) and n.endswith(tail) and len(n) >= len(head) + len(tail)]


def codegen_version() -> str:
    """sha256 of the sources that turn a graph into object code (the LLVM lowerings, the fusion
    analysis, the JIT's optimization settings): a kernel keyed by its graph's text plus this
    never reuses an object built by other code generator sources."""
    if not _version:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        h = sha256()
        files = sorted({f for pattern in _CODEGEN_GLOBS for f in _matching(root, pattern)})
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


_SAFE = hasattr(os, "geteuid") and hasattr(os, "O_NOFOLLOW") and os.open in os.supports_dir_fd
_DIR = getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0) | os.O_RDONLY
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_warned: set = set()
_warn_lock = threading.Lock()


def _warn(path: str, why: str) -> None:
    """One CacheWarning per path and process."""
    with _warn_lock:
        if path in _warned:
            return
        _warned.add(path)
    warnings.warn(f"gradc cache: {path}: {why}", CacheWarning, stacklevel=4)


def _fault(st, kind: str) -> str | None:
    """Why a file of this stat is not trusted as a `kind` ("dir" or "file"), or None."""
    if not (stat.S_ISDIR if kind == "dir" else stat.S_ISREG)(st.st_mode):
        return "not a directory" if kind == "dir" else "not a regular file"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _private_name() -> str:
    return f"gradc-{os.geteuid()}"


def _mkdirs(path: str) -> None:
    """Create `path` and missing parents, each new one 0700 whatever the umask."""
    parent = os.path.dirname(path)
    if parent and parent != path and not os.path.lexists(parent):
        _mkdirs(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return
    fd = os.open(path, _DIR | _NOFOLLOW)
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _subdir(parent_fd: int, name: str, where: str, create: bool) -> int | None:
    """A checked descriptor of directory `name` under `parent_fd` (created 0700), or None."""
    try:
        fd = os.open(name, _DIR | _NOFOLLOW, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            return None
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            pass
        try:
            fd = os.open(name, _DIR | _NOFOLLOW, dir_fd=parent_fd)
        except OSError as e:
            _warn(where, f"cannot be opened as a directory ({e.strerror})")
            return None
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
            os.fchmod(fd, 0o700)
    except OSError as e:            # a symbolic link (ELOOP), a file (ENOTDIR), no permission
        _warn(where, f"not used: not a directory of this user ({e.strerror})")
        return None
    why = _fault(os.fstat(fd), "dir")
    if why:
        os.close(fd)
        _warn(where, f"not used: {why}")
        return None
    return fd


def root_dir() -> str:
    """The directory entries live in: the cache directory if it is private to this user, else
    its private subdirectory gradc-<uid>."""
    base = cache_dir()
    try:
        st = os.stat(base)
    except OSError:
        return base
    return base if _fault(st, "dir") is None else os.path.join(base, _private_name())


def _root(create: bool):
    """(descriptor, path) of the checked directory entries live in, or None (no disk cache)."""
    if not _SAFE:
        return None
    base = cache_dir()
    try:
        if create and not os.path.lexists(base):
            _mkdirs(base)
        link = os.lstat(base)
        fd = os.open(base, _DIR)
    except OSError:
        return None
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (os.geteuid(), 0):
        os.close(fd)
        _warn(base, f"not used: a symbolic link owned by uid {link.st_uid}")
        return None
    st = os.fstat(fd)
    why = _fault(st, "dir")
    if why is None:
        return fd, base
    if not stat.S_ISDIR(st.st_mode):
        os.close(fd)
        return None
    private = os.path.join(base, _private_name())
    if not st.st_mode & stat.S_ISVTX:       # a sticky shared directory (/tmp) is the usual case
        _warn(base, f"{why}; entries go to {private}")
    try:
        sub = _subdir(fd, _private_name(), private, create)
    finally:
        os.close(fd)
    return None if sub is None else (sub, private)


def _private_temp(dir_fd: int, prefix: str, data: bytes, sync: bool = False) -> str:
    """A new file `prefix<pid>-<random>` in the directory `dir_fd`, created exclusively (never
    through a symlink) with mode 0600 whatever the umask, holding `data` (fsynced when `sync`);
    its name, for the caller to link or rename into place.  On failure nothing is left."""
    name = f"{prefix}{os.getpid()}-{os.urandom(8).hex()}"
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600, dir_fd=dir_fd)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(os.dup(fd), "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
    except BaseException:
        os.close(fd)
        os.unlink(name, dir_fd=dir_fd)
        raise
    os.close(fd)
    return name


def _secret(root_fd: int, root: str, create: bool) -> bytes | None:
    """This user's 32-byte cache secret, created once (0600, O_EXCL, published by link())."""
    where = os.path.join(root, KEY_FILE)
    flags = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(KEY_FILE, flags, dir_fd=root_fd)
    except FileNotFoundError:
        if not create:
            return None
        try:
            tmp = _private_temp(root_fd, ".tmp-key-", os.urandom(32), sync=True)
            try:
                os.link(tmp, KEY_FILE, src_dir_fd=root_fd, dst_dir_fd=root_fd)
            except FileExistsError:          # another process published its secret first
                pass
            finally:
                os.unlink(tmp, dir_fd=root_fd)
            fd = os.open(KEY_FILE, flags, dir_fd=root_fd)
        except OSError:
            return None
    except OSError as e:
        _warn(where, f"key file not trusted ({e.strerror})")
        return None
    try:
        st = os.fstat(fd)
        why = _fault(st, "file")
        if why is None and st.st_mode & 0o077:
            why = f"readable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
        if why is None and st.st_size != 32:
            why = f"{st.st_size} bytes, not 32"
        if why:
            _warn(where, f"key file not trusted: {why}; the disk cache is not used")
            return None
        data = os.read(fd, 33)
    finally:
        os.close(fd)
    return data if len(data) == 32 else None


_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def mac(secret: bytes, msg: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) of `msg` under a secret of at most 64 bytes."""
    k = secret.ljust(64, b"\0")
    inner = sha256(k.translate(_IPAD))
    inner.update(msg)
    return sha256(k.translate(_OPAD) + inner.digest()).digest()


def _check_key(k: str) -> None:
    if len(k) != 64 or k.strip("0123456789abcdef"):
        raise ValueError(f"cache key {k!r} is not a sha256 hex digest")


def path_for(k: str) -> str:
    _check_key(k)
    return os.path.join(root_dir(), k[:2], k + ".o")


def _read(shard_fd: int, name: str, where: str) -> bytes | None:
    flags = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags, dir_fd=shard_fd)
    except FileNotFoundError:
        return None
    except OSError as e:             # ELOOP: a symbolic link; EACCES, ...
        _warn(where, f"entry not used ({e.strerror}: a symbolic link or unreadable)")
        return None
    try:
        why = _fault(os.fstat(fd), "file")
        if why:
            _warn(where, f"entry not used: {why}")
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    except OSError:
        return None
    finally:
        os.close(fd)


def get(k: str):
    """(object bytes, externals) for key `k`, or None if missing, untrusted or corrupt."""
    _check_key(k)
    root = _root(create=False)
    if root is None:
        return None
    root_fd, root_path = root
    try:
        secret = _secret(root_fd, root_path, create=False)
        shard = _subdir(root_fd, k[:2], os.path.join(root_path, k[:2]), False) \
            if secret else None
        if shard is None:
            return None
        where = os.path.join(root_path, k[:2], k + ".o")
        try:
            data = _read(shard, k + ".o", where)
        finally:
            os.close(shard)
    finally:
        os.close(root_fd)
    if data is None:
        return None
    head = len(MAGIC) + 32
    if not data.startswith(MAGIC):
        if not data.startswith(OLD_MAGIC):
            _warn(where, "entry not used: not a gradc cache entry")
        return None
    digest, payload = data[len(MAGIC):head], data[head:]
    if len(digest) < 32 or not _same(mac(secret, MAGIC + k.encode() + payload), digest):
        _warn(where, "entry not used: its keyed hash does not match (written without this "
                     "user's cache secret, or damaged)")
        return None
    line, sep, obj = payload.partition(b"\n")
    if not sep or not obj:
        return None
    ext = [e for e in line.decode("ascii", "replace").split(",") if e]
    return obj, ext


def rejected(k: str, why: BaseException) -> None:
    """Report an entry whose object the JIT refused to link (it is rebuilt)."""
    _warn(path_for(k), f"entry not used: its object was refused at load ({why})")


def put(k: str, obj: bytes, ext) -> bool:
    """Store an entry atomically; False (and no error) if there is no trusted writable place."""
    _check_key(k)
    payload = ",".join(ext).encode("ascii") + b"\n" + obj
    root = _root(create=True)
    if root is None:
        return False
    root_fd, root_path = root
    try:
        secret = _secret(root_fd, root_path, create=True)
        if secret is None:
            return False
        data = MAGIC + mac(secret, MAGIC + k.encode() + payload) + payload
        shard = _subdir(root_fd, k[:2], os.path.join(root_path, k[:2]), True)
        if shard is None:
            return False
        tmp = None
        try:
            tmp = _private_temp(shard, ".tmp-", data)
            os.replace(tmp, k + ".o", src_dir_fd=shard, dst_dir_fd=shard)
        except BaseException as e:
            try:
                if tmp is not None:
                    os.unlink(tmp, dir_fd=shard)
            except OSError:
                pass
            if isinstance(e, OSError):
                return False
            raise
        finally:
            os.close(shard)
    except OSError:
        return False
    finally:
        os.close(root_fd)
    return True
