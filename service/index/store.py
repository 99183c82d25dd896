"""Index versions on disk: atomic publishing, the CURRENT pointer, integrity checks, the build lock.

index/
  CURRENT                  name of the version being served (replaced atomically)
  LOCK                     held by the one running build
  versions/<version>/      manifest.json (sha256 of every file) and the files it lists
  encoders/<kind>-<model>/ exported encoders shared by versions
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = 1
MANIFEST = "manifest.json"
# Files up to this size are checked against their full sha256 before a version is served.
# Bigger ones (a large corpus's vectors and graph: gigabytes, ~10 s of hashing each) are checked
# by size and a digest of samples first, so the service starts in seconds, then in full in the
# background (service.qa.engine), which stops serving the version if one does not match.
FULL_CHECK_BYTES = 64 << 20
SAMPLE_BLOCKS, SAMPLE_BYTES = 256, 4096
CURRENT = "CURRENT"


class IndexUnavailable(Exception):
    """An index is missing, damaged or incompatible; the message says what to run."""


class BuildLocked(Exception):
    """Another build holds the lock."""


class NoSuchVersion(Exception):
    """A version asked for (or a previous one to roll back to) is not published."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with path.open("rb+") as fh:
        os.fsync(fh.fileno())


def new_version_name() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-{os.getpid()}"


def staging_dir(index_dir: Path, version: str) -> Path:
    """A private folder to write a version into; nothing reads it until `publish`."""
    path = index_dir / "versions" / f".staging-{version}"
    path.mkdir(parents=True)
    return path


def publish(index_dir: Path, staging: Path, manifest: dict[str, Any]) -> Path:
    """Checksum and fsync every file, write the manifest, rename into place, switch CURRENT."""
    files = sorted(p for p in staging.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = {**manifest, "format": FORMAT,
                "files": {p.name: sha256_file(p) for p in files},
                "sizes": {p.name: p.stat().st_size for p in files},
                "samples": {p.name: sample_digest(p) for p in files
                            if p.stat().st_size > FULL_CHECK_BYTES}}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), "utf-8")
    for path in [*files, staging / MANIFEST]:
        fsync_file(path)
    fsync_dir(staging)
    final: Path = index_dir / "versions" / str(manifest["version"])
    os.replace(staging, final)
    fsync_dir(final.parent)
    set_current(index_dir, manifest["version"])
    return final


def set_current(index_dir: Path, version: str) -> None:
    """Point CURRENT at a version with one atomic rename; readers see the old or the new."""
    tmp = index_dir / f".{CURRENT}.{os.getpid()}.tmp"
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(version + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, index_dir / CURRENT)
    fsync_dir(index_dir)


def is_plain_name(name: object) -> bool:
    """A name that stays inside the folder it is joined to: one part, not hidden, no control
    characters. Names read from CURRENT and manifests must be plain before they become paths."""
    return (isinstance(name, str) and 0 < len(name) <= 255 and not name.startswith(".")
            and "/" not in name and "\\" not in name and name.isprintable())


def current_version(index_dir: Path) -> str | None:
    """The version CURRENT names, None without one. Raises IndexUnavailable when CURRENT holds
    anything but a plain version name (`../../elsewhere` must not lead outside versions/)."""
    try:
        with (index_dir / CURRENT).open("rb") as fh:
            raw = fh.read(256)
    except FileNotFoundError:
        return None
    try:
        name = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        name = "\ufffd"
    if not name:
        return None
    if len(raw) >= 256 or not is_plain_name(name):
        raise IndexUnavailable(f"{index_dir / CURRENT} does not hold a version name: run "
                               "`make index`, or `scripts/build_index.py --rollback VERSION`")
    return name


def current_or_none(index_dir: Path) -> str | None:
    """current_version, with an unusable CURRENT taken as none (for builds, which replace it)."""
    try:
        return current_version(index_dir)
    except IndexUnavailable:
        return None


def list_versions(index_dir: Path) -> list[str]:
    """Published versions, oldest first; a symbolic link in versions/ is not one."""
    folder = index_dir / "versions"
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if is_plain_name(p.name) and not p.is_symlink() and p.is_dir()
                  and (p / MANIFEST).is_file())


def read_manifest(version_dir: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((version_dir / MANIFEST).read_text("utf-8"))
    except FileNotFoundError:
        raise IndexUnavailable(f"{version_dir} has no {MANIFEST}: run `make index`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexUnavailable(
            f"{version_dir}/{MANIFEST} is damaged ({exc}): run `make index`") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexUnavailable(
            f"{version_dir} was written by an incompatible builder: run `make index`")
    return manifest


def verify(version_dir: Path, *, quick: bool = False) -> dict[str, Any]:
    """The manifest, once every listed file exists with its recorded sha256. With `quick`,
    files over FULL_CHECK_BYTES that the manifest has a size and sample digest for are checked
    by those only (`deferred` lists them; `verify_files` checks them in full later)."""
    manifest = read_manifest(version_dir)
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise IndexUnavailable(f"{version_dir}/{MANIFEST} is damaged: run `make index`")
    later = set(deferred(manifest)) if quick else set()
    sizes, samples = manifest.get("sizes", {}), manifest.get("samples", {})
    for name, expected in files.items():
        if not is_plain_name(name):
            raise IndexUnavailable(f"{version_dir}/{MANIFEST} lists {name!r}, which is not a "
                                   "file of the version folder: run `make index`")
        path = version_dir / name
        if not path.is_file():
            raise IndexUnavailable(f"{path} is missing: run `make index`")
        if name in later:
            if path.stat().st_size != sizes[name] or sample_digest(path) != samples[name]:
                raise IndexUnavailable(
                    f"{path} does not match its checksum (damaged?): run `make index`")
        elif sha256_file(path) != expected:
            raise IndexUnavailable(
                f"{path} does not match its checksum (damaged?): run `make index`")
    return manifest


def deferred(manifest: dict[str, Any]) -> list[str]:
    """The files a quick verify checks by size and samples only: the big ones."""
    sizes, samples = manifest.get("sizes"), manifest.get("samples")
    if not isinstance(sizes, dict) or not isinstance(samples, dict):
        return []
    return sorted(name for name in samples if isinstance(sizes.get(name), int)
                  and sizes[name] > FULL_CHECK_BYTES and name in manifest.get("files", {}))


def verify_files(version_dir: Path, names: list[str]) -> None:
    """Check these files of a version against their full sha256 (IndexUnavailable if not)."""
    files = read_manifest(version_dir).get("files", {})
    for name in names:
        if not is_plain_name(name) or sha256_file(version_dir / name) != files.get(name):
            raise IndexUnavailable(f"{version_dir / name} does not match its checksum "
                                   "(damaged?): run `make index`")


def sample_digest(path: Path) -> str:
    """sha256 of the file's size and SAMPLE_BLOCKS blocks spread evenly over it, first and
    last included: reads ~1 MiB of a file of any size."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        for k in range(SAMPLE_BLOCKS):
            fh.seek((size - SAMPLE_BYTES) * k // (SAMPLE_BLOCKS - 1) if size > SAMPLE_BYTES else 0)
            digest.update(fh.read(SAMPLE_BYTES))
    return digest.hexdigest()


def encoder_files(index_dir: Path, record: dict[str, Any]) -> tuple[Path, dict[str, str]]:
    """The folder and files (name -> sha256) a manifest's encoder record names, confined to
    index_dir/encoders/<plain name>; IndexUnavailable for anything else."""
    parts = str(record.get("folder", "")).split("/")
    files = record.get("files", {})
    if (len(parts) != 2 or parts[0] != "encoders" or not is_plain_name(parts[1])
            or not isinstance(files, dict) or not all(map(is_plain_name, files))):
        raise IndexUnavailable(f"the index names encoder files outside {index_dir}/encoders/ "
                               "(damaged or tampered manifest): run `make index`")
    return index_dir / "encoders" / parts[1], {str(k): str(v) for k, v in files.items()}


def prune(index_dir: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` versions (never the current one), and what killed
    builds left behind. Call it only while holding the build lock."""
    current = current_or_none(index_dir)
    versions = list_versions(index_dir)
    removed = [v for v in versions[:-keep] if v != current] if keep > 0 else []
    folder = index_dir / "versions"
    for name in removed:
        # Renamed away first: a deletion cut short must not leave a half-deleted version
        # that still looks published.
        os.replace(folder / name, folder / f".deleting-{name}")
    if removed:
        fsync_dir(folder)
    if folder.is_dir():
        for stale in [*folder.glob(".staging-*"), *folder.glob(".deleting-*")]:
            shutil.rmtree(stale, ignore_errors=True)
    for tmp in index_dir.glob(f".{CURRENT}.*.tmp"):
        tmp.unlink(missing_ok=True)
    return removed


@dataclass(frozen=True)
class VersionInfo:
    name: str
    current: bool
    built_at: str
    documents: int
    chunks: int
    problem: str  # empty when every file matches its checksum


def describe_versions(index_dir: Path) -> list[VersionInfo]:
    """Every published version, oldest first, each verified against its manifest."""
    current = current_or_none(index_dir)
    out = []
    for name in list_versions(index_dir):
        try:
            manifest, problem = verify(index_dir / "versions" / name), ""
        except IndexUnavailable as exc:
            manifest, problem = {}, str(exc)
        out.append(VersionInfo(name, name == current, str(manifest.get("built_at", "")),
                               int(manifest.get("documents", 0)), int(manifest.get("chunks", 0)),
                               problem))
    return out


def rollback(index_dir: Path, version: str | None = None) -> str:
    """Point CURRENT at `version` (default: the one published before the current one) once it
    verifies; running services pick it up on their next reload. Returns the version."""
    with build_lock(index_dir):
        current = current_or_none(index_dir)
        versions = list_versions(index_dir)
        if version is None:
            older = [v for v in versions if current is not None and v < current]
            if not older:
                raise NoSuchVersion(
                    f"no version older than {current} in {index_dir} to roll back to")
            version = older[-1]
        elif version not in versions:
            raise NoSuchVersion(f"no published version {version!r} in {index_dir} "
                                f"(published: {', '.join(versions) or 'none'})")
        verify(index_dir / "versions" / version)
        set_current(index_dir, version)
        return version


@contextlib.contextmanager
def build_lock(index_dir: Path) -> Iterator[None]:
    """Hold index/LOCK for the duration of a build; fail at once if another build holds it."""
    index_dir.mkdir(parents=True, exist_ok=True)
    path = index_dir / "LOCK"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        # The holder's note must survive a failed attempt: the next one names the holder too.
        holder = _holder(fd)
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        raise BuildLocked(f"another build is running on {index_dir} ({holder})") from None
    try:
        os.ftruncate(fd, 0)
        started = datetime.now(UTC).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock


def _holder(fd: int) -> str:
    return os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "unknown holder"


def lock_holder(index_dir: Path) -> str | None:
    """Who holds the build lock, or None when it is free. Only a probe: the answer may change
    right after, so a build must still take the lock itself."""
    try:
        fd = os.open(index_dir / "LOCK", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            return _holder(fd)
        return None
    finally:
        os.close(fd)
