"""The on-disk object cache trusts only what its own user wrote (issue 15, part 2).

Every attack runs the victim in a child process (a planted object that crashes must kill the
child, not the test run) and checks its results against the lecture neuron's hand-derived
values: 2·σ(w·x + b) = 2·0.731 and its gradient.  An entry planted by another user, writable by
others, reached through a symbolic link, in a shared or 0777 directory, or written without the
user's secret key is never linked; a garbage object with a valid keyed hash is rebuilt, never a
crash; directories are 0700 whatever the umask.
"""
import hashlib
import hmac
import json
import os
import stat
import struct
import subprocess
import sys
import textwrap
import threading

from pathlib import Path

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOBODY = 65534
needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                                reason="planting another user's file needs root (chown)")

CHILD = textwrap.dedent("""
    import json, os, sys, warnings
    if os.environ.get("TEST_UMASK"):
        os.umask(int(os.environ["TEST_UMASK"], 8))
    import numpy as np
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import compiler
        from frontends import dsl
        from frontends.dsl import f64
        scale = float(os.environ.get("TEST_SCALE", "2.0"))
        def model(w, x):
            return dsl.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2]) * scale
        fn = compiler.compile(compiler.grad(dsl.trace(model, w=f64[3], x=f64[2])),
                              backend="llvm")
        out = fn(w=np.array([2., -3., -3.]), x=np.array([-1., -2.]))
        if os.environ.get("TEST_SOURCE"):       # the attacker: the IR of its own kernel
            fn.source
    from runtime import cache, jit
    print(json.dumps({"out": float(out["out"]), "dw": out["dw"].tolist(), "cached": fn.cached,
                      "path": cache.path_for(fn.key), "key": fn.key, "symbol": fn.symbol,
                      "ir": fn.source if os.environ.get("TEST_SOURCE") else None,
                      "warnings": [str(w.message) for w in caught
                                   if w.category is getattr(cache, "CacheWarning", None)]}))
""")


def run_child(cache_dir, **env):
    e = dict(os.environ, GRADC_CACHE_DIR=str(cache_dir), PYTHONPATH=ROOT)
    e.update({k: str(v) for k, v in env.items()})
    r = subprocess.run([sys.executable, "-c", CHILD], env=e, cwd=ROOT, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, f"child exit {r.returncode}: {r.stderr[-2000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def assert_right(res, scale=2.0):
    """The lecture neuron: σ(2·-1 + -3·-2 - 3) = σ(1) = 0.731, dσ/dw = σ(1-σ)·(x, 1)."""
    s = 1 / (1 + np.exp(-1.0))
    assert np.isclose(res["out"], scale * s), res
    assert np.allclose(res["dw"], scale * s * (1 - s) * np.array([-1., -2., 1.])), res


def warned(res, fragment):
    """Exactly one CacheWarning, naming `fragment`."""
    assert len(res["warnings"]) == 1, res["warnings"]
    assert fragment in res["warnings"][0], res["warnings"]


def secret_of(root):
    with open(os.path.join(root, ".hmac-key"), "rb") as f:
        return f.read()


def entry(secret, key, obj, ext=("memset",), magic=b"GRADC-OBJ-2\n"):
    """An entry in the documented format, its HMAC computed by the standard library."""
    payload = ",".join(ext).encode() + b"\n" + obj
    return magic + hmac.new(secret, magic + key.encode() + payload, hashlib.sha256).digest() \
        + payload


def object_of(data):
    return data[data.index(b"\x7fELF"):]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A victim's cache built once: (cache dir, first result, entry bytes)."""
    d = tmp_path_factory.mktemp("victim") / "cache"
    res = run_child(d)
    assert_right(res)
    assert not res["cached"] and res["warnings"] == []
    with open(res["path"], "rb") as f:
        return d, res, f.read()


def own_cache(tmp_path):
    """A cache of its own for one test to damage: (root, entry path, first result).  Built
    here rather than copied: the key covers the code generator's sources, and a copy made
    from an older build would miss."""
    root = tmp_path / "cache"
    res = run_child(root)
    assert_right(res)
    assert not res["cached"] and res["warnings"] == []
    return root, Path(res["path"]), res


# ---- creation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", ["000", "777"])
def test_directories_are_0700_and_files_0600_whatever_the_umask(tmp_path, umask):
    d = tmp_path / "new" / "deeper"
    res = run_child(d, TEST_UMASK=umask)
    assert_right(res)
    path = res["path"]
    assert path.startswith(str(d))
    for p in (tmp_path / "new", d, os.path.dirname(path)):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o700, p
    for p in (path, d / ".hmac-key"):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
    assert run_child(d, TEST_UMASK=umask)["cached"]


def test_each_cache_has_its_own_random_secret(tmp_path, monkeypatch):
    from runtime import cache
    secrets = []
    for name in ("a", "b"):
        monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path / name))
        assert cache.put("ab" * 32, b"\x7fELF" + bytes(60), [])
        secrets.append(secret_of(tmp_path / name))
    assert len(secrets[0]) == 32 and secrets[0] != secrets[1]
    assert cache.mac(secrets[0], b"m") == hmac.new(secrets[0], b"m", hashlib.sha256).digest()


def test_threads_racing_on_a_fresh_cache_share_one_secret(tmp_path, monkeypatch):
    from runtime import cache
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path / "c"))
    keys = [f"{i:02x}" * 32 for i in range(16)]
    go, ok = threading.Barrier(16), []

    def worker(k):
        go.wait()
        ok.append(cache.put(k, k.encode() * 10, ["memset"]))
    threads = [threading.Thread(target=worker, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ok == [True] * 16
    assert all(cache.get(k) == (k.encode() * 10, ["memset"]) for k in keys)
    assert sorted(p for p in os.listdir(tmp_path / "c") if p.startswith(".")) == [".hmac-key"]


# ---- planted entries ---------------------------------------------------------------------------
@needs_root
def test_entry_owned_by_another_user_is_not_linked(tmp_path):
    root, path, _ = own_cache(tmp_path)
    os.chown(path, NOBODY, NOBODY)
    res = run_child(root)
    assert_right(res)
    assert not res["cached"]
    warned(res, f"owned by uid {NOBODY}")
    assert os.stat(path).st_uid == os.geteuid()        # rebuilt and replaced by the user's own
    assert run_child(root)["cached"]


def test_entry_writable_by_others_is_not_linked(tmp_path):
    root, path, _ = own_cache(tmp_path)
    os.chmod(path, 0o666)
    res = run_child(root)
    assert_right(res)
    assert not res["cached"]
    warned(res, "writable by group or others (mode 666)")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_symlinked_entry_is_not_followed_for_reading_or_writing(tmp_path):
    root, path, _ = own_cache(tmp_path)
    elsewhere = tmp_path / "elsewhere.o"
    os.rename(path, elsewhere)                         # a valid entry, but behind a link
    before = elsewhere.read_bytes()
    os.symlink(elsewhere, path)
    res = run_child(root)
    assert_right(res)
    assert not res["cached"]
    warned(res, "symbolic link")
    assert not os.path.islink(path) and os.path.isfile(path)   # the link itself was replaced
    assert elsewhere.read_bytes() == before            # and nothing was written through it


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_entry_that_is_not_a_regular_file_is_a_miss_not_a_hang(tmp_path, kind):
    root, path, _ = own_cache(tmp_path)
    os.unlink(path)
    os.mkfifo(path, 0o600) if kind == "fifo" else os.mkdir(path, 0o700)
    res = run_child(root)
    assert_right(res)
    assert not res["cached"]
    warned(res, "not a regular file")


@needs_root
@pytest.mark.parametrize("fault", ["owner", "mode"])
def test_shard_directory_not_private_is_not_used(tmp_path, fault):
    root, path, _ = own_cache(tmp_path)
    shard = os.path.dirname(path)
    os.chown(shard, NOBODY, NOBODY) if fault == "owner" else os.chmod(shard, 0o777)
    res = run_child(root)
    assert_right(res)
    assert not res["cached"]
    warned(res, shard)


# ---- the keyed hash ----------------------------------------------------------------------------
def evil(victim_symbol, tmp_path):
    """What an attacker without the secret can make: the victim's kernel (same symbol, same
    arguments) computing 3·σ instead of 2·σ, compiled in the attacker's own process."""
    att = run_child(tmp_path / "attacker", TEST_SCALE=3.0, TEST_SOURCE=1)
    assert_right(att, 3.0)
    ir = att["ir"].replace(att["symbol"], victim_symbol)
    code = ("import sys, json; from runtime import jit; "
            "o, e = jit.compile_object(sys.stdin.read()); "
            "sys.stdout.buffer.write(json.dumps(e).encode() + b'\\n' + o)")
    r = subprocess.run([sys.executable, "-c", code], input=ir.encode(), capture_output=True,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert r.returncode == 0, r.stderr
    line, _, obj = r.stdout.partition(b"\n")
    return obj, json.loads(line)


@pytest.mark.parametrize("forgery", ["old format", "guessed secret", "plain sha256", "zeros"])
def test_planted_valid_object_without_the_secret_is_rejected(tmp_path, forgery):
    root, path, res = own_cache(tmp_path)
    obj, ext = evil(res["symbol"], tmp_path)
    payload = ",".join(ext).encode() + b"\n" + obj
    magic = b"GRADC-OBJ-2\n"
    data = {"old format": b"GRADC-OBJ-1\n" + hashlib.sha256(payload).digest() + payload,
            "guessed secret": entry(os.urandom(32), res["key"], obj, ext),
            "plain sha256": magic + hashlib.sha256(payload).digest() + payload,
            "zeros": magic + bytes(32) + payload}[forgery]
    with open(path, "wb") as f:
        f.write(data)
    got = run_child(root)
    assert_right(got, 2.0)                             # the victim's numbers, not 3·σ
    assert not got["cached"]
    if forgery == "old format":
        assert got["warnings"] == []                   # an older gradc's entry: a silent miss
    else:
        warned(got, "keyed hash does not match")
    assert run_child(root)["cached"]                   # rebuilt with the real secret


def test_entry_written_with_the_real_secret_is_used(tmp_path):
    """The documented format, computed with the standard library's HMAC, is accepted: the
    check above is the secret, not some other difference."""
    root, path, res = own_cache(tmp_path)
    with open(path, "rb") as f:
        data = f.read()
    line = data[44:].partition(b"\n")[0].decode()
    with open(path, "wb") as f:
        f.write(entry(secret_of(root), res["key"], object_of(data), line.split(",")))
    got = run_child(root)
    assert got["cached"] and got["warnings"] == []
    assert_right(got)


def _damaged(obj, how, evil_obj):
    if how == "random bytes":
        return os.urandom(6000)
    if how == "truncated ELF":
        return obj[: len(obj) // 2]
    if how == "section headers far away":
        return obj[:40] + struct.pack("<Q", 2**40) + obj[48:]
    if how == "another kernel's object":
        return evil_obj.replace(b"gradc_", b"gradd_")
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["random bytes", "truncated ELF", "section headers far away",
                                 "another kernel's object"])
def test_garbage_object_with_a_valid_keyed_hash_is_rebuilt_not_a_crash(tmp_path, how):
    root, path, res = own_cache(tmp_path)
    with open(path, "rb") as f:
        good = object_of(f.read())
    other = evil(res["symbol"], tmp_path)[0] if how == "another kernel's object" else None
    with open(path, "wb") as f:
        f.write(entry(secret_of(root), res["key"], _damaged(good, how, other)))
    got = run_child(root)                              # exit 0 is asserted: no SIGSEGV
    assert_right(got)
    assert not got["cached"]
    warned(got, "refused at load")
    assert run_child(root)["cached"]


def test_garbage_object_with_the_old_checksum_is_not_a_crash(tmp_path):
    """Today's format (a plain sha256) over garbage killed the process with SIGSEGV."""
    root, path, res = own_cache(tmp_path)
    payload = b"memset\n" + os.urandom(6000)
    with open(path, "wb") as f:
        f.write(b"GRADC-OBJ-1\n" + hashlib.sha256(payload).digest() + payload)
    got = run_child(root)
    assert_right(got)
    assert not got["cached"]


# ---- the key file ------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["mode 644", "owner", "symlink"])
def test_key_file_not_private_disables_the_disk_cache(tmp_path, fault):
    if fault == "owner" and os.geteuid() != 0:
        pytest.skip("needs root (chown)")
    root, path, _ = own_cache(tmp_path)
    keyfile = root / ".hmac-key"
    if fault == "mode 644":
        os.chmod(keyfile, 0o644)
    elif fault == "owner":
        os.chown(keyfile, NOBODY, NOBODY)
    else:
        os.rename(keyfile, tmp_path / "real-key")
        os.symlink(tmp_path / "real-key", keyfile)
    before = path.read_bytes()
    res = run_child(root)
    assert_right(res)
    assert not res["cached"]
    warned(res, ".hmac-key")
    assert path.read_bytes() == before                 # nothing written under that key


# ---- shared and foreign directories ------------------------------------------------------------
def test_world_writable_cache_dir_is_replaced_by_a_private_subdirectory(tmp_path):
    root, path, _ = own_cache(tmp_path)
    os.chmod(root, 0o777)                              # the valid entry there is not used
    res = run_child(root)
    assert_right(res)
    assert not res["cached"]
    warned(res, "writable by group or others (mode 777)")
    private = root / f"gradc-{os.geteuid()}"
    assert res["path"].startswith(str(private) + os.sep)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
    again = run_child(root)
    assert again["cached"] and again["path"] == res["path"]


def _sticky(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    return shared, shared / f"gradc-{os.geteuid()}"


def test_sticky_shared_dir_uses_a_private_subdirectory_silently(tmp_path):
    shared, private = _sticky(tmp_path)
    res = run_child(shared)
    assert_right(res)
    assert res["warnings"] == [] and res["path"].startswith(str(private) + os.sep)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
    assert not [p for p in os.listdir(shared) if p != private.name]
    assert run_child(shared)["cached"]


@pytest.mark.parametrize("plant", ["foreign dir", "symlink to own dir", "file"])
def test_planted_private_subdirectory_in_a_shared_dir_is_not_used(tmp_path, plant):
    if plant == "foreign dir" and os.geteuid() != 0:
        pytest.skip("needs root (chown)")
    shared, private = _sticky(tmp_path)
    if plant == "foreign dir":                         # another user's, with a "valid" entry
        src, path, res = own_cache(tmp_path)
        (private / res["key"][:2]).mkdir(parents=True)
        (private / ".hmac-key").write_bytes(secret_of(src))
        (private / res["key"][:2] / path.name).write_bytes(path.read_bytes())
        for dirpath, dirs, files in os.walk(private):
            for p in [dirpath] + [os.path.join(dirpath, f) for f in files]:
                os.chown(p, NOBODY, NOBODY)
                os.chmod(p, 0o777 if p == dirpath else 0o666)
    elif plant == "symlink to own dir":
        mine = tmp_path / "mine"
        mine.mkdir(mode=0o700)
        os.symlink(mine, private)
    else:
        private.write_bytes(b"")
    res = run_child(shared)
    assert_right(res)
    assert not res["cached"]
    warned(res, str(private))
    if plant == "symlink to own dir":
        assert os.listdir(tmp_path / "mine") == []     # nothing created through the link
    assert not run_child(shared)["cached"]             # in memory only, every time


@needs_root
def test_cache_dir_that_is_another_users_symlink_is_not_followed(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    link = tmp_path / "link"
    os.symlink(mine, link)
    os.lchown(link, NOBODY, NOBODY)
    res = run_child(link)
    assert_right(res)
    assert not res["cached"]
    warned(res, "a symbolic link owned by uid")
    assert os.listdir(mine) == []
    os.lchown(link, os.geteuid(), os.getegid())        # the user's own link is followed
    assert run_child(link)["warnings"] == [] and os.listdir(mine)


def test_cache_dir_tmp_is_safe():
    """GRADC_CACHE_DIR=/tmp (world-writable, sticky): entries go to /tmp/gradc-<uid>, 0700."""
    res = run_child("/tmp")
    assert_right(res)
    private = f"/tmp/gradc-{os.geteuid()}"
    assert res["path"].startswith(private + os.sep) and res["warnings"] == []
    st = os.lstat(private)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert run_child("/tmp")["cached"]


# ---- the object check ---------------------------------------------------------------------------
def test_object_symbols_agree_with_nm(built, tmp_path):
    from runtime import elf
    obj = object_of(built[2])
    defined, undefined = elf.symbols(obj)
    (tmp_path / "k.o").write_bytes(obj)
    try:
        r = subprocess.run(["nm", "-g", str(tmp_path / "k.o")], capture_output=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no nm")
    assert r.returncode == 0, r.stderr
    rows = [ln.split() for ln in r.stdout.decode().splitlines() if ln.strip()]
    assert sorted(defined) == sorted(row[-1] for row in rows if row[-2] != "U")
    assert sorted(undefined) == sorted(row[-1] for row in rows if row[-2] == "U")
    assert built[1]["symbol"] in defined


def test_object_check_refuses_mutations_without_crashing(built):
    """10 000 random byte flips and truncations: each either passes or is an ObjectError."""
    from runtime import elf
    obj = object_of(built[2])
    rng = np.random.default_rng(15)
    refused = 0
    for _ in range(10000):
        b = bytearray(obj)
        for _ in range(rng.integers(1, 5)):   # anywhere, but mostly the header and the tables
            lo = [0, 0, max(0, len(b) - 1500)][rng.integers(0, 3)]
            b[rng.integers(lo, len(b) if lo else 64)] = rng.integers(0, 256)
        if rng.random() < 0.3:
            b = b[: rng.integers(0, len(b))]
        try:
            elf.symbols(bytes(b), 62 if sys.byteorder == "little" else None)
        except elf.ObjectError:
            refused += 1
    assert refused > 1000
