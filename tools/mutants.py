"""Mutation testing of the core modules with cosmic-ray: `make mutants` (MUTANTS="sse policy").

Each target is one module, the functions of it that are core, and the fast tests that claim
to cover them. The module is mutated on disk in a copy of the tree under build/mutants (so an
interrupted run never leaves a mutant in the checkout), one mutant at a time, and the tests
run against it: a mutant that no test fails "survived". The runtime's tests start the runtime
as a process, which is why the mutation is on disk rather than in memory. The results go to
bench/mutants.md, survivors with the reason they are equivalent from bench/mutant-notes.json.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutants"
REPORT = ROOT / "bench" / "mutants.md"
RESULTS = ROOT / "bench" / "results" / "mutants.json"
NOTES = ROOT / "bench" / "mutant-notes.json"

# cosmic-ray replaces each binary operator by every other one (11 mutants per `+`, most of
# them a TypeError on bytes or str). One replacement per operator, and the relational ones
# that move a boundary or negate, keep the run short without losing what a mutant can show.
KEPT_BINARY = "Add_Sub|Sub_Add|Mul_Div|Div_Mul|FloorDiv_Mul|Mod_Mul|BitOr_BitAnd|BitAnd_BitOr"
KEPT_COMPARISON = (
    "Eq_NotEq|NotEq_Eq|Lt_LtE|LtE_Lt|Gt_GtE|GtE_Gt|Lt_GtE|Gt_LtE"
    "|Is_IsNot|IsNot_Is|In_NotIn|NotIn_In"
)
KEPT = re.compile(
    rf"core/ReplaceBinaryOperator_({KEPT_BINARY})$|core/ReplaceComparisonOperator_({KEPT_COMPARISON})$"
    r"|core/(?!ReplaceBinaryOperator|ReplaceComparisonOperator|VariableInserter|VariableReplacer)"
)


@dataclass
class Target:
    module: str
    tests: list[str]
    functions: list[str] = field(default_factory=list)  # empty: the whole module

    def test_command(self) -> str:
        python = ROOT / ".venv" / "bin" / "python"
        return f"{python} -m pytest -x -q -p no:cacheprovider {' '.join(self.tests)}"


# hypothesis and schemathesis, pytest plugins that only test_openapi.py uses, cost seconds of
# imports per mutant; targets whose tests do not need them leave them out.
NO_UNUSED_PLUGINS = ["-p no:hypothesispytest", "-p no:schemathesis"]

TARGETS = {
    "sse": Target(
        "handler/sse.py",
        ["tests/test_upstream_streams.py", "tests/test_streaming.py"],
    ),
    "policy": Target(
        "handler/policy.py",
        [
            "tests/test_prompt_size_everywhere.py",
            "tests/test_policy_boundaries.py",
            "tests/test_cost_policy.py",
            "tests/test_bad_input.py",
        ],
    ),
    "access": Target(
        "handler/access.py",
        [
            "tests/test_access_challenges.py",
            "tests/test_access.py",
            "tests/test_access_rules.py",
            "tests/test_iam_identity.py",
            "tests/test_signin.py::test_an_unreachable_jwks_is_503_not_401_and_no_upstream_call",
        ],
    ),
    # Sign-in: the verifier, its key cache and the JWKS fetch (the dataclasses are shapes).
    # test_signin.py first: its first tests sign in with good tokens, which most mutants break.
    "signin": Target(
        "handler/signin.py",
        [
            *NO_UNUSED_PLUGINS,
            "tests/test_signin.py",
            "tests/test_signin_keys.py",
            "tests/test_signin_key_fetching.py",
            "tests/test_signin_claim_shapes.py",
            "tests/test_signin_header_refusals.py",
        ],
        ["looks_like_jwt", "JwtVerifier", "_get_json"],
    ),
    # The secret's formats and tokens (unit tests first, fast), then the store's reads and
    # refreshes through the app, init's adopted read and a SnapStart restore's re-read.
    "credentials": Target(
        "handler/credentials.py",
        [
            *NO_UNUSED_PLUGINS,
            "tests/test_secret_contents.py",
            "tests/test_plans.py::test_secret_and_client_tokens_name_plans_and_a_malformed_entry_is_refused",
            "tests/test_template.py::test_the_secret_the_stack_creates_is_refused_until_the_key_is_put_in",
            "tests/test_credentials.py",
            "tests/test_secret_resilience.py",
            # The credential chain's test (aws.py's), whose read count also moves when the
            # machine is loaded: test_init's restore tests cover the store's re-read after one.
            "--deselect=tests/test_secret_resilience.py::"
            "test_a_snapstart_restore_signs_with_the_container_credentials_found_then",
            "tests/test_secret_reads.py",
            "tests/test_access.py::test_a_bare_key_secret_carries_no_tokens_so_the_relay_stays_closed",
            "tests/test_access.py::test_a_secret_that_would_silently_change_access_is_503_with_the_reason_logged",
            "tests/test_access.py::test_the_templates_generated_field_is_ignored_once_the_key_is_in",
            "tests/test_access.py::test_with_a_secret_client_tokens_from_the_environment_are_ignored_and_said_so",
            "tests/test_access.py::test_a_client_token_caller_is_a_short_hash_never_the_token",
            "tests/test_access.py::test_concurrent_upstream_401s_share_one_secret_read",
            "tests/test_plans.py::test_a_client_token_gets_the_plan_it_names_on_every_model_route",
            "tests/test_plans.py::test_a_secret_entry_names_its_tokens_plan_and_bare_strings_stay_default",
            "tests/test_init.py::test_init_reads_the_secret_so_the_first_request_does_not",
            "tests/test_init.py::test_secret_unreadable_during_init_and_after_is_503_remembered_briefly_then_recovers",
            "tests/test_init.py::test_after_restore_the_pool_is_new_and_a_stale_secret_is_read_again",
            "tests/test_init.py::test_after_restore_a_fresh_secret_is_kept",
            "tests/test_secret_restore.py",
            "tests/test_secret_refreshes.py",
            "tests/test_secret_refresh_interval.py",
        ],
    ),
    # The AWS clients: the signed JSON-protocol client, and the two services on top of it.
    "aws": Target(
        "handler/aws.py",
        [
            *NO_UNUSED_PLUGINS,
            "tests/test_aws.py",
            "tests/test_aws_retries.py",
            "tests/test_aws_call_outcomes.py",
            "tests/test_aws_call_limits.py",
            "tests/test_aws_signing_time.py",
            "tests/test_aws_transport.py",
            "tests/test_aws_preconnect.py",
            # The laptop's sources: botocore's chain where the CRT's finds nothing (sdk_provider).
            "tests/test_aws_credential_sources.py",
        ],
    ),
    "secretsmanager": Target(
        "handler/secretsmanager.py",
        [
            *NO_UNUSED_PLUGINS,
            "tests/test_secretsmanager.py",
            # Its waits: the read and connect timeouts, the budget and the pauses (~16 s).
            "tests/test_aws_service_waits.py::test_a_secret_read_waits_three_seconds_per_attempt_and_gives_up_at_six",
            "tests/test_aws_service_waits.py::test_a_secret_answer_later_than_the_three_second_read_timeout_is_not_waited_for",
            "tests/test_aws_service_waits.py::test_a_secret_read_waits_two_seconds_per_connection_attempt_three_times",
            "tests/test_aws_service_waits.py::test_a_failing_secret_read_pauses_between_its_attempts",
            "tests/test_aws.py",
            # The reads through the relay, retried or not; the runtime's init-once and shared
            # cold reads (seconds each) are about credentials.py and init, not this module.
            "tests/test_secret_reads.py::test_a_get_secret_value_failing_with_a_server_error_is_tried_again",
            "tests/test_secret_reads.py::test_a_throttled_get_secret_value_is_tried_again",
            "tests/test_secret_reads.py::test_a_missing_secret_is_not_retried",
        ],
    ),
    "dynamodb": Target(
        "handler/dynamodb.py",
        [
            *NO_UNUSED_PLUGINS,
            "tests/test_dynamodb.py",
            "tests/test_aws_service_waits.py::test_a_failing_dynamodb_call_pauses_between_its_attempts",
            "tests/test_aws.py",
            "tests/test_aws_retries.py",
            # A failed condition's item, a failure, the pool opened at init, and GetItem (/me);
            # the reservation tests (test_quota_reservation.py, ~13 s) reach the same calls.
            "tests/test_quota.py::test_the_refusal_names_the_limit_that_refused",
            "tests/test_quota.py::test_a_failed_call_is_tried_up_to_three_times_and_a_refusal_is_not",
            "tests/test_quota.py::test_with_limits_on_and_keys_in_the_environment_no_sdk_is_imported",
            "tests/test_plans.py::test_me_shows_the_plan_its_limits_and_what_is_used_and_left",
        ],
    ),
    # The limits' arithmetic: the windows, the slots, the conditional update and how a refusal
    # is read, what a request is charged. The one test left out runs 20 requests across
    # processes for 25 s, too slow to repeat per mutant; the others cover the same code.
    "quota": Target(
        "handler/quota.py",
        [
            "tests/test_quota_windows.py",
            "tests/test_quota.py",
            "--deselect=tests/test_quota.py::"
            "test_exactly_the_limit_is_admitted_under_20_concurrent_requests_across_processes",
            "tests/test_quota_reservation.py",
            # The stream slots (a plan's max_concurrent_streams) and the plans' own limits.
            "tests/test_plans.py::test_me_shows_the_plan_its_limits_and_what_is_used_and_left",
            "tests/test_plans.py::"
            "test_two_stream_slots_admit_exactly_two_of_twenty_streams_over_two_relays",
            "tests/test_plans.py::test_a_slot_left_by_a_dead_environment_lapses_by_itself",
            "tests/test_plans.py::"
            "test_the_limits_are_the_callers_plans_and_a_plan_without_limits_is_not_counted",
        ],
        [
            "stream_slots",
            "Window",
            "item_key",
            "minute_label",
            "settled_tokens",
            "Quota._admission",
            "Quota._refusal",
        ],
    ),
    "models": Target(
        "handler/models.py",
        [
            "tests/test_chat_bodies.py",
            # A model's defaults and bounds are also the contract's document (docs/openapi.json).
            "tests/test_openapi.py::test_the_committed_document_is_the_apps",
            "tests/test_typed_bodies.py",
            "tests/test_bad_input.py",
            "tests/test_policy_boundaries.py",
            "tests/test_prompt_size_everywhere.py",
            "tests/test_input_policy.py",
        ],
    ),
    # Relay's parsing: the upstream's refusals and error codes, the event stream's deltas and
    # usage (the connection pool and the request are not parsing). Tests that most mutants fail
    # fast come first (the run stops at the first failure), then the passthrough's usage and its
    # piecewise reads (0.3 s a piece), as most of the module's mutants are in PassthroughBytes.
    # Left out, as they reach none of the listed functions or only as a listed test does: the
    # pings and the timeouts before the headers (streaming.py, `_send`), /v1/responses
    # (responses.py reads its events), an unreachable upstream, and the other wires (plain
    # text, the AI SDK's, the openai SDK) over the same ChatDeltas or PassthroughBytes outcome.
    "relay": Target(
        "handler/relay.py",
        [
            *NO_UNUSED_PLUGINS,
            "tests/test_chat_answer_model.py",
            "tests/test_chat_stream_ends.py",
            "tests/test_upstream_streams.py::test_crlf_framed_upstream_streams_through_chat",
            "tests/test_upstream_streams.py::test_crlf_framed_upstream_streams_through_v1_chat_completions",
            "tests/test_upstream_stream_failure_causes.py",
            "tests/test_upstream_streams.py::test_a_broken_upstream_stream_ends_v1_with_an_error_chunk_not_done",
            "tests/test_upstream_streams.py::test_deltas_that_arrive_in_one_read_are_each_forwarded",
            "tests/test_upstream_streams.py::"
            "test_an_upstream_stream_ending_with_finish_reason_but_no_done_is_complete_on_chat",
            "tests/test_upstream_streams.py::test_rate_limit_without_retry_after_is_a_429_without_one",
            "tests/test_upstream_streams.py::test_upstream_403_is_upstream_auth_and_not_retried",
            "tests/test_upstream_refusals.py",
            "tests/test_upstream_status_boundaries.py",
            "tests/test_upstream_tool_calls.py",
            # The usage chunk and the chunk count in the log, then the reads piece by piece.
            "tests/test_cost_policy.py::test_usage_is_asked_for_and_kept_from_a_caller_who_did_not_ask",
            "tests/test_cost_policy.py::test_usage_reaches_a_caller_who_asked",
            "tests/test_cost_policy.py::test_usage_chunk_is_dropped_even_when_events_arrive_cut_in_two",
            "tests/test_cost_policy.py::test_usage_chunk_is_dropped_from_openais_own_stream_shape",
            "tests/test_cost_policy.py::test_a_non_streamed_answer_logs_its_usage",
            "tests/test_v1_data_lines_without_the_space.py",
            "tests/test_passthrough_reads.py",
            "tests/test_upstream_failures.py::test_rate_limit_passes_retry_after_on",
            "tests/test_upstream_failures.py::test_upstream_server_error_is_a_502",
            "tests/test_upstream_failures.py::test_plain_text_timeout_is_a_504",
            "tests/test_upstream_failures.py::"
            "test_upstream_dying_mid_stream_on_passthrough_sends_an_openai_error",
            # Tool calls in the event stream, the passthrough's usage chunk, the upstream's
            # `model_not_found`, and what the log is told (usage, the completion text).
            "tests/test_tools_chat.py::test_a_tool_call_streams_as_tool_call_events_then_its_result_goes_back",
            "tests/test_tools_chat.py::test_parallel_calls_stream_apart_and_complete_in_order",
            "tests/test_tools_chat.py::test_the_logged_completion_is_the_text_beside_a_tool_call",
            "tests/test_openai_compatible.py::test_stream_bytes_pass_through_unchanged",
            "tests/test_follow_a_request.py::test_a_retired_model_on_chat_is_model_unavailable",
            "tests/test_follow_a_request.py::test_another_rejection_on_v1_stays_the_callers_mistake",
            "tests/test_follow_a_request.py::test_a_refused_key_names_the_upstreams_request_id",
            "tests/test_request_log.py::test_one_line_per_request_with_the_facts",
            "tests/test_request_log.py::test_prompts_and_completions_are_logged_only_when_configured",
        ],
        [
            "_refusal",
            "_error_code",
            "answer_usage",
            "ChatDeltas",
            "PassthroughBytes",
            "_usage_object_at",
            "_complete_events_end",
            "_event_around",
        ],
    ),
    # The streaming response: the first-frame wait, pings, timeouts, mid-stream failures,
    # hang-ups, the deadline (from the adapter's header and from the runtime's context) and
    # the error trailers, and what it writes into the request's log line.
    "streaming": Target(
        "handler/streaming.py",
        [
            "tests/test_stream_cut_by_the_server.py",
            "tests/test_stream_first_token_deadline.py",
            "tests/test_stream_source.py",
            "tests/test_stream_deadlines_and_pings.py",
            "tests/test_streaming.py",
            "tests/test_upstream_failures.py",
            "tests/test_request_log.py",
            "tests/test_lwa.py::test_deadline_from_the_adapter_header_ends_the_stream_in_time",
            "tests/test_runtime.py::test_streamed_answer_is_prelude_nuls_and_one_chunk_per_frame",
            "tests/test_runtime.py::test_mid_stream_failure_ends_with_error_trailers",
            "tests/test_runtime.py::test_plain_text_failure_mid_stream_ends_with_error_trailers",
            "tests/test_runtime.py::test_stream_ends_cleanly_before_the_deadline",
        ],
    ),
    # The runtime's prelude and the cycle that writes an answer to the runtime API.
    "runtime": Target(
        "handler/runtime.py",
        [
            "tests/test_runtime_writer.py",
            "tests/test_runtime.py::test_streamed_answer_is_prelude_nuls_and_one_chunk_per_frame",
            "tests/test_runtime.py::test_a_hang_up_on_the_response_stream_closes_the_upstream_at_once",
            "tests/test_runtime.py::test_mid_stream_failure_ends_with_error_trailers",
            "tests/test_runtime.py::test_failure_before_the_response_goes_to_error",
            "tests/test_runtime.py::test_every_mode_comes_through_with_its_status",
        ],
        ["_prelude", "StreamingCycle"],
    ),
    # The streamed response's writer (chunks, back-pressure, hang-ups, the trailers).
    "writer": Target(
        "handler/runtime_api.py",
        [
            "tests/test_runtime_writer_answers.py",
            "tests/test_runtime_writer.py",
            "tests/test_runtime.py::test_streamed_answer_is_prelude_nuls_and_one_chunk_per_frame",
            "tests/test_runtime.py::test_a_hang_up_on_the_response_stream_closes_the_upstream_at_once",
            "tests/test_runtime.py::test_a_connection_closed_while_idle_before_the_response_is_no_hang_up",
            "tests/test_runtime.py::test_mid_stream_failure_ends_with_error_trailers",
        ],
        ["StreamedResponse"],
    ),
}


def copy_tree(destination: Path) -> None:
    """The checkout's tracked files (and its .venv and Node modules, linked) under `destination`."""
    if destination.exists():
        shutil.rmtree(destination)
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file():
            target = destination / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (destination / ".venv").symlink_to(ROOT / ".venv")
    node_modules = ROOT / "clients" / "ai-sdk" / "node_modules"
    if node_modules.is_dir():
        (destination / "clients" / "ai-sdk" / "node_modules").symlink_to(node_modules)


def line_ranges(source: str, names: list[str]) -> list[tuple[int, int]]:
    """The lines of the top-level functions and classes called `names`, and of the methods
    named `Class.method` among them."""
    definitions = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
    ranges = []
    for node in ast.parse(source).body:
        if not isinstance(node, definitions):
            continue
        if node.name in names:
            ranges.append((node.lineno, node.end_lineno))
        elif isinstance(node, ast.ClassDef):
            ranges += [
                (member.lineno, member.end_lineno)
                for member in node.body
                if isinstance(member, definitions) and f"{node.name}.{member.name}" in names
            ]
    return ranges


def within(line: int, ranges: list[tuple[int, int]]) -> bool:
    return any(first <= line <= last for first, last in ranges)


def out_of_scope(mutation, ranges: list[tuple[int, int]] | None) -> str | None:
    """Why a run leaves `mutation` out (`ranges`: the core functions' lines, None for all)."""
    if not KEPT.match(mutation.operator_name):
        return "operator not in the kept set"
    line = mutation.start_pos[0]
    if ranges is not None and not within(line, ranges):
        return "outside the core functions"
    return None


def skip_out_of_scope(database: Path, target: Target, source: Path) -> None:
    """Mark as skipped the mutants of operators not kept, and those outside the core functions."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    ranges = line_ranges(source.read_text(), target.functions) if target.functions else None
    with use_db(str(database), WorkDB.Mode.open) as work_db:
        for item in list(work_db.pending_work_items):
            reason = out_of_scope(item.mutations[0], ranges)
            if reason:
                work_db.set_result(
                    item.job_id, WorkResult(output=reason, worker_outcome=WorkerOutcome.SKIPPED)
                )


def mutant_lines(module_source: str, target: Target) -> tuple[int, list[int]]:
    """How many mutants cosmic-ray makes of `module_source` (as `target.module`), and the lines
    of those a run of `target` keeps: counted, not run."""
    from cosmic_ray.work_db import WorkDB, use_db

    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder)
        source = tree / target.module
        source.parent.mkdir(parents=True)
        source.write_text(module_source)
        write_config(tree / "config.toml", target)
        cosmic_ray = str(ROOT / ".venv" / "bin" / "cosmic-ray")
        subprocess.run(
            [cosmic_ray, "init", "config.toml", "session.sqlite"],
            cwd=tree,
            check=True,
            capture_output=True,
        )
        ranges = line_ranges(module_source, target.functions) if target.functions else None
        with use_db(str(tree / "session.sqlite"), WorkDB.Mode.open) as work_db:
            mutations = [item.mutations[0] for item in work_db.pending_work_items]
    kept = [m.start_pos[0] for m in mutations if out_of_scope(m, ranges) is None]
    return len(mutations), kept


def moved_lines(before: str, after: str) -> dict[int, int]:
    """Each line of `before` that is still in `after`, unchanged, and where it is now."""
    matcher = difflib.SequenceMatcher(None, before.splitlines(), after.splitlines(), autojunk=False)
    return {
        old + 1 + i: new + 1 + i
        for old, new, size in matcher.get_matching_blocks()
        for i in range(size)
    }


def write_config(config: Path, target: Target) -> None:
    config.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{target.module}"\n'
        "timeout = 180.0\n"
        "excluded-modules = []\n"
        f'test-command = "{target.test_command()}"\n'
        '[cosmic-ray.distributor]\nname = "local"\n'
    )


def run_target(name: str, target: Target, again: bool = False) -> dict:
    """Run every mutant of `target`; with `again`, only the survivors of its last session,
    against the tests as they are now (new tests written to kill them)."""
    tree = WORK / name / "tree"
    copy_tree(tree)
    config = WORK / name / "config.toml"
    database = WORK / name / "session.sqlite"
    write_config(config, target)
    cosmic_ray = [str(ROOT / ".venv" / "bin" / "cosmic-ray")]
    first_pass = None
    if again:
        with sqlite3.connect(database) as db:
            first_pass = db.execute(
                "SELECT count(*) FROM work_results WHERE test_outcome = 'SURVIVED'"
            ).fetchone()[0]
            db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'")
    else:
        database.unlink(missing_ok=True)
        subprocess.run([*cosmic_ray, "init", str(config), str(database)], cwd=tree, check=True)
        skip_out_of_scope(database, target, tree / target.module)
    started = time.monotonic()
    baseline = subprocess.run(target.test_command().split(), cwd=tree, capture_output=True)
    if baseline.returncode != 0:
        raise SystemExit(f"{name}: the tests fail without any mutant:\n{baseline.stdout[-2000:]}")
    subprocess.run([*cosmic_ray, "exec", str(config), str(database)], cwd=tree, check=True)
    result = collect(name, target, database, time.monotonic() - started)
    if first_pass is not None:
        result["first_pass_survived"] = first_pass
    return result


def fold_in(name: str, target: Target, functions: list[str], was: str) -> dict:
    """Run only `functions` of `target`, rewritten since the commit `was` that its last result
    was run on, and fold the run into that result: the last result's mutants in those
    functions (counted from the module at `was`) give way to this run's, and its survivors
    elsewhere, with their notes, move with their lines. Nothing else of the module may have
    changed but where its lines are: the mutants outside the functions must be as many."""
    last = json.loads(RESULTS.read_text())[name]
    before = subprocess.run(
        ["git", "show", f"{was}:{target.module}"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    after = (ROOT / target.module).read_text()
    _, kept_before = mutant_lines(before, target)
    made_after, kept_after = mutant_lines(after, target)
    ranges_before = line_ranges(before, functions)
    inside = [line for line in kept_before if within(line, ranges_before)]
    part = run_target(f"{name}-part", Target(target.module, target.tests, functions))
    part_ran = sum(part["counts"][key] for key in ("killed", "survived", "incompetent"))
    if len(kept_before) - len(inside) != len(kept_after) - part_ran - part["counts"]["not_run"]:
        raise SystemExit(f"{name}: {target.module} changed outside {functions}: run it in full")
    moved = moved_lines(before, after)
    gone, kept = [], []
    for survivor in last["survivors"]:
        line = survivor["line"]
        if within(line, ranges_before):
            gone.append(survivor)
        elif line in moved:
            kept.append({**survivor, "line": moved[line]})
        else:
            raise SystemExit(f"{name}: line {line} of {target.module} changed: run it in full")
    counts = dict(last["counts"])
    counts["killed"] += part["counts"]["killed"] - (len(inside) - len(gone))
    for key in ("survived", "incompetent", "not_run"):
        counts[key] = counts.get(key, 0) + part["counts"][key]
    counts["survived"] -= len(gone)
    counts["skipped"] = made_after - len(kept_after)
    move_notes(target.module, moved, ranges_before)
    ran = counts["killed"] + counts["survived"] + counts["incompetent"]
    return {
        **{key: value for key, value in last.items() if key != "first_pass_survived"},
        "counts": counts,
        "kill_rate": round((counts["killed"] + counts["incompetent"]) / ran, 3),
        "seconds": last["seconds"] + part["seconds"],
        "survivors": sorted(kept + part["survivors"], key=lambda s: (s["line"], s["operator"])),
        "folded": [
            *last.get("folded", []),
            {
                "functions": functions,
                "was": was,
                "before": {"ran": len(inside), "survived": len(gone)},
                "after": {"ran": part_ran, "survived": part["counts"]["survived"]},
            },
        ],
    }


def move_notes(module: str, moved: dict[int, int], gone: list[tuple[int, int]]) -> None:
    """The notes of `module`'s survivors follow their lines; those of lines in `gone` go."""
    notes = json.loads(NOTES.read_text())
    kept = {}
    for key, note in notes.items():
        path, _, rest = key.partition(":")
        line, _, operator = rest.partition(":")
        if path != module or not line.isdigit():
            kept[key] = note
        elif not within(int(line), gone):
            kept[f"{module}:{moved.get(int(line), int(line))}:{operator}"] = note
    NOTES.write_text(json.dumps(kept, indent=2) + "\n")


def collect(name: str, target: Target, database: Path, seconds: float) -> dict:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    counts = {"killed": 0, "survived": 0, "incompetent": 0, "skipped": 0, "other": 0}
    survivors = []
    with use_db(str(database), WorkDB.Mode.open) as work_db:
        # A run stopped before its end leaves mutants that no test has met: "not run".
        counts["not_run"] = sum(1 for _ in work_db.pending_work_items)
        for item, result in work_db.completed_work_items:
            mutation = item.mutations[0]
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                counts["skipped"] += 1
            elif result.test_outcome == TestOutcome.SURVIVED:
                counts["survived"] += 1
                survivors.append(
                    {
                        "line": mutation.start_pos[0],
                        "operator": mutation.operator_name,
                        "occurrence": mutation.occurrence,
                        "diff": "\n".join(
                            line
                            for line in (result.diff or "").splitlines()
                            if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))
                        ),
                    }
                )
            elif result.test_outcome == TestOutcome.KILLED:
                counts["killed"] += 1
            elif result.test_outcome == TestOutcome.INCOMPETENT:
                counts["incompetent"] += 1  # the mutant does not even import: counts as killed
            else:
                counts["other"] += 1
    ran = counts["killed"] + counts["survived"] + counts["incompetent"]
    killed = counts["killed"] + counts["incompetent"]
    return {
        "target": name,
        "module": target.module,
        "functions": target.functions,
        "tests": target.tests,
        "counts": counts,
        "kill_rate": round(killed / ran, 3) if ran else None,
        "seconds": round(seconds),
        "survivors": sorted(survivors, key=lambda s: (s["line"], s["operator"])),
    }


def survivors_noted(result: dict, notes: dict[str, str], prefix: str) -> int:
    """The survivors of `result` whose note starts with `prefix`: "equivalent" (no behaviour to
    test), or "killed" (by a test written after the run, checked against that mutant by hand)."""
    return sum(
        1
        for survivor in result["survivors"]
        if notes.get(f"{result['module']}:{survivor['line']}:{survivor['operator']}", "")
        .lower()
        .startswith(prefix)
    )


def write_report(results: dict[str, dict]) -> None:
    notes = json.loads(NOTES.read_text()) if NOTES.exists() else {}
    lines = [
        "# Mutation testing of the core (`make mutants`)",
        "",
        "cosmic-ray 8 mutates one module at a time on disk, in a copy of the tree, and runs the",
        "tests listed for it; a mutant no test fails survived. Operators: one replacement per",
        "binary operator, relational operators moved over a boundary or negated, and all of",
        "cosmic-ray's others (numbers, booleans, `not`, and/or, break/continue, exceptions,",
        "decorators, zero-iteration loops). Generated by tools/mutants.py; the reasons for",
        "survivors come from bench/mutant-notes.json. Modules not in the table were not run.",
        "The kill rate counts every survivor; the next column leaves out the survivors whose",
        "note shows them equivalent (a mutant that changes no behaviour cannot be killed).",
        '"Killed by hand": survivors of the last run that a test written afterwards kills,',
        "checked by applying that mutant by hand; they count as survived in both rates.",
        "",
        *([notes["_about_these_runs"], ""] if "_about_these_runs" in notes else []),
        "| target | module (functions) | mutants run | killed | survived | equivalent"
        " | killed by hand | kill rate | kill rate, equivalent left out | not run | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    totals = {"ran": 0, "killed": 0, "survived": 0, "equivalent": 0, "by_hand": 0, "not_run": 0}
    for result in results.values():
        counts = result["counts"]
        ran = counts["killed"] + counts["survived"] + counts["incompetent"]
        killed = counts["killed"] + counts["incompetent"]
        equivalent = survivors_noted(result, notes, "equivalent")
        by_hand = survivors_noted(result, notes, "killed")
        for key, value in zip(
            totals,
            (ran, killed, counts["survived"], equivalent, by_hand, counts.get("not_run", 0)),
            strict=True,
        ):
            totals[key] += value
        scope = result["module"] + (
            f" ({', '.join(result['functions'])})" if result["functions"] else ""
        )
        lines.append(
            f"| {result['target']} | {scope} | {ran} | {killed} | {counts['survived']}"
            + (
                f" ({result['first_pass_survived']} before the new tests)"
                if "first_pass_survived" in result
                else ""
            )
            + "".join(
                f" ({', '.join(fold['functions'])} rewritten since {fold['was'][:7]} and run"
                f" again: {fold['before']['survived']} of {fold['before']['ran']} survived"
                f" before, {fold['after']['survived']} of {fold['after']['ran']} after)"
                for fold in result.get("folded", [])
            )
            + f" | {equivalent} | {by_hand} | {_rate(killed, ran)}"
            f" | {_rate(killed, ran - equivalent)}"
            f" | {counts.get('not_run', 0)} | {result['seconds'] / 60:.1f} |"
        )
    lines.append(
        f"| **all** | | {totals['ran']} | {totals['killed']} | {totals['survived']}"
        f" | {totals['equivalent']} | {totals['by_hand']}"
        f" | {_rate(totals['killed'], totals['ran'])}"
        f" | {_rate(totals['killed'], totals['ran'] - totals['equivalent'])}"
        f" | {totals['not_run']} | |"
    )
    for result in results.values():
        if not result["survivors"]:
            continue
        lines += ["", f"## Survivors in {result['module']}", ""]
        for survivor in result["survivors"]:
            key = f"{result['module']}:{survivor['line']}:{survivor['operator']}"
            if key.startswith("_"):
                continue
            reason = notes.get(key, "not yet explained")
            lines += [
                f"- line {survivor['line']}, {survivor['operator']}: {reason}",
                "",
                "  ```diff",
                *[f"  {line}" for line in survivor["diff"].splitlines()],
                "  ```",
            ]
    REPORT.write_text("\n".join(lines) + "\n")


def _rate(killed: int, of: int) -> str:
    """A share to a tenth of a percent, rounded down: 99.7% is never shown as 100%."""
    if not of:
        return "-"
    return f"{int(killed * 1000 / of) / 10}%"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"some of {', '.join(TARGETS)} (default: all)")
    parser.add_argument(
        "--again",
        action="store_true",
        help="run only the survivors of the targets' last sessions, against today's tests",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="collect the targets' finished sessions in build/mutants and write the report",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="write bench/mutants.md again from bench/results/mutants.json and the notes",
    )
    parser.add_argument(
        "--functions",
        nargs="+",
        metavar="NAME",
        help="with one target and --was: run only these functions, rewritten since --was, and "
        "fold the run into the target's last result",
    )
    parser.add_argument("--was", metavar="COMMIT", help="the code the last result was run on")
    args = parser.parse_args()
    if bool(args.functions) != bool(args.was) or (args.functions and len(args.targets) != 1):
        parser.error("--functions and --was go together, with one target")
    if args.report:
        write_report(json.loads(RESULTS.read_text()))
        return 0
    names = args.targets or list(TARGETS)
    unknown = set(names) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {', '.join(TARGETS)}")
    for name in names:
        if args.report_only:
            database = WORK / name / "session.sqlite"
            seconds = database.stat().st_mtime - (WORK / name / "config.toml").stat().st_mtime
            result = collect(name, TARGETS[name], database, seconds)
        elif args.functions:
            result = fold_in(name, TARGETS[name], args.functions, args.was)
        else:
            result = run_target(name, TARGETS[name], again=args.again)
        # Read again: another run may have written its targets meanwhile.
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        # A second re-run (or a report) still compares with the first pass, not the last one.
        if "first_pass_survived" in results.get(name, {}) and (args.again or args.report_only):
            result["first_pass_survived"] = results[name]["first_pass_survived"]
        results[name] = result
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        write_report(results)
        print(f"{name}: {results[name]['counts']} kill rate {results[name]['kill_rate']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
