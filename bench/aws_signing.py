"""Which AWS library signs the relay's two calls: init CPU, peak RSS and CPU per signed request.

`python -m bench.aws_signing` runs each contender in fresh interpreters (the minimum of
`--runs`, as the machine is shared): import the library, build its credential chain from the
keys Lambda puts in the environment, sign one `UpdateItem`-shaped POST (init), then sign
`--calls` more (per call). Peak RSS is the process's `ru_maxrss` less that of an interpreter
that imported nothing. Prints a table; docs/architecture.md's decision record quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# One interpreter per contender and run: what init would pay is the work from an empty process.
_PROLOGUE = """
import json, resource, time
began = time.process_time()
"""
_EPILOGUE = """
init_ms = (time.process_time() - began) * 1000
began = time.process_time()
for _ in range(CALLS):
    sign()
per_call_ms = (time.process_time() - began) * 1000 / CALLS
print(json.dumps({"init_ms": init_ms, "per_call_ms": per_call_ms,
                  "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""
BODY = b'{"TableName": "quota", "Key": {"pk": {"S": "quota#2026-12-03#jwt:alice"}}}'

CONTENDERS = {
    "nothing": """
def sign():
    pass
""",
    # awscrt: the CRT's default chain (environment, profile, process, web identity, container,
    # IMDS), cached, and its SigV4 signer on a CRT HTTP request.
    "awscrt": """
from awscrt.auth import AwsCredentialsProvider, AwsSigningConfig, aws_sign_request
from awscrt.http import HttpHeaders, HttpRequest
from awscrt.io import ClientBootstrap, DefaultHostResolver, EventLoopGroup
import io
group = EventLoopGroup(1)
provider = AwsCredentialsProvider.new_default_chain(
    ClientBootstrap(group, DefaultHostResolver(group)))
def sign():
    headers = HttpHeaders([("host", "dynamodb.eu-west-1.amazonaws.com"),
                           ("content-type", "application/x-amz-json-1.0"),
                           ("x-amz-target", "DynamoDB_20120810.UpdateItem")])
    request = HttpRequest("POST", "/", headers, io.BytesIO(BODY))
    config = AwsSigningConfig(credentials_provider=provider, region="eu-west-1",
                              service="dynamodb")
    aws_sign_request(request, config).result()
    return dict(request.headers)
sign()
""",
    # botocore: its session's credential chain (the same sources, plus SSO) and SigV4Auth.
    "botocore": """
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
import botocore.session
credentials = botocore.session.Session().get_credentials()
def sign():
    request = AWSRequest("POST", "https://dynamodb.eu-west-1.amazonaws.com/", data=BODY,
        headers={"content-type": "application/x-amz-json-1.0",
                 "x-amz-target": "DynamoDB_20120810.UpdateItem"})
    SigV4Auth(credentials.get_frozen_credentials(), "dynamodb", "eu-west-1").add_auth(request)
    return dict(request.headers)
sign()
""",
}


def run_once(name: str, calls: int) -> dict[str, float]:
    code = f"CALLS = {calls}\nBODY = {BODY!r}\n" + _PROLOGUE + CONTENDERS[name] + _EPILOGUE
    env = {
        "PATH": os.environ.get("PATH", ""),
        # As on Lambda: the function role's keys in the environment; no config files, no IMDS.
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "AWS_SESSION_TOKEN": "session-token-example",
        "AWS_REGION": "eu-west-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.splitlines()[-1])


def measure(runs: int, calls: int) -> dict[str, dict[str, float]]:
    """Per contender, the minimum over `runs` fresh interpreters of each figure (interleaved,
    so a busy moment on the shared machine hits every contender alike)."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in CONTENDERS}
    for _ in range(runs):
        for name in CONTENDERS:
            samples[name].append(run_once(name, calls))
    floor_rss = min(s["rss_kb"] for s in samples["nothing"])
    return {
        name: {
            "init_cpu_ms": round(min(s["init_ms"] for s in runs_of), 1),
            "peak_rss_mb": round((min(s["rss_kb"] for s in runs_of) - floor_rss) / 1024, 1),
            "per_call_cpu_ms": round(min(s["per_call_ms"] for s in runs_of), 4),
        }
        for name, runs_of in samples.items()
        if name != "nothing"
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    figures = measure(args.runs, args.calls)
    print(f"{'':10} {'init CPU ms':>12} {'peak RSS MB':>12} {'per call CPU ms':>16}")
    for name, row in figures.items():
        print(
            f"{name:10} {row['init_cpu_ms']:12} {row['peak_rss_mb']:12} {row['per_call_cpu_ms']:16}"
        )
    print("(at 128 MB a function gets 128/1769 of one CPU: multiply CPU by 13.8 for its time)")


if __name__ == "__main__":
    main()
