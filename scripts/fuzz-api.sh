#!/usr/bin/env bash
# Fuzz the HTTP API with Schemathesis against its own OpenAPI document, every check on.
#
#   scripts/fuzz-api.sh                      # starts `recassist serve --demo` (no LLM) on a free port
#   scripts/fuzz-api.sh http://127.0.0.1:7860 # a server you started (with keys: ST_ARGS='-H "Authorization: Bearer KEY"')
#
# MAX_EXAMPLES (default 100) cases per operation, SEED (default 1), WORKERS (default 2);
# extra `st run` options in ST_ARGS. Exits with Schemathesis's status: 0 when nothing failed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-$PWD/.venv}"
ST="${ST:-$VENV/bin/st}"
URL="${1:-}"
say() { printf '\033[1m[fuzz]\033[0m %s\n' "$*" >&2; }

work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "$URL" ]; then
  port="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  URL="http://127.0.0.1:$port"
  say "starting recassist serve --demo on $URL (no LLM, hashing embeddings, data in $work)"
  RECASSIST_DATA_DIR="$work/data" RECASSIST_LLM_BACKEND="${RECASSIST_LLM_BACKEND:-none}" \
    RECASSIST_EMBEDDING_BACKEND="${RECASSIST_EMBEDDING_BACKEND:-hash}" HF_HUB_OFFLINE=1 \
    ANONYMIZED_TELEMETRY=False GRADIO_ANALYTICS_ENABLED=False \
    "$VENV/bin/python" -m server.cli serve --demo --host 127.0.0.1 --port "$port" >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 180); do
    curl -fsS "$URL/health" >/dev/null 2>&1 && break
    kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 1
  done
fi

# Two rules of the OpenAI facade that a JSON Schema cannot state: the user is named somewhere (the
# `user` field, the X-Recassist-User header or a user-bound key; else 400), and at least one user
# message has text (else 422). Schema-valid requests that break them are rightly refused.
cat >"$work/schemathesis.toml" <<'TOML'
[[operations]]
include-name = "POST /v1/chat/completions"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]
TOML

say "fuzzing $URL/openapi.json: ${MAX_EXAMPLES:-100} examples per operation, seed ${SEED:-1}"
eval "set -- ${ST_ARGS:-}"
# From the scratch folder: Schemathesis keeps its crash cache (.schemathesis/) in the working directory.
cd "$work"
"$ST" --config-file "$work/schemathesis.toml" --no-color run "$URL/openapi.json" \
  --checks all --phases examples,coverage,fuzzing \
  --max-examples "${MAX_EXAMPLES:-100}" --seed "${SEED:-1}" --workers "${WORKERS:-2}" \
  --request-timeout 60 "$@"
