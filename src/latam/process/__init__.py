"""The processes latam runs: the API (``api``), the worker (``worker``) and ``serve``,
which supervises worker processes beside the API (``supervisor``); ``canary`` builds the
synthetic canary's HTTP client. ``lifecycle`` holds what they share: signals, the parent
watch and the metrics set-up across processes."""
