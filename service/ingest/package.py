"""Office files are ZIP packages: check what they would inflate to before any part is read."""

from __future__ import annotations

import io
import zipfile

from service.ingest.document import ReadError

# A real document's XML parts stay far below these; a zip bomb's do not. Checked on the sizes
# the archive declares, which zipfile also enforces as an upper bound when it inflates.
MAX_PARTS = 10_000
MAX_INFLATED_BYTES = 256 * 1024 * 1024
MAX_PART_BYTES = 64 * 1024 * 1024


def open_package(data: bytes, required: str, label: str) -> zipfile.ZipFile:
    """The archive, once its declared sizes are within the limits and `required` is in it."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise ReadError(f"not a readable {label} file (damaged ZIP package: {exc})") from None
    infos = archive.infolist()
    if len(infos) > MAX_PARTS:
        raise ReadError(f"{len(infos):,} parts in the package, over the {MAX_PARTS:,} limit")
    total = sum(info.file_size for info in infos)
    if total > MAX_INFLATED_BYTES:
        raise ReadError(f"its parts inflate to {total:,} bytes, over the "
                        f"{MAX_INFLATED_BYTES:,}-byte limit (a zip bomb?)")
    for info in infos:
        if info.filename.endswith((".xml", ".rels")) and info.file_size > MAX_PART_BYTES:
            raise ReadError(f"part {info.filename} inflates to {info.file_size:,} bytes, over "
                            f"the {MAX_PART_BYTES:,}-byte limit (a zip bomb?)")
    if required not in archive.namelist():
        raise ReadError(f"not a {label} file (no {required} in the package)")
    return archive
