"""Extraction where the kernel refuses to swap two folders, as some do (a uniquely named module:
pytest puts every test folder on sys.path).

Replacing an extracted folder swaps the new one in with renameat2(RENAME_EXCHANGE). A file system
that cannot exchange answers EINVAL (EOPNOTSUPP on some); on a kernel without renameat2 glibc's
wrapper answers EINVAL too; extract then moves the old version aside and renames the new one in. This
runs an extraction in a child process whose kernel answers exactly that: a seccomp filter, installed
before anything else runs, makes every renameat2 call with RENAME_EXCHANGE fail with the errno
given. Nothing in the code under test is patched.

    python no_exchange.py ERRNO ARCHIVE TARGET   ->  prints {"probe": errno, "status": ...}
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RENAME_EXCHANGE = 2
_AT_FDCWD = -100
# (audit arch, renameat2's syscall number) per machine
_ARCH = {"x86_64": (0xC000003E, 316), "aarch64": (0xC00000B7, 276)}


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter))]


def refuse_exchange(err: int) -> None:
    """From now on (this thread and every thread and process it starts), renameat2 with
    RENAME_EXCHANGE fails with ``err``; every other call is left alone."""
    arch, nr = _ARCH[platform.machine()]
    ld_w_abs, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    allow, refuse = 0x7FFF0000, 0x00050000 | err  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | err
    code = [
        (ld_w_abs, 0, 0, 4),                # seccomp_data.arch
        (jeq, 0, 5, arch),                  # another ABI: allow
        (ld_w_abs, 0, 0, 0),                # seccomp_data.nr
        (jeq, 0, 3, nr),                    # not renameat2: allow
        (ld_w_abs, 0, 0, 16 + 4 * 8),       # seccomp_data.args[4] (flags), low 32 bits (little-endian)
        (jset, 0, 1, RENAME_EXCHANGE),      # no RENAME_EXCHANGE: allow
        (ret, 0, 0, refuse),
        (ret, 0, 0, allow),
    ]
    filters = (_Filter * len(code))(*[_Filter(*c) for c in code])
    program = _Program(len(code), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(38, 1, None, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS: needed to filter without privileges
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(22, 2, ctypes.addressof(program), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def probe_exchange() -> int:
    """The errno of an exchange of two paths that do not exist: ENOENT where exchanging works."""
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.renameat2(_AT_FDCWD, b"/nonexistent-a", _AT_FDCWD, b"/nonexistent-b", RENAME_EXCHANGE)
    return ctypes.get_errno() if rc != 0 else 0


def extract_without_exchange(archive: Path, target: Path, err: int = errno.EINVAL) -> str:
    """``extract(archive, target)`` in a child process whose kernel refuses to exchange; its status."""
    import pytest

    if platform.machine() not in _ARCH or not hasattr(ctypes.CDLL(None), "renameat2"):
        pytest.skip("needs Linux on x86_64 or aarch64 with renameat2 in libc")
    proc = subprocess.run([sys.executable, __file__, str(err), str(archive), str(target)], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["probe"] == err  # the exchange was refused there, as asked
    return out["status"]


if __name__ == "__main__":
    err_, archive_, target_ = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    refuse_exchange(err_)
    from resumable.extract import extract

    status = extract(archive_, target_, progress=False).status
    print(json.dumps({"probe": probe_exchange(), "status": status}))
