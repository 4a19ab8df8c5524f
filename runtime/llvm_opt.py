"""LLVM's optimization pipeline and object emission, and the worker process that runs them.

    optimized(ir_text, tm, triple, layout)   the verified module after the O3 pipeline (loop
                                             and SLP vectorization)
    externals(mod)                           the functions it needs from the process
    Worker().compile(ir_text)                (object bytes, externals), built in a child process

Why a child process: llvmlite's binding of the new pass manager leaks native memory on every
run (its PassBuilder allocates a PassInstrumentationCallbacks it never frees, and each run
registers StandardInstrumentations callbacks into it: about 0.1-0.5 MiB per compiled graph,
llvmlite 0.50), so a process that compiles many distinct graphs would grow without bound.  The
worker runs the pipeline instead (after the first IN_PROCESS_FIRST compiles of a process, which
run in-process so that a program compiling a few graphs starts no worker) and is replaced after
`RECYCLE` compiles, which bounds what it leaks; the object comes back as bytes and is loaded (and checked) by the caller as any object.
GRADC_JIT_WORKER=0 compiles in-process; so does a process whose worker cannot start (one
warning).

This file imports only llvmlite (it is run as a script: `python llvm_opt.py TRIPLE CPU
FEATURES`).  Protocol on the pipes: the worker first says b"R" (ready); request b"C" + 8-byte length + IR text (UTF-8); reply
b"O" + length + object + length + externals ("\\n"-separated) or b"E" + length + message.
"""
from __future__ import annotations

import os
import select
import struct
import subprocess
import sys
import warnings

if __name__ == "__main__":              # the worker process: nothing but llvmlite
    from llvmlite import binding as llvm
else:   # imported by runtime/jit.py: llvmlite loads when a kernel is first built or loaded
    from compiler.lazy import llvm_binding as llvm

RECYCLE = 64      # compiles per worker process (each leaks ~0.1-0.5 MiB inside llvmlite)
IN_PROCESS_FIRST = 16   # a process's first compiles run in-process: most programs compile a few
                        # graphs and should not pay a worker's start-up (~0.2 s); past this many
                        # the leak (then at most ~8 MiB) stops growing: the worker takes over
START_TIMEOUT = 60    # seconds a new worker may take to initialize LLVM

_LIBC = {"llvm.memset": "memset", "llvm.memcpy": "memcpy", "llvm.memmove": "memmove"}


def target_machine(triple: str, cpu: str, features: str):
    return llvm.Target.from_triple(triple).create_target_machine(
        cpu=cpu, features=features, opt=3, reloc="default", codemodel="jitdefault")


def optimized(ir_text: str, tm, triple: str, layout: str):
    mod = llvm.parse_assembly(ir_text)
    mod.triple = triple
    mod.data_layout = layout
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


def externals(mod) -> list:
    """Names of the functions the module declares but does not define (a memset/memcpy/memmove
    intrinsic becomes a libc call in code generation, so those count too)."""
    out = []
    for f in mod.functions:
        if not f.is_declaration:
            continue
        if not f.name.startswith("llvm."):
            out.append(f.name)
        for prefix, libc in _LIBC.items():
            if f.name.startswith(prefix) and libc not in out:
                out.append(libc)
    return out


# ---- the pipes ----------------------------------------------------------------------------------
def _read(stream, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise EOFError("the other end of the pipe closed")
    return data


def _read_blob(stream) -> bytes:
    return _read(stream, struct.unpack("<Q", _read(stream, 8))[0])


def _blob(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + data


def serve(triple: str, cpu: str, features: str, stdin, stdout) -> None:
    """The worker's loop: one reply per request, until stdin closes."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    tm = target_machine(triple, cpu, features)
    layout = str(tm.target_data)
    stdout.write(b"R")
    stdout.flush()
    while True:
        try:
            kind = stdin.read(1)
            if kind != b"C":
                return
            ir_text = _read_blob(stdin).decode("utf-8")
        except EOFError:
            return
        try:
            mod = optimized(ir_text, tm, triple, layout)
            reply = b"O" + _blob(tm.emit_object(mod)) + _blob("\n".join(externals(mod)).encode())
        except Exception as e:  # reported to the caller, which raises it
            reply = b"E" + _blob(f"{type(e).__name__}: {e}".encode("utf-8", "replace"))
        stdout.write(reply)
        stdout.flush()


class Worker:
    """The child process that compiles; `compile` returns None when no worker can be used
    (then the caller compiles in-process).  Not thread-safe: the caller serializes."""

    def __init__(self, triple: str, cpu: str, features: str):
        self._args = [sys.executable, os.path.abspath(__file__), triple, cpu, features]
        self._proc = None
        self._pid = os.getpid()         # the process that started _proc
        self._done = 0
        self.answered = False           # whether any worker ever replied
        self.disabled = os.environ.get("GRADC_JIT_WORKER", "1").strip() in ("0", "no", "off")
        self.in_process_left = IN_PROCESS_FIRST

    def _start(self):
        self._proc = subprocess.Popen(self._args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, close_fds=True)
        self._pid = os.getpid()
        self._done = 0
        # the worker says b"R" once LLVM is initialized; anything else (sys.executable is not
        # a Python that has llvmlite, an embedding host's binary) is no worker
        ready = self._proc.stdout
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(ready, select.POLLIN)
            if not poller.poll(START_TIMEOUT * 1000):
                raise OSError(f"no answer within {START_TIMEOUT} s")
        if _read(ready, 1) != b"R":
            raise OSError("the worker did not say it was ready")

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self._pid != os.getpid():
            return          # a forked child's copy of its parent's worker: the parent's to close
        if proc is not None:
            try:
                proc.stdin.close()        # the worker exits at end of input
                proc.wait(timeout=5)
            except Exception:
                proc.kill()
                proc.wait()
            finally:
                proc.stdout.close()

    def compile(self, ir_text: str):
        """(object bytes, externals), or None when no worker can be used: disabled, or one
        that could not start or never answered (the caller then compiles in-process).  A
        worker that dies on a module after answering others is an error for that module (it
        would crash this process too) and is replaced for the next one."""
        if self.disabled:
            return None
        if self.in_process_left > 0:
            self.in_process_left -= 1
            return None
        try:
            if self._proc is not None and self._pid != os.getpid():
                self.close()             # forked: the pipes are shared with the parent
            if self._proc is None or self._done >= RECYCLE:
                self.close()
                self._start()
            self._done += 1
            self._proc.stdin.write(b"C" + _blob(ir_text.encode("utf-8")))
            self._proc.stdin.flush()
            kind = _read(self._proc.stdout, 1)
            payload = _read_blob(self._proc.stdout)
            ext = _read_blob(self._proc.stdout).decode() if kind == b"O" else ""
        except (OSError, EOFError, ValueError) as e:
            status = self._proc.poll() if self._proc is not None else None
            self.close()
            if self.answered:
                raise RuntimeError(f"the LLVM compile worker died compiling this module (exit "
                                   f"status {status})") from e
            self.disabled = True
            warnings.warn(f"gradc: the LLVM compile worker did not start ({type(e).__name__}: "
                          f"{e}; exit status {status}); compiling in-process from now on",
                          RuntimeWarning, stacklevel=3)
            return None
        self.answered = True
        if kind != b"O":
            raise RuntimeError(payload.decode("utf-8", "replace"))
        return payload, [n for n in ext.split("\n") if n]


if __name__ == "__main__":
    serve(*sys.argv[1:4], sys.stdin.buffer, sys.stdout.buffer)
