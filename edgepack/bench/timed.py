"""Timing a generate(prompt, n) on cold prompts: a warm-up on the first prompt, then one
repetition on each of the others (edgepack.bench.child's variants all time through here)."""

from __future__ import annotations

import time

WARMUP_TOKENS = 8


def timed_runs(generate, spec: dict) -> dict:
    """Warm-up on prompts[0], then repetition i on prompts[i] of
    generate(prompt, n) -> (first_token_s, decode_tokens_per_s, tokens, prompt_tokens_processed)."""
    prompts = spec["prompts"]
    if len(prompts) != spec["repetitions"] + 1:
        raise ValueError(f"{len(prompts)} prompts for 1 warm-up + {spec['repetitions']} runs")
    start = time.perf_counter()
    generate(prompts[0], min(WARMUP_TOKENS, spec["tokens"]))
    warmup_s = time.perf_counter() - start
    first, decode, processed, tokens = [], [], [], []
    for prompt in prompts[1:]:
        first_s, tps, tokens, fed = generate(prompt, spec["tokens"])
        if len(tokens) != spec["tokens"]:
            raise RuntimeError(f"generated {len(tokens)} tokens, asked for {spec['tokens']}")
        first.append(first_s * 1000)
        decode.append(tps)
        processed.append(fed)
    return {
        "warmup_s": warmup_s,
        "first_token_ms": first,
        "decode_tokens_per_s": decode,
        "prompt_tokens_processed": processed,
        "tokens": tokens,  # the last repetition's: the same prompt in every variant
    }


def torch_threads(spec: dict) -> int:
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    return torch.get_num_threads()


def hf_generate(model, spec: dict):
    """A generate(prompt, n) over a transformers-style model, timed by a streamer: generate()
    hands the streamer the prompt first, then every new token as soon as it is chosen. Each call
    starts without a cache (generate() makes a new one), so a prompt is processed whole."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self):
            self.times = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    def generate(prompt: list[int], n: int):
        ids = torch.tensor([prompt], dtype=torch.long)
        clock = Clock()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                num_beams=1,
                streamer=clock,
                pad_token_id=spec.get("pad_token_id"),
            )
        tokens = out[0, ids.shape[1] :].tolist()
        times = clock.times[1:]  # [0] is the prompt, handed over before any compute
        first = times[0] - start
        decode = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        return first, decode, tokens, None

    return generate
