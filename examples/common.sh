# shellcheck shell=bash
# examples/common.sh -- sourced by the example scripts (bash and curl only); not run by itself.
#
#     NEUROND_URL     the daemon, default http://127.0.0.1:8080
#     NEUROND_TOKEN   a bearer token, when neurond runs with --token-file
#
# call METHOD PATH [JSON]          print the request, run it, print the answer, keep it in $ANSWER
# call_file METHOD PATH FILE TYPE  the same with the body read from FILE (e.g. text/csv)
# num NAME                         a number field of $ANSWER ("loss", "accuracy", "id", ...)
# list NAME                        a flat number array field of $ANSWER, without brackets
#
# Any HTTP status >= 400, or a request that cannot be made, stops the script with exit 1 and
# the answer on stderr.

NEUROND_URL=${NEUROND_URL:-http://127.0.0.1:8080}
URL=${NEUROND_URL%/}
CURL_AUTH=()
AUTH_SHOWN=
if [ -n "${NEUROND_TOKEN:-}" ]; then
    CURL_AUTH=(-H "Authorization: Bearer $NEUROND_TOKEN")
    AUTH_SHOWN=" -H \"Authorization: Bearer \$NEUROND_TOKEN\""   # never print the token itself
fi
EXAMPLE=$(basename "$0")
ANSWER=

# _finish METHOD PATH OUT: split curl's output into $ANSWER and the status; fail on >= 400.
_finish() {
    local status=${3##*$'\n'}
    ANSWER=${3%$'\n'*}
    printf '%s\n' "$ANSWER"
    if [ "$status" -ge 400 ]; then
        printf '%s: %s %s answered HTTP %s: %s\n' "$EXAMPLE" "$1" "$2" "$status" "$ANSWER" >&2
        exit 1
    fi
}

# _shown_method METHOD DEFAULT: " -X METHOD" unless curl would use METHOD anyway.
_shown_method() {
    if [ "$1" != "$2" ]; then printf ' -X %s' "$1"; fi
}

call() {
    local method=$1 path=$2 body=${3:-} out
    if [ -n "$body" ]; then
        printf '\n$ curl -s%s %s%s%s -H '\''Content-Type: application/json'\'' -d '\''%s'\''\n' \
            "$(_shown_method "$method" POST)" "$URL" "$path" "$AUTH_SHOWN" "$body"
        out=$(curl -sS -w '\n%{http_code}' -X "$method" "$URL$path" "${CURL_AUTH[@]}" \
            -H 'Content-Type: application/json' -d "$body") ||
            { echo "$EXAMPLE: cannot reach $URL" >&2; exit 1; }
    else
        printf '\n$ curl -s%s %s%s%s\n' "$(_shown_method "$method" GET)" "$URL" "$path" "$AUTH_SHOWN"
        out=$(curl -sS -w '\n%{http_code}' -X "$method" "$URL$path" "${CURL_AUTH[@]}") ||
            { echo "$EXAMPLE: cannot reach $URL" >&2; exit 1; }
    fi
    _finish "$method" "$path" "$out"
}

call_file() {
    local method=$1 path=$2 file=$3 type=$4 out
    printf '\n$ curl -s%s '\''%s%s'\''%s -H '\''Content-Type: %s'\'' --data-binary @%s\n' \
        "$(_shown_method "$method" POST)" "$URL" "$path" "$AUTH_SHOWN" "$type" "$file"
    out=$(curl -sS -w '\n%{http_code}' -X "$method" "$URL$path" "${CURL_AUTH[@]}" \
        -H "Content-Type: $type" --data-binary "@$file") ||
        { echo "$EXAMPLE: cannot reach $URL" >&2; exit 1; }
    _finish "$method" "$path" "$out"
}

num() {
    printf '%s' "$ANSWER" | sed -n "s/.*[{,]\"$1\":\([-0-9.eE+]*\).*/\1/p"
}

list() {
    printf '%s' "$ANSWER" | sed -n "s/.*[{,]\"$1\":\[\([-0-9.eE+,]*\)\].*/\1/p"
}

# fail MESSAGE: the example did not get the result it expects.
fail() {
    printf '%s: %s\n' "$EXAMPLE" "$1" >&2
    exit 1
}
