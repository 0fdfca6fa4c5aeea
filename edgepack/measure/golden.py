"""The build's golden outputs: greedy answers to a few chat prompts, with each step's top-2
margin, which the device's check reproduces teacher-forced (devicekit.golden_check)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..bundle.kit import devicekit
from ..errors import ModelError, ValidationError
from ..model.facts import ModelFacts

GOLDEN_PROMPTS = (
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three colours.",
)
GOLDEN_TOKENS = 32


def chat_prompt(model_dir: Path, question: str) -> str:
    """The question in the model's own chat template, or as plain text when it has none."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if not getattr(tok, "chat_template", None):
        return question
    messages = [{"role": "user", "content": question}]
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def check_chat_template(model_dir: Path) -> None:
    """A chat template is input: rendered once in transformers' sandbox (jinja2's
    ImmutableSandboxedEnvironment) before any work, so that a template the sandbox refuses or
    that fails to render stops the build in one line naming its file. Only a template that
    rendered cleanly reaches the exports (the GGUF's tokenizer.chat_template among them)."""
    try:
        chat_prompt(model_dir, GOLDEN_PROMPTS[0])
    except Exception as exc:  # noqa: BLE001 - whatever the template raises is the input's
        where = next(
            (model_dir / n for n in ("chat_template.jinja", "chat_template.json")
             if (model_dir / n).is_file()),
            model_dir / "tokenizer_config.json",
        )  # fmt: skip
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise ModelError(
            f"the chat template in {where} does not render in transformers' sandbox ({reason}); "
            "fix or remove it: the build renders it for the golden prompts and the device's "
            "chat runtime would render it again"
        ) from None


def golden_outputs(runner, model_dir: Path, facts: ModelFacts) -> list[dict]:
    """Greedy outputs of the golden prompts, with each step's top-2 margin from the logits of
    the prompt + golden tokens read at once (what the device's teacher-forced check reads)."""
    if facts.kind == "encoder":
        return [
            {"name": s, "prompt": s, "embedding": runner.embed([s])[0].round(6).tolist()}
            for s in GOLDEN_PROMPTS
        ]
    kit = devicekit()
    golden = []
    for question in GOLDEN_PROMPTS:
        prompt = chat_prompt(model_dir, question)
        ids = runner.tokenize(prompt)
        tokens = runner.generate(ids, GOLDEN_TOKENS, stop_at_eos=True).tokens
        logits = runner.logits(ids + tokens)
        entry = {
            "name": question,
            "prompt": prompt,
            "prompt_ids": ids,
            "tokens": tokens,
            "margins": kit.golden_margins(logits, len(ids), tokens),
            "text": runner.detokenize(tokens),
        }
        verdict = kit.golden_check(logits, entry)
        failed = verdict["failed_steps"]
        if failed and max(f["behind"] for f in failed) <= PATH_DISAGREEMENT:
            # generate's path (openvino-genai's paged attention, its own kernels) and the
            # teacher-forced logits differ by a fraction of a logit at a close step: the golden
            # output follows the logits, which is what the device's check reads
            entry = _golden_from_logits(kit, runner, entry, failed[0]["step"])
            entry["generate_differs_at_step"] = failed[0]["step"]
            verdict = kit.golden_check(runner.logits(ids + entry["tokens"]), entry)
        if not verdict["pass"]:  # generate and logits disagree where the model was sure
            raise ValidationError(
                f"{runner.runtime}'s generate and logits disagree on the golden prompt "
                f"{question!r} at clear steps {verdict['failed_steps']}: the export is suspect"
            )
        golden.append(entry)
    return golden


# how far behind the teacher-forced logits' top token generate's choice may be before the
# export is suspect: two execution paths of one runtime differ by tenths of a logit on 4-bit
# weights (openvino int4: 0.50); a wrong or perturbed model moves logits by whole units
PATH_DISAGREEMENT = 1.0


def _golden_from_logits(kit, runner, entry: dict, step: int) -> dict:
    """The golden tokens up to `step`, then continued greedily from the teacher-forced
    logits (one forward pass a token)."""
    ids, tokens = entry["prompt_ids"], list(entry["tokens"][:step])
    eos = set(getattr(runner, "eos", None) or getattr(runner, "_eos", None) or ())
    while len(tokens) < GOLDEN_TOKENS:
        token = int(np.argmax(runner.logits(ids + tokens)[-1]))
        tokens.append(token)
        if token in eos:
            break
    logits = runner.logits(ids + tokens)
    return entry | {
        "tokens": tokens,
        "margins": kit.golden_margins(logits, len(ids), tokens),
        "text": runner.detokenize(tokens),
    }
