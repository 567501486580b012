"""The deployment package the cold-start and size figures use, with and without bytecode.

`make package` builds it when the Makefile has that target; otherwise this module builds the
equivalent (pip install --target, the handler sources, compileall with unchecked-hash pycs).
Either way the zip is unpacked twice: as built, and with every __pycache__ removed.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "results" / "build"
# The Starlette release (main before issue 24 brought FastAPI back, and before issue 26 put the
# AWS calls on awscrt): the relay's warm figures and its Lambda-shaped cold start are measured
# against it in the same run, so "nothing got worse" is one run's comparison, not two days'.
PREVIOUS_RELEASE = "48f29db"
PREVIOUS_TREE = ROOT / "bench" / "results" / "previous"


@dataclass
class Package:
    zip_path: Path
    packaged: Path  # unpacked as built: precompiled bytecode included
    sources: Path  # the same files less every __pycache__
    source: str  # who built the zip: "make package" or "bench"
    zipped_bytes: int
    unzipped_bytes: int
    pyc_files: int


def as_on_lambda(
    package: Path, *, bench_module: bool = False, handler_from: Path | None = None
) -> tuple[list[str], dict[str, str]]:
    """The interpreter and environment of a process started as Lambda starts one: the package
    in LAMBDA_TASK_ROOT and on the path, no site-packages (`-S`: this checkout's virtualenv
    holds a hundred more distributions than the package, and pydantic scans them all for
    plugins); bench/'s stand-ins after the package, so `handler` is still the package's.
    `handler_from`, a tree ahead of the package, brings another release's `handler` to run on
    the package's libraries."""
    path = [str(package), str(ROOT)] if bench_module else [str(package)]
    if handler_from is not None:
        path.insert(0, str(handler_from))
    env = {"PYTHONPATH": os.pathsep.join(path), "LAMBDA_TASK_ROOT": str(package)}
    return [sys.executable, "-S"], env


def export_previous_release() -> Path | None:
    """The previous release's `handler/`, exported from git into a directory of its own and
    compiled as the package is (unchecked-hash bytecode, so its cold start does not compile);
    None when that commit is not in this clone."""
    tree = PREVIOUS_TREE
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    export = subprocess.run(
        ["git", "-C", str(ROOT), "archive", PREVIOUS_RELEASE, "handler"], capture_output=True
    )
    if export.returncode != 0:
        return None
    subprocess.run(["tar", "-x", "-C", str(tree)], input=export.stdout, check=True)
    (tree / "COMMIT").write_text(PREVIOUS_RELEASE)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            "--invalidation-mode",
            "unchecked-hash",
            str(tree / "handler"),
        ],
        check=True,
    )
    return tree


def _makefile_has_package_target() -> bool:
    makefile = ROOT / "Makefile"
    return makefile.exists() and any(
        line.startswith("package:") for line in makefile.read_text().splitlines()
    )


def _zip_from_make_package() -> Path | None:
    if not _makefile_has_package_target():
        return None
    before = set((ROOT / "build").glob("**/*.zip")) if (ROOT / "build").exists() else set()
    # For this host's architecture: the cold start runs the package here.
    arch = "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"
    result = subprocess.run(
        ["make", "package", f"ARCH={arch}"], cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        print(f"make package failed; building the package here\n{result.stderr[-2000:]}")
        return None
    zips = sorted((ROOT / "build").glob("**/*.zip"), key=lambda p: p.stat().st_mtime, reverse=True)
    return zips[0] if zips else (next(iter(before)) if before else None)


def _digest(*paths: Path) -> str:
    digest = hashlib.sha256(sys.version.encode())
    for root in paths:
        files = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _zip_built_here() -> Path:
    """pip install --target + the handler + compileall, zipped; cached on its inputs."""
    requirements = ROOT / "requirements.txt"
    zip_path = WORK / f"package-{_digest(requirements, ROOT / 'handler')}.zip"
    if zip_path.exists():
        return zip_path
    deps = WORK / f"deps-{_digest(requirements)}"
    if not deps.exists():
        staging = deps.with_suffix(".partial")
        shutil.rmtree(staging, ignore_errors=True)
        installed = subprocess.run(
            [
                *(sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
                *("--no-compile", "--target", str(staging), "-r", str(requirements)),
            ],
            capture_output=True,
            text=True,
        )
        if installed.returncode != 0:
            raise RuntimeError(f"pip install --target failed:\n{installed.stderr[-3000:]}")
        staging.rename(deps)
    tree = WORK / "assembling"
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(deps, tree)
    shutil.copytree(
        ROOT / "handler", tree / "handler", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(
        [
            *(sys.executable, "-m", "compileall", "-q", "-j", "0"),
            *("--invalidation-mode", "unchecked-hash", str(tree)),
        ],
        check=True,
    )
    for old in WORK.glob("package-*.zip"):
        old.unlink()
    partial = zip_path.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(tree))
    partial.rename(zip_path)
    shutil.rmtree(tree)
    return zip_path


def build_package() -> Package:
    WORK.mkdir(parents=True, exist_ok=True)
    zip_path = _zip_from_make_package()
    source = "make package"
    if zip_path is None:
        zip_path, source = _zip_built_here(), "bench"
    packaged, sources = WORK / "packaged", WORK / "sources"
    for tree in (packaged, sources):
        shutil.rmtree(tree, ignore_errors=True)
    with zipfile.ZipFile(zip_path) as archive:
        unzipped = sum(info.file_size for info in archive.infolist())
        pyc_files = sum(1 for name in archive.namelist() if name.endswith(".pyc"))
        archive.extractall(packaged)
    shutil.copytree(packaged, sources, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return Package(
        zip_path=zip_path,
        packaged=packaged,
        sources=sources,
        source=source,
        zipped_bytes=zip_path.stat().st_size,
        unzipped_bytes=unzipped,
        pyc_files=pyc_files,
    )


def previous_release_tree() -> Path | None:
    """The previous release's export: the one already made for this commit (a whole run's
    relay of the previous release may still be serving from it), else a new one."""
    marker = PREVIOUS_TREE / "COMMIT"
    if marker.exists() and marker.read_text() == PREVIOUS_RELEASE:
        return PREVIOUS_TREE
    return export_previous_release()


if __name__ == "__main__":
    print(build_package())
