"""Which of the teacher's layers a depth student keeps.

Two choices are measured against each other: the even spread (always the first and the last
layer, the rest evenly spaced) and the layers of highest block influence (ShortGPT: 1 - the
mean cosine between the hidden state a layer reads and the one it writes, on the held-out
training text; a layer that barely turns its input matters least). The undistilled student
closer to the teacher (KL divergence on the same held-out text) is the one trained, and the
distillation report records both.
"""

from __future__ import annotations

import json

import numpy as np

from ..cache import write_atomic
from ..errors import EdgepackError

DEFAULT_RATIO = 0.5
CHECKPOINTS = "checkpoints"
LAYERS_FILE = "layers.json"  # in CHECKPOINTS: the layers a run chose, for --resume


def resolve_layers(n_teacher: int, layers: int | None = None, ratio: float | None = None) -> int:
    """The student's layer count from --layers or --ratio (default: half the teacher's)."""
    if layers is not None and ratio is not None:
        raise EdgepackError("give --layers or --ratio, not both")
    if ratio is not None:
        if not 0 < ratio < 1:
            raise EdgepackError(f"--ratio {ratio:g} must be between 0 and 1, e.g. 0.5 for half")
        layers = min(n_teacher - 1, max(1, round(n_teacher * ratio)))
    elif layers is None:
        layers = max(1, round(n_teacher * DEFAULT_RATIO))
    if not 1 <= layers < n_teacher:
        raise EdgepackError(
            f"--layers {layers}: a student needs at least 1 and fewer than the teacher's "
            f"{n_teacher} layers; choose one of 1..{n_teacher - 1}"
        )
    return layers


def select_layers(n_teacher: int, n_student: int) -> list[int]:
    """Evenly spread teacher layers for the student, always the first and the last."""
    if n_student == 1:
        return [0]
    step = (n_teacher - 1) / (n_student - 1)  # >= 1, so the picks are distinct
    return [int(i * step + 0.5) for i in range(n_student)]


def block_influence(teacher, sequences) -> np.ndarray:
    """Each layer's block influence (ShortGPT): 1 - the mean cosine between the hidden state
    it reads and the one it writes, over every position of the sequences. A layer that barely
    turns its input matters least. (The last layer's output is read after the final norm,
    as transformers returns it; the last layer is kept whatever it scores.)"""
    import torch

    device = next(teacher.parameters()).device
    sums, count = None, 0
    with torch.inference_mode():
        for ids, _ in sequences:
            x = torch.as_tensor([list(ids)], dtype=torch.long, device=device)
            states = teacher(x, output_hidden_states=True).hidden_states
            cos = [
                torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).sum()
                for a, b in zip(states[:-1], states[1:], strict=True)
            ]
            row = np.array([float(c) for c in cos])
            sums = row if sums is None else sums + row
            count += x.shape[1]
    return 1.0 - sums / count


def layers_by_influence(influence: np.ndarray, n_student: int) -> list[int]:
    """The n_student layers of highest block influence, in order; the last layer always."""
    last = len(influence) - 1
    ranked = [i for i in np.argsort(-influence, kind="stable") if i != last]
    return sorted([int(i) for i in ranked[: n_student - 1]] + [last])


def choose_layers(teacher, spread: list[int], sequences) -> tuple[list[int], dict]:
    """The student's layers: the even spread, or the layers of highest block influence, which
    ever undistilled student is closer to the teacher (KL) on the held-out sequences."""
    from .distill_train import compare, make_student

    influence = block_influence(teacher, sequences)
    by_influence = layers_by_influence(influence, len(spread))
    options = {"spread": spread, "influence": by_influence}
    if by_influence == spread:  # one student to measure
        figures = compare(teacher, {"spread": make_student(teacher, spread)}, sequences)
        figures["influence"] = figures["spread"]
    else:
        students = {name: make_student(teacher, keep) for name, keep in options.items()}
        figures = compare(teacher, students, sequences)
    chosen = min(options, key=lambda name: figures[name]["kl"])
    record = {
        name: {"layers": keep, "undistilled_kl": round(figures[name]["kl"], 5)}
        for name, keep in options.items()
    }
    return options[chosen], {
        "chosen": chosen,
        **record,
        "block_influence": influence.round(5).tolist(),
    }


def run_layers(teacher, n_teacher, layers, held, out, given, checkpoint, note):
    """(the teacher's layers the student keeps, how they were chosen): measured at the start
    (the even spread or the layers of highest block influence, whichever undistilled student
    is closer to the teacher on the held-out text), the same on --resume; none for a given
    student (--student)."""
    if given is not None:
        return None, None
    path = out / CHECKPOINTS / LAYERS_FILE
    if checkpoint is not None and path.is_file():
        chosen = json.loads(path.read_text())
        return chosen["layers"], chosen["choice"]
    note("choosing the student's layers: block influence against the even spread")
    keep, choice = choose_layers(teacher, select_layers(n_teacher, layers), held)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"layers": keep, "choice": choice}))
    return keep, choice
