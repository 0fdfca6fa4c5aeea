"""Build rows as report.html reads them (candidates_measured), made from plain figures."""

from types import SimpleNamespace

BUDGET = {
    "memory_gb": 3.0,
    "disk_gb": 8,
    "first_token_ms": 8000,
    "decode_tokens_per_s": 5,
    "min_quality": 0.9,
}


def make_row(fmt, precision, size_mb, retention, *, chosen=False, accepted=True, reasons=(),
             rss_mb=400.0, decode=80.0, first_token=60.0, device=None, interval=None):  # fmt: skip
    row = {
        "format": fmt,
        "precision": precision,
        "bits": 4,
        "student_layers": None,
        "runtime": "llama.cpp",
        "chosen": chosen,
        "fallback_for": None,
        "accepted": accepted,
        "reasons": list(reasons),
        "predicted": {
            "memory_bytes": rss_mb * 1.1e6,
            "disk_bytes": size_mb * 0.98e6,
            "decode_tokens_per_s": decode / 4,
            "first_token_ms": first_token * 5,
            "quality": retention - 0.01,
        },
        "measured": {
            "retention": retention,
            "perplexity": 12.0 / retention,
            "kl_divergence_mean": 0.02,
            "disk_bytes": size_mb * 1e6,
            "peak_rss_bytes": rss_mb * 1e6,
            "decode_tokens_per_s": decode,
            "first_token_ms": first_token,
        },
    }
    if interval is not None:
        row["measured"]["retention_low"] = retention - interval
        row["measured"]["retention_high"] = min(1.0, retention + interval)
    if device is not None:
        row["device_prediction"] = {
            "decode_tokens_per_s": device[0],
            "first_token_ms": device[1],
            "basis": "the fitted model, refined by this host",
        }
        if len(device) > 2:  # the intervals: (low, high) of decode, then of first token
            for key, (low, high) in zip(
                ("decode_tokens_per_s", "first_token_ms"), device[2:], strict=True
            ):
                row["device_prediction"] |= {f"{key}_low": low, f"{key}_high": high}
    return row


def result(target, rows, budget=None):
    extra = {"budget": budget} if budget is not None else {}
    return SimpleNamespace(target=target, candidates_measured=rows, **extra)
