"""Zip a built Lambda package reproducibly: sorted entries, fixed timestamps, kept modes.

Usage: python -m infra.build.zip_package SOURCE_DIR OUT.zip; prints zipped and unzipped sizes.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def zip_package(source: Path, out: Path) -> tuple[int, int]:
    unzipped = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(source).as_posix(), FIXED_TIME)
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            unzipped += len(data)
            archive.writestr(info, data)
    return out.stat().st_size, unzipped


def main() -> None:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    zipped, unzipped = zip_package(source, out)
    print(f"{out}: {zipped / 1e6:.1f} MB zipped, {unzipped / 1e6:.1f} MB unzipped")


if __name__ == "__main__":
    main()
