"""The GitHub workflows are valid and clean under zizmor; the deploy smoke test tells a streaming
relay from a buffering one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from devtools.scripts import Script
from tests.helpers import sse_server

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
SMOKE = ROOT / "infra" / "smoke_test.sh"


def run(*command: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def test_workflows_match_githubs_schema():
    assert WORKFLOWS
    result = run(
        str(BIN / "check-jsonschema"),
        "--builtin-schema",
        "vendor.github-workflows",
        *map(str, WORKFLOWS),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_are_clean_under_zizmor():
    result = run(str(BIN / "zizmor"), "--offline", ".github/workflows")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings" in result.stdout + result.stderr


def test_zizmor_would_catch_an_injection(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: pull_request\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-24.04\n"
        '    steps:\n      - run: echo "${{ github.event.pull_request.title }}"\n'
    )
    assert run(str(BIN / "zizmor"), "--offline", str(bad.parent)).returncode != 0


def load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads `on` as true
    return workflow


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def test_every_action_is_pinned_to_a_commit_and_checkouts_keep_no_token():
    for path in WORKFLOWS:
        workflow = load(path)
        assert workflow["permissions"] == {}, path  # jobs ask for what they need
        for name, job in workflow["jobs"].items():
            assert job.get("permissions") is not None, name
            for step in steps(job):
                if "uses" in step:
                    assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", step["uses"]), step
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, name


def test_every_push_and_pull_request_runs_lint_and_every_check():
    ci = load(ROOT / ".github" / "workflows" / "ci.yml")
    assert set(ci["on"]) == {"push", "pull_request"}
    assert ci["on"]["push"] is None  # every branch
    commands = [s.get("run", "") for s in steps(ci["jobs"]["test"])]
    assert "if" not in ci["jobs"]["test"]
    for command in ("make lint", "make test", "cfn-lint", "sam validate --lint", "sam build"):
        assert any(command in c for c in commands), command


def test_deploys_run_on_main_only_and_prod_waits_for_dev_and_reviewers():
    ci = load(ROOT / ".github" / "workflows" / "ci.yml")
    jobs = ci["jobs"]
    deploying = {n for n, j in jobs.items() if j.get("permissions", {}).get("id-token")}
    assert deploying == {"deploy-dev", "deploy-prod"}
    dev, prod = jobs["deploy-dev"], jobs["deploy-prod"]
    assert dev["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert dev["needs"] == "test" and "environment" not in dev
    assert prod["needs"] == "deploy-dev" and prod["environment"] == "production"
    dev_run = "\n".join(s.get("run", "") for s in steps(dev))
    prod_run = "\n".join(s.get("run", "") for s in steps(prod))
    # Prod gets the package that passed dev's smoke test, not a rebuild.
    assert "sam package" in dev_run and "sam build" not in prod_run
    assert any("upload-artifact" in s.get("uses", "") for s in steps(dev))
    assert any("download-artifact" in s.get("uses", "") for s in steps(prod))
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    for job_run, environment in ((dev_run, "dev"), (prod_run, "prod")):
        stack = config[environment]["deploy"]["parameters"]["stack_name"]
        assert f"--config-env {environment} --template-file packaged.yaml" in job_run
        assert '--region "$AWS_REGION"' in job_run  # where the credentials and the smoke test are
        assert f"--stack-name {stack}" in job_run
        assert "infra/smoke_test.sh" in job_run


@pytest.mark.parametrize(
    ("job", "role_variable"),
    [("deploy-dev", "AWS_DEV_DEPLOY_ROLE_ARN"), ("deploy-prod", "AWS_PROD_DEPLOY_ROLE_ARN")],
)
def test_each_deploy_job_installs_everything_before_its_own_roles_credentials(job, role_variable):
    """Installing runs code from package registries; none of it may see AWS credentials. And
    each environment has its own role (infra/ci-access.yaml), prod's in its environment."""
    job_steps = steps(load(ROOT / ".github" / "workflows" / "ci.yml")["jobs"][job])
    [credentials] = [
        i
        for i, step in enumerate(job_steps)
        if step.get("uses", "").startswith("aws-actions/configure-aws-credentials@")
    ]
    role = job_steps[credentials]["with"]["role-to-assume"]
    assert role == "${{ vars." + role_variable + " }}"
    before = "\n".join(s.get("run", "") for s in job_steps[:credentials])
    after = "\n".join(s.get("run", "") for s in job_steps[credentials + 1 :])
    assert "make .venv-sam/.installed" in before
    for installing in ("make", "pip", "npm", "sam build", "uv "):
        assert installing not in after, installing


@pytest.fixture
def buffering_server():
    """Answers the whole SSE body at once, the way a relay behind plain Mangum would."""
    frames = b"".join(b'data: {"delta":"%d "}\n\n' % i for i in range(40))
    body = frames + b"event: done\ndata: {}\n\n"
    with sse_server(body, delay_s=1.0, token="smoke-token-abc") as (url, _):
        yield url


def test_smoke_test_passes_on_a_streaming_relay_even_after_a_slow_start(upstream, make_relay):
    """The first token comes late (a cold start after a deploy delays it just so), then the
    rest over 1.2 s: streaming, though the first frame arrives after half of the total time."""
    relay = make_relay(client_tokens="smoke-token-abc", allow_anonymous=False)
    upstream.default = Script(
        tokens=[f"{i}\n" for i in range(1, 41)], first_delay_s=1.5, delay_s=0.03
    )
    env = {"PATH": os.environ["PATH"], "RELAY_TOKEN": "smoke-token-abc"}
    result = run(str(SMOKE), relay.url + "/", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: the relay streams" in result.stdout


def test_smoke_test_fails_on_a_buffering_relay(buffering_server):
    env = {"PATH": os.environ["PATH"], "RELAY_TOKEN": "smoke-token-abc"}
    result = run(str(SMOKE), buffering_server, env=env)
    assert result.returncode == 1
    assert "buffered" in result.stderr


def test_smoke_test_fails_on_an_http_error(upstream, make_relay):
    relay = make_relay(client_tokens="smoke-token-abc", allow_anonymous=False)
    env = {"PATH": os.environ["PATH"], "RELAY_TOKEN": "wrong-token"}
    result = run(str(SMOKE), relay.url, env=env)
    assert result.returncode != 0
    assert "refused with HTTP 401" in result.stdout  # it got past the open-relay check


def test_smoke_test_fails_on_an_open_relay_before_streaming(upstream, make_relay):
    relay = make_relay(allow_anonymous=True)
    result = run(str(SMOKE), relay.url, env={"PATH": os.environ["PATH"]})
    assert result.returncode == 1
    assert "got HTTP 200, not 401/403: the relay is open" in result.stderr
    assert upstream.requests[-1].body["messages"][-1]["content"] == "hi"  # only the probe ran
    assert len(upstream.requests) == 1
