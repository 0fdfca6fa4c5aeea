"""What a deployment costs: dollars per million generated tokens at the predicted decode.

Pure: no I/O, no backend imports. A profile may state an hourly price ([cost]: the offer and
where the price comes from). With one stream, a million tokens take 1e6 / decode seconds of the
machine; served, the streams the runtime sustains at once (each keeping the decode budget, their
KV caches within the memory budget: edgepack.plan.prediction.sustained) share those seconds.
Prices are list prices as the profile states them; a reserved or spot price scales every figure.
"""

from __future__ import annotations

from ..device.profiles import Profile
from .prediction import Prediction

HOURS_PER_MONTH = 730  # 365 x 24 / 12


def per_million(hourly_usd: float, tokens_per_s: float) -> float:
    """Dollars per million generated tokens at this rate."""
    return hourly_usd / (tokens_per_s * 3600) * 1e6


def cost(profile: Profile, p: Prediction) -> dict | None:
    """The candidate's cost per million tokens on the profile's machine, or None where the
    profile states no price or the model generates no tokens."""
    if profile.cost is None or not p.decode_tokens_per_s:
        return None
    price = profile.cost
    served = p.streams_tokens_per_s or p.decode_tokens_per_s
    return {
        "hourly_usd": price.hourly_usd,
        "monthly_usd": round(price.hourly_usd * HOURS_PER_MONTH, 2),
        "instance": price.instance,
        "source": price.source,
        "single_stream_usd_per_million": round(per_million(price.hourly_usd,
                                                           p.decode_tokens_per_s), 4),
        "streams": p.streams,
        "streams_tokens_per_s": round(served, 1),
        "served_usd_per_million": round(per_million(price.hourly_usd, served), 4),
    }  # fmt: skip


def at_decode(c: dict, planned: float | None, device: float | None) -> dict:
    """The plan's cost at another prediction of the same decode (a build's refined one)."""
    if not planned or not device:
        return c
    scale = device / planned
    return c | {
        "single_stream_usd_per_million": round(c["single_stream_usd_per_million"] / scale, 4),
        "served_usd_per_million": round(c["served_usd_per_million"] / scale, 4),
        "streams_tokens_per_s": round(c["streams_tokens_per_s"] * scale, 1),
    }


def cost_text(c: dict) -> str:
    """'$1.23 per million tokens with one stream, $0.05 at 32 streams (...)'."""
    text = f"${c['single_stream_usd_per_million']:,.2f} per million tokens with one stream"
    if c["streams"] > 1:
        text += (
            f", ${c['served_usd_per_million']:,.3f} at {c['streams']} streams "
            f"({c['streams_tokens_per_s']:,.0f} tok/s together, each at the decode budget or "
            "more)"
        )
    return text
