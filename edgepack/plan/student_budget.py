"""Students' quality priors for a declared training budget, from published distillation results.

Pure: no I/O, no backend imports. edgepack's own prior (edgepack.plan.students) describes its
CPU heal: 40 steps on 40,960 tokens of built-in text. A user who will distil with far more text,
on GPUs, declares the budget (`edgepack plan --distill-tokens N --distill-gpu`); the prior of a
student then comes from the published pruning-and-distillation results below whose budget the
declaration reaches. Each is a loss (1 / retention - 1) at the share of the teacher's block
parameters the student kept, brought to the default model's size by the size rule the CPU
priors use (edgepack.plan.students.SIZE_EXPONENT), so that one curve serves every teacher: at
half the blocks, DistilGPT2's perplexity loss and Llama-3.1-Minitron-4B-Depth's accuracy loss
land within 4 % of each other there. Between budgets, the loss falls linearly in log(tokens)
from the CPU heal's to the published one's.

Most of the published figures are retention of benchmark accuracy, which forgives more than
perplexity (a chance floor, saturated tasks); DistilGPT2's is perplexity. They are priors until
the build measures the student it gets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CPU_HEAL_TOKENS = 40_960  # edgepack distill's default heal (edgepack.plan.students.MEASURED)
CPU_TOKENS_LIMIT = 100_000_000  # more than this is declared as GPU training (--distill-gpu)
REFERENCE_PARAMETERS = 134_515_008  # the default model, as edgepack.plan.students measures
SIZE_EXPONENT = 0.25


@dataclass(frozen=True)
class Training:
    """How the user will train the student: tokens of distillation text, on GPUs or not."""

    tokens: int | None = None
    gpu: bool = False

    @property
    def beyond_heal(self) -> bool:
        return bool(self.tokens) and self.tokens > CPU_HEAL_TOKENS

    def describe(self) -> str:
        where = "on GPUs" if self.gpu else "on the CPU"
        return f"{self.tokens:,} tokens of distillation {where}"


@dataclass(frozen=True)
class Published:
    name: str
    teacher_parameters: float
    share: float  # of the teacher's transformer-block parameters the student kept
    tokens: float  # of pruning and distillation (or continued pre-training)
    retention: float
    measured: str
    source: str

    @property
    def loss(self) -> float:
        """The loss at the default model's size (the module docstring)."""
        size = (self.teacher_parameters / REFERENCE_PARAMETERS) ** SIZE_EXPONENT
        return (1 / self.retention - 1) * size


PUBLISHED = (
    Published(
        "Sheared-LLaMA-1.3B, pruned from Llama-2-7B", 6.74e9, 0.188, 50.4e9, 0.789,
        "average of 11 downstream tasks 51.0 against Llama-2-7B's 64.6 (0.4B tokens of "
        "pruning, 50B of continued pre-training)",
        "Xia et al. 2023, Sheared LLaMA, arXiv:2310.06694; princeton-nlp/Sheared-LLaMA-1.3B",
    ),
    Published(
        "Sheared-LLaMA-2.7B, pruned from Llama-2-7B", 6.74e9, 0.392, 50.4e9, 0.878,
        "average of 11 downstream tasks 56.7 against 64.6",
        "Xia et al. 2023, arXiv:2310.06694; princeton-nlp/Sheared-LLaMA-2.7B",
    ),
    Published(
        "DistilGPT2, 6 of GPT-2's 12 layers", 124e6, 0.5, 9e9, 0.773,
        "WikiText-103 perplexity 21.1 against GPT-2's 16.3 (both fine-tuned on its train split); "
        "trained on OpenWebTextCorpus, about 9B GPT-2 tokens, epochs not stated",
        "distilbert/distilgpt2 model card; Sanh et al. 2019, arXiv:1910.01108",
    ),
    Published(
        "Llama-3.1-Minitron-4B-Depth, 16 of Llama-3.1-8B's 32 layers", 8.03e9, 0.5, 94e9, 0.909,
        "mean of MMLU 58.7/65.3, Winogrande 72.1/77.3, ARC-c 52.6/57.9, HellaSwag 73.2/81.8",
        "Sreenivas et al. 2024, LLM Pruning and Distillation in Practice: The Minitron "
        "Approach, arXiv:2408.11796, Table 1",
    ),
    Published(
        "Llama-3.1-Minitron-4B-Width, Llama-3.1-8B's hidden and MLP pruned", 8.03e9, 0.533,
        94e9, 0.942,
        "mean of MMLU 60.5/65.3, Winogrande 73.5/77.3, ARC-c 55.6/57.9, HellaSwag 76.1/81.8",
        "Sreenivas et al. 2024, arXiv:2408.11796, Table 1",
    ),
)  # fmt: skip
BUDGETS = tuple(sorted({int(p.tokens) for p in PUBLISHED}))


def reached(tokens: int) -> list[Published]:
    """The published results whose budget this many tokens reaches."""
    return [p for p in PUBLISHED if p.tokens <= tokens]


def published_loss(share: float, tokens: int) -> float | None:
    """The loss at the default model's size of a student keeping `share` of the blocks, by
    the published results within `tokens` (the best at each share, linear between shares,
    flat beyond the outermost ones towards more blocks, none below the fewest)."""
    points = sorted((p.share, p.loss) for p in reached(tokens))
    if not points or share < points[0][0] * 0.9:
        return None
    best: dict[float, float] = {}
    for s, loss in points:
        best[s] = min(loss, best.get(s, loss))
    xs = sorted(best)
    if share <= xs[0]:
        return best[xs[0]]
    for x0, x1 in zip(xs, xs[1:], strict=False):
        if share <= x1:
            return best[x0] + (best[x1] - best[x0]) * (share - x0) / (x1 - x0)
    return best[xs[-1]] * (1 - share) / (1 - xs[-1])  # down to no loss with every block


def budget_loss(share: float, heal_loss: float, tokens: int) -> float:
    """The loss at the default model's size with `tokens` of training: the CPU heal's below
    the smallest published budget, falling linearly in log(tokens) to the published curve at
    each budget reached, never above the heal's."""
    below = [b for b in BUDGETS if b <= tokens]
    above = [b for b in BUDGETS if b > tokens]
    at_below = published_loss(share, below[-1]) if below else None
    if at_below is None:
        low_tokens, low_loss = CPU_HEAL_TOKENS, heal_loss
    else:
        low_tokens, low_loss = below[-1], at_below
    if not above or tokens <= low_tokens:
        return min(heal_loss, low_loss)
    high = published_loss(share, above[0])
    if high is None:
        return min(heal_loss, low_loss)
    t = math.log(tokens / low_tokens) / math.log(above[0] / low_tokens)
    return min(heal_loss, low_loss + (high - low_loss) * t)


def sources(tokens: int) -> str:
    """The plan's note: which published results a declared budget draws on."""
    used = reached(tokens)
    if not used:
        return (
            f"no published result within {tokens:,} tokens (the smallest: {BUDGETS[0]:,}): "
            "the prior falls from the CPU heal's towards it in log(tokens)"
        )
    return "; ".join(f"{p.name}: {p.retention:.3f} kept ({p.measured}; {p.source})" for p in used)
