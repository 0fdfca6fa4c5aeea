"""Benchmark rounds pooled into p50s, and the paired ratios by round (no backend)."""

import pytest

from edgepack.bench import rounds as b


def test_rounds_merge_into_p50s_over_every_round_and_ratios_by_round():
    raw = [
        {
            "decode_tokens_per_s": [50, 52, 54],
            "first_token_ms": [500, 510, 520],
            "prompt_tokens_processed": [128] * 3,
            "tokens": [1, 2],
            "peak_rss_bytes": 200,
        },
        {
            "decode_tokens_per_s": [40, 41, 42],
            "first_token_ms": [600, 610, 620],
            "prompt_tokens_processed": [128] * 3,
            "tokens": [1, 2],
            "peak_rss_bytes": 210,
        },
    ]
    merged = b.merge_rounds(raw)
    assert merged["decode_tokens_per_s"] == [50, 52, 54, 40, 41, 42] and merged["rounds"] == 2
    assert merged["by_round"]["decode_tokens_per_s"] == [52, 41]
    assert merged["peak_rss_bytes"] == 210 and len(merged["prompt_tokens_processed"]) == 6
    checks = [
        {"decode_tokens_per_s_p50": 55.0, "first_token_ms_p50": 480.0, "peak_rss_bytes": 230},
        {"decode_tokens_per_s_p50": 43.0, "first_token_ms_p50": 590.0, "peak_rss_bytes": 231},
    ]
    check = b.merge_rounds(checks)
    assert check["by_round"]["decode_tokens_per_s"] == [55.0, 43.0]
    assert check["decode_tokens_per_s_p50"] == b.p50([55.0, 43.0])
    speed = b.speed(dict(merged), None)
    base = {"decode_tokens_per_s_p50": 10.0, "first_token_ms_p50": 1000.0, "peak_rss_bytes": 1}
    entry = {
        "variants": {"baseline": base, "raw": speed, "runner": speed, "check": check},
        "quality": {"perplexity": 2.0, "reference_perplexity": 2.0},
        "size": {"source_bytes": 2, "model_bytes": 1},
    }
    r = b.ratios(entry)
    # a host that slowed down in round 2 slowed both: the paired ratios stay near 1
    assert r["check_vs_raw_decode_by_round"] == pytest.approx([55 / 52, 43 / 41])
    assert r["runner_vs_raw_decode_by_round"] == [1.0, 1.0]
