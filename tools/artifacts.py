"""Prod deploys exactly what dev built and checked: the package's S3 object versions are pinned in
the packaged template, with their hashes, and the template's own hash goes to the prod job.

    python tools/artifacts.py pin packaged.yaml          # dev, after `sam package`
    python tools/artifacts.py verify packaged.yaml SHA   # prod, before `sam deploy`

`pin` rewrites each function's `CodeUri: s3://bucket/key` as `{Bucket, Key, Version}` (the
version S3 gave the upload, which a later upload to the same key cannot change), records the
object's SHA-256 in the function's `Metadata` (`ArtifactSha256`), and prints
`packaged-sha256=<hex>` of the rewritten template for `$GITHUB_OUTPUT`. `verify` fails unless
the template hashes to the SHA the dev job recorded (a job output no later run can touch) and
every pinned object version still hashes to what was recorded. The deploy roles write only under
their own stack's prefix (infra/ci-access.yaml), so prod's role could not replace them anyway.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import yaml
from botocore.exceptions import ClientError
from samtranslator.yaml_helper import yaml_parse

FUNCTION = "AWS::Serverless::Function"


class ArtifactMismatch(Exception):
    """What prod was about to deploy is not what dev built and checked."""


def _s3():
    return boto3.client("s3")


def _object_sha256(s3, bucket: str, key: str, version: str) -> str:
    digest = hashlib.sha256()
    body = s3.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"]
    for chunk in iter(lambda: body.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _functions(template: dict) -> dict[str, dict]:
    resources = template.get("Resources", {})
    return {name: r for name, r in resources.items() if r.get("Type") == FUNCTION}


def pin(path: Path) -> str:
    """Pin every function's package to its object version and hash; the template's SHA-256."""
    template = yaml_parse(path.read_text())
    s3 = _s3()
    for name, resource in _functions(template).items():
        uri = resource["Properties"]["CodeUri"]
        if not isinstance(uri, str) or not uri.startswith("s3://"):
            raise ArtifactMismatch(f"{name}: CodeUri {uri!r} is not an uploaded package")
        parts = urlsplit(uri)
        bucket, key = parts.netloc, parts.path.lstrip("/")
        version = s3.head_object(Bucket=bucket, Key=key).get("VersionId")
        if not version or version == "null":
            raise ArtifactMismatch(f"{name}: s3://{bucket}/{key} has no version (versioning off?)")
        resource["Properties"]["CodeUri"] = {"Bucket": bucket, "Key": key, "Version": version}
        metadata = resource.setdefault("Metadata", {})
        metadata["ArtifactSha256"] = _object_sha256(s3, bucket, key, version)
    text = yaml.safe_dump(template, sort_keys=False)
    path.write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def verify(path: Path, expected_sha256: str) -> None:
    """Raise `ArtifactMismatch` unless the template and every package are what dev recorded."""
    text = path.read_bytes()
    actual = hashlib.sha256(text).hexdigest()
    if actual != expected_sha256.strip().lower():
        raise ArtifactMismatch(f"{path} hashes to {actual}, dev recorded {expected_sha256}")
    template = yaml_parse(text.decode())
    functions = _functions(template)
    if not functions:
        raise ArtifactMismatch(f"{path} deploys no function")
    s3 = _s3()
    for name, resource in functions.items():
        uri = resource["Properties"].get("CodeUri")
        recorded = resource.get("Metadata", {}).get("ArtifactSha256")
        if not isinstance(uri, dict) or not uri.get("Version") or not recorded:
            raise ArtifactMismatch(f"{name}: its package is not pinned to a version and hash")
        try:
            found = _object_sha256(s3, uri["Bucket"], uri["Key"], uri["Version"])
        except ClientError as exc:
            raise ArtifactMismatch(f"{name}: package version {uri['Version']}: {exc}") from exc
        if found != recorded:
            raise ArtifactMismatch(f"{name}: package version {uri['Version']} hashes to {found}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pinning = commands.add_parser("pin", help="pin the packages, print packaged-sha256=<hex>")
    pinning.add_argument("template", type=Path)
    checking = commands.add_parser("verify", help="fail unless all is as dev recorded it")
    checking.add_argument("template", type=Path)
    checking.add_argument("sha256")
    args = parser.parse_args(argv)
    try:
        if args.command == "pin":
            print(f"packaged-sha256={pin(args.template)}")
        else:
            verify(args.template, args.sha256)
            print(f"OK: {args.template} and its packages are the ones dev built and checked")
    except ArtifactMismatch as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
