"""The archive that deploy/krew/coalmine.yaml points krew at, made byte for byte the same each time.

krew installs a plugin by downloading the archive a manifest names and checking its sha256, so
the manifest must carry the digest of exactly the archive a release publishes. The archive holds
one file, the launcher ``deploy/krew/kubectl-coalmine``; fixed names, times and owners make its
digest a function of that file alone. ``python -m devenv.krew [OUT]`` writes it (to
``dist/kubectl-coalmine.tar.gz`` by default) and says whether the manifest's digest matches.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from devenv import paths

KREW_DIR = paths.REPO_ROOT / "deploy" / "krew"
LAUNCHER = KREW_DIR / "kubectl-coalmine"
MANIFEST = KREW_DIR / "coalmine.yaml"
ARCHIVE = paths.REPO_ROOT / "dist" / "kubectl-coalmine.tar.gz"


def archive_bytes() -> bytes:
    """The release archive: the launcher at its root, executable, owned by nobody in particular."""
    data = LAUNCHER.read_bytes()
    info = tarfile.TarInfo(LAUNCHER.name)
    info.size, info.mode, info.mtime = len(data), 0o755, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)


def manifest_digests() -> list[str]:
    manifest = yaml.safe_load(MANIFEST.read_text())
    return [str(platform["sha256"]) for platform in manifest["spec"]["platforms"]]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    out = Path(args[0]) if args else ARCHIVE
    data = archive_bytes()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    stale = [d for d in manifest_digests() if d != digest]
    print(f"krew: {out} sha256 {digest}")
    if stale:
        print(f"krew: {MANIFEST} names another digest: set every sha256 to {digest}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
