"""The students a plan may propose, and their quality priors, measured on the default model.

Pure: no I/O, no backend imports. Two kinds of student, each healed by distillation from the
model it was cut from:
- depth: a subset of the teacher's layers (`edgepack distill --layers N`);
- width: every layer kept, a share of its MLP channels pruned by activation importance
  (`edgepack prune --ratio R`, then `edgepack distill --student`).

A student's quality prior is its retention (teacher perplexity / student perplexity on
WikiText-2), read from MEASURED at the share of the transformer blocks' parameters it keeps,
for its kind. Between measured shares the loss (1 / retention - 1) is interpolated linearly; a
model of another size scales that loss by SIZE_EXPONENT of the size ratio (small models lose
more, as they do to quantization: the rule llama.cpp's perplexity tables show for bit-widths).
The scaling is a hypothesis until a second model size is measured.
"""

from __future__ import annotations

import dataclasses
import math

from ..model.facts import ModelFacts
from .student_budget import Training, budget_loss

DEPTH_FRACTIONS = (0.75, 0.5, 0.25)  # shares of the teacher's layers a depth student keeps
PRUNE_RATIOS = (0.25, 0.5)  # shares of the MLP channels a width student removes
# model types edgepack prune supports: separate q/k/v/o and gate/up/down projections
PRUNABLE = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text", "gemma2", "gemma")

# Measured on the default model (SmolLM2-135M-Instruct, 134.5M parameters, 30 layers): each
# student made with edgepack's commands, healed for 40 steps of 4 x 256 tokens of the built-in
# training text (40,960 tokens) on a 2-core CPU, exported as GGUF q8_0 (which keeps 0.9998 of
# the default model's own perplexity) and measured by `edgepack build --eval-tokens 2048` on
# WikiText-2 test: retention against the teacher's fp32 perplexity 21.56 (tools/student_priors.py):
#   --ratio 0.25: 114.6M parameters, perplexity 35.27, retention 0.611 (0.549-0.690)
#   --layers 24:  113.3M,            perplexity 47.80, retention 0.451 (0.418-0.488)
#   --ratio 0.5:   94.7M,            perplexity 84.62, retention 0.255 (0.227-0.288)
#   --layers 19:   95.6M,            perplexity 82.94, retention 0.260 (0.233-0.289)
# and half depth from an earlier 40-step CPU run of the 15-layer student (perplexity 339 against
# the teacher's 29.3 on a slice of WikiText-2).
# More steps on the same text do not move them: resumed to 120 steps, the --ratio 0.25 student's
# best held-out checkpoint stayed at step 35, the 24-layer one's at 40 (the built-in text is
# 10,711 tokens; training overfits it after about 4 epochs), so these are also the priors of
# distill's default 200 steps.
# (share of the blocks' parameters kept, retention): width keeps more where little is cut; at
# about 70 % of the parameters the two kinds measured the same.
MEASURED_ON_PARAMETERS = 134_515_008
MEASURED = {
    "depth": ((0.8, 0.451), (0.6333, 0.260), (0.5, 0.086)),
    "width": ((0.8126, 0.611), (0.6251, 0.255)),
}
STUDENT_NOTE = (
    "students' quality priors: retention measured on the default model healed by edgepack "
    "distill on its built-in text (edgepack.students), scaled to this model's size; more "
    "training text (distill --data) may raise them"
)
SIZE_EXPONENT = 0.25  # loss x (measured size / size) ** 0.25: half of the quantization rule's 0.5
NO_BLOCKS_LOSS = 50.0  # a model with no blocks left: an embedding lookup, retention ~0.02


@dataclasses.dataclass(frozen=True)
class Student:
    """One student of a plan: layers kept (depth) or share of MLP channels removed (width)."""

    layers: int | None = None
    pruned_mlp: float | None = None

    @property
    def kind(self) -> str | None:
        if self.layers is not None:
            return "depth"
        return "width" if self.pruned_mlp is not None else None

    @property
    def slug(self) -> str:
        """Its part of a directory name: 15L, or w25 for 25 % of the MLP channels removed."""
        return f"{self.layers}L" if self.layers is not None else f"w{self.pruned_mlp * 100:.0f}"

    def describe(self) -> str:
        if self.layers is not None:
            return f"{self.layers}-layer student"
        return f"student with {self.pruned_mlp:.0%} of its MLP channels pruned"


def student_sizes(num_layers: int) -> list[int | None]:
    """The depth students' layer counts at DEPTH_FRACTIONS (None first: all layers)."""
    sizes: list[int | None] = [None]
    for fraction in DEPTH_FRACTIONS:
        layers = max(1, int(num_layers * fraction + 0.5))
        if layers < num_layers and layers not in sizes:
            sizes.append(layers)
    return sizes


def students(facts: ModelFacts) -> list[Student]:
    """The model itself (Student()), depth students at DEPTH_FRACTIONS of its layers and, for the
    dense decoders edgepack prune handles, width students at PRUNE_RATIOS."""
    if facts.kind != "decoder":
        return [Student()]
    found = [Student(layers) for layers in student_sizes(facts.num_layers)]
    if facts.model_type in PRUNABLE and not facts.num_experts:
        found += [Student(pruned_mlp=ratio) for ratio in PRUNE_RATIOS]
    return found


def kept_channels(intermediate_size: int, ratio: float) -> int:
    """The MLP channels each layer keeps (edgepack prune's rounding)."""
    return max(1, round(intermediate_size * (1 - ratio)))


def pruned_facts(facts: ModelFacts, ratio: float) -> ModelFacts:
    """The facts of facts' model with `ratio` of its MLP channels removed from every layer:
    gate and up lose rows, down loses columns (3 x hidden x channels per layer)."""
    kept = kept_channels(facts.intermediate_size, ratio)
    removed = 3 * facts.hidden_size * (facts.intermediate_size - kept) * facts.num_layers
    share = (facts.num_parameters - removed) / max(facts.num_parameters, 1)
    return dataclasses.replace(
        facts,
        intermediate_size=kept,
        num_parameters=facts.num_parameters - removed,
        layer_parameters=facts.layer_parameters - removed,
        disk_bytes=int(facts.disk_bytes * share),
    )


def block_share(facts: ModelFacts, student: Student) -> float:
    """The share of facts' transformer-block parameters the student keeps."""
    if student.layers is not None:
        return student.layers / facts.num_layers
    if student.pruned_mlp is None:
        return 1.0
    after = pruned_facts(facts, student.pruned_mlp).layer_parameters
    return after / max(facts.layer_parameters, 1)


def student_loss(facts: ModelFacts, student: Student, training: Training | None = None) -> float:
    """The prior relative perplexity increase of the healed student over its teacher; with a
    declared training budget beyond the CPU heal, from published distillation results
    (edgepack.plan.student_budget)."""
    if student.kind is None:
        return 0.0
    share = block_share(facts, student)
    heal = _heal_loss(student, share)
    if training is not None and training.beyond_heal:
        heal = budget_loss(share, heal, training.tokens)
    return heal * size_factor(facts.num_parameters)


def _heal_loss(student: Student, share: float) -> float:
    """The CPU heal's loss at the default model's size (MEASURED), linear between shares."""
    points = [(0.0, NO_BLOCKS_LOSS)]
    points += sorted((s, 1 / r - 1) for s, r in MEASURED[student.kind])
    points.append((1.0, 0.0))
    loss = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if share <= x1:
            loss = y0 + (y1 - y0) * (share - x0) / (x1 - x0)
            break
    return loss


def size_factor(parameters: int) -> float:
    """How much more (above 1) or less a teacher of this size loses than the measured one."""
    return math.pow(MEASURED_ON_PARAMETERS / max(parameters, 1), SIZE_EXPONENT)
