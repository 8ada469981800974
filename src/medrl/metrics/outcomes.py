"""How a judge call can end: the names the OpenAI backend counts (per prompt in `stats()`, per HTTP attempt in
`medrl_judge_requests_total`). Kept here once so the backend and the metric's label set cannot drift apart."""

# ok (parsed), unparsable (answered, but not Yes/No or 1..10), garbage (a 200 that is not an OpenAI reply), timeout,
# http_error (429/5xx after retries), connection_error, rejected (other 4xx), guided_rejected (a 400/422 naming
# the guided-choice field: that attempt only, the prompt is asked again at once without guidance), breaker_open
# (never sent: the breaker was open), internal_error (a fault of ours, logged by type).
OUTCOMES = (
    "ok",
    "unparsable",
    "garbage",
    "timeout",
    "http_error",
    "connection_error",
    "rejected",
    "guided_rejected",
    "breaker_open",
    "internal_error",
)
