#!/usr/bin/env bash
# Smoke test of a deployed relay: streams one answer with curl -N and fails unless it ended with
# `event: done` and its first SSE frame arrived well before its last (i.e. it really streamed).
# Usage: infra/smoke_test.sh https://<id>.lambda-url.<region>.on.aws [RELAY_TOKEN in the env]
set -euo pipefail
url="${1:?usage: smoke_test.sh URL}"
url="${url%/}"
auth=()
if [ -n "${RELAY_TOKEN:-}" ]; then auth=(-H "authorization: Bearer ${RELAY_TOKEN}"); fi

ms() { echo $(( $(date +%s%N) / 1000000 )); }
start=$(ms)
first="" last="" frames=0 ended=""
while IFS= read -r line; do
  now=$(ms)
  case "$line" in
    'data: {"delta"'*) frames=$((frames + 1)); first=${first:-$now}; last=$now ;;
    'event: done'*) ended=done ;;
    'event: error'*) ended=error ;;
  esac
done < <(curl -sSN --fail-with-body --max-time 120 "${auth[@]}" \
  -H 'content-type: application/json' -H 'accept: text/event-stream' \
  -d '{"prompt": "Count from 1 to 40, one number per line, nothing else."}' "${url}/chat")

if [ "$ended" != done ] || [ "$frames" -lt 5 ]; then
  echo "FAIL: stream ended with '${ended:-nothing}' after ${frames} frames" >&2
  exit 1
fi
first_ms=$((first - start)) last_ms=$((last - start))
echo "frames=${frames} first_frame_ms=${first_ms} last_frame_ms=${last_ms}"
if [ $((first_ms * 2)) -ge "$last_ms" ]; then
  echo "FAIL: the first frame did not arrive well before the last: the answer was buffered" >&2
  exit 1
fi
echo "OK: the relay streams"
