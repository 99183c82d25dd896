"""The serving encoder saved prepared for this machine, so every process maps one copy of it.

When onnxruntime opens a session it optimizes the graph and rearranges (prepacks) the weight
matrices for this CPU's kernels, in memory the process owns: each serving worker held its own
~40 MB. Saved once as an optimized model whose weights, prepacked ones included, sit in an
external data file, later sessions map that file instead of copying it, so the page cache holds
the weights once for every worker and replica on the machine, and opening a session skips the
optimization.

The prepacked layout depends on the CPU and on the onnxruntime version, so a prepared model is
made where it is served, never shipped: its folder is named by the source model's SHA-256, the
onnxruntime version and the CPU's identity. It is written to a temporary folder and renamed into
place, so a reader sees a whole one or none; two processes making it at once both succeed. The
folder holding them must be this user's and writable by no one else (a prepared model is trusted
as the index's own is); otherwise, or when anything fails, the caller opens the source model as
before.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

MODEL, WEIGHTS = "model.onnx", "model.data"
# Making one opens the source model once (a second or two); bounded all the same.
MAKE_TIMEOUT_S = 300
# Bump when what is saved changes: older folders are then ignored.
FORMAT = 1
# onnxruntime's session options (onnxruntime_session_options_config_keys.h).
SAVE_WEIGHTS_AS = "session.optimized_model_external_initializers_file_name"
SAVE_WEIGHTS_FROM_BYTES = "session.optimized_model_external_initializers_min_size_in_bytes"
SAVE_PREPACKED = "session.save_external_prepacked_constant_initializers"


def cpu_identity() -> str:
    """What the prepacked layout depends on: the architecture and the instruction set
    extensions the CPU reports (the first processor's flags on Linux)."""
    parts = [platform.machine()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features", "isa"):
                    parts.append(" ".join(sorted(value.split())))
                    break
    except OSError:
        parts.append(platform.processor())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _private_folder(root: Path) -> bool:
    """`root` exists (made if need be), is a real folder of this user, writable by no one
    else."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode):
        log.warning("prepared encoders: %s is not a folder; opening the model as exported", root)
        return False
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        log.warning("prepared encoders: %s belongs to another user or is writable by others; "
                    "opening the model as exported", root)
        return False
    return True


def folder_for(source: Path, root: Path) -> Path:
    """Where the prepared form of `source` lives under `root` on this machine."""
    import onnxruntime as ort

    name = f"{_sha256(source)[:24]}-ort{ort.__version__}-{cpu_identity()}-p{FORMAT}"
    return root / name


def _make(source: Path, target: Path) -> None:
    """Open `source` once with onnxruntime saving what it made of it; put it at `target`."""
    import onnxruntime as ort

    work = Path(tempfile.mkdtemp(prefix=".making-", dir=target.parent))
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        # It warns that the result suits this machine only: that is why it is made here.
        options.log_severity_level = 3
        options.optimized_model_filepath = str(work / MODEL)
        options.add_session_config_entry(SAVE_WEIGHTS_AS, WEIGHTS)
        options.add_session_config_entry(SAVE_WEIGHTS_FROM_BYTES, "1024")
        options.add_session_config_entry(SAVE_PREPACKED, "1")
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        if not (work / MODEL).is_file() or not (work / WEIGHTS).is_file():
            raise OSError(f"onnxruntime did not save {MODEL} and {WEIGHTS}")
        for path in work.iterdir():
            path.chmod(0o400)
        try:
            work.rename(target)
        except OSError:
            # Another process put one there first: use it.
            if not (target / MODEL).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _complete(target: Path) -> bool:
    return (target / MODEL).is_file() and (target / WEIGHTS).is_file()


def _make_in_a_process(source: Path, target: Path) -> None:
    """`_make` in a process of its own: the session it opens leaves its memory behind in the
    process's heap, and this process is a server about to open the prepared one."""
    package_root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "service.index.prepared", str(source),
                           str(target)], cwd=package_root, capture_output=True, text=True,
                          timeout=MAKE_TIMEOUT_S)
    if done.returncode != 0:
        raise OSError(f"exit {done.returncode}: {done.stderr.strip()[-500:]}")


def prepared_model(source: Path, root: Path) -> Path | None:
    """The prepared form of the ONNX model `source` under `root`, made if missing; None when
    it cannot be had (the reason is logged) and the source should be opened instead."""
    try:
        if not _private_folder(root):
            return None
        target = folder_for(source, root)
        if not _complete(target):
            # Workers starting together: one makes it, the others wait and then use it.
            with (root / ".lock").open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not _complete(target):
                    _make_in_a_process(source, target)
                    log.info("prepared encoders: saved %s for this machine in %s", source,
                             target)
        return target / MODEL
    except Exception as exc:  # onnxruntime raises its own types; serving goes on without it
        log.warning("prepared encoders: cannot prepare %s in %s (%s); opening the model as "
                    "exported", source, root, exc)
        return None


if __name__ == "__main__":
    _make(Path(sys.argv[1]), Path(sys.argv[2]))
