#!/usr/bin/env bash
# Smoke test of a deployed relay. First it fails unless a request without credentials is refused
# (401 from the relay, 403 from an AWS_IAM function URL): an open relay spends its owner's money.
# Then it streams one answer with curl -N and fails unless it ended with
# `event: done` and its first SSE frame arrived well before its last, i.e. the frames came spread
# over the generation and not in one buffered burst. The spread is measured from the first frame,
# so a cold start (which delays every frame alike) cannot fail it.
# Usage: infra/smoke_test.sh https://<id>.lambda-url.<region>.on.aws (or the REST API's URL)
# Env: RELAY_TOKEN (a client token of the stack, if it has any), RELAY_API_KEY (the REST API
# door's key, sent as x-api-key on every request, the probe included, so that the probe's
# refusal is the relay's and not API Gateway's), SMOKE_MIN_SPREAD_MS (500).
# tools/stack_door.py finds a stack's door and key.
set -euo pipefail
url="${1:?usage: smoke_test.sh URL}"
url="${url%/}"
min_spread_ms="${SMOKE_MIN_SPREAD_MS:-500}"
auth=()
if [ -n "${RELAY_TOKEN:-}" ]; then auth=(-H "authorization: Bearer ${RELAY_TOKEN}"); fi
api_key=()
if [ -n "${RELAY_API_KEY:-}" ]; then api_key=(-H "x-api-key: ${RELAY_API_KEY}"); fi

# Fail closed: no credentials, no answer.
status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 30 "${api_key[@]}" \
  -H 'content-type: application/json' -d '{"prompt": "hi"}' "${url}/chat") || status="none"
case "$status" in
  401 | 403) echo "unauthenticated request refused with HTTP ${status}" ;;
  *)
    echo "FAIL: a request without credentials got HTTP ${status}, not 401/403: the relay is open" >&2
    exit 1
    ;;
esac

# The time in ms into $now, without forking (a fork per line would itself spread a burst).
clock() {
  if [ -n "${EPOCHREALTIME:-}" ]; then
    local micros="${EPOCHREALTIME/[.,]/}"
    now=$((micros / 1000))
  else
    now=$(($(date +%s%N) / 1000000))
  fi
}

clock
start=$now
first="" last="" frames=0 ended=""
while IFS= read -r line; do
  clock
  case "$line" in
    'data: {"delta"'*) frames=$((frames + 1)); first=${first:-$now}; last=$now ;;
    'event: done'*) ended=done ;;
    'event: error'*) ended=error ;;
  esac
done < <(curl -sSN --fail-with-body --max-time 120 "${auth[@]}" "${api_key[@]}" \
  -H 'content-type: application/json' -H 'accept: text/event-stream' \
  -d '{"prompt": "Count from 1 to 60, one number per line, nothing else."}' "${url}/chat")

if [ "$ended" != done ] || [ "$frames" -lt 5 ]; then
  echo "FAIL: stream ended with '${ended:-nothing}' after ${frames} frames" >&2
  exit 1
fi
spread=$((last - first))
echo "frames=${frames} first_frame_ms=$((first - start)) last_frame_ms=$((last - start)) spread_ms=${spread}"
if [ "$spread" -lt "$min_spread_ms" ]; then
  echo "FAIL: all frames arrived within ${spread} ms (< ${min_spread_ms}): the answer was buffered" >&2
  exit 1
fi
echo "OK: the relay streams"
