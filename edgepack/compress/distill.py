"""Knowledge distillation of a smaller student (`edgepack distill`).

Student: the teacher with a subset of its decoder layers kept, plus its embeddings, final norm
and head: the even spread (always the first and the last layer) or the layers of highest block
influence, whichever measures closer to the teacher before training (edgepack.compress.depth); or a
model given with --student (a width-pruned one healing: `edgepack prune`). Dropping half the
layers of a trained model breaks it (the default model's 15-layer student starts at perplexity
~1e6), but every weight it keeps is already trained, so it recovers in a few hundred steps.

Loss, per token: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy of the
next token, where X_T is the softmax of logits / T. Multiplying by T^2 keeps the soft term's
gradients on the scale of the hard one whatever T is (Hinton et al., 2015).

Defaults, and why:
- temperature 2, alpha 0.5, lr 3e-4 (AdamW, linear decay after a 5 % warm-up): with them a
  15-of-30-layer student of the default model went from perplexity 1.2e6 to 29.8 (teacher 25.0)
  in 300 steps on a GPU (FACTS.md, "Distillation of the default model"). The reference write-up
  used T=3 with 0.7/0.3; on this project's CPU setting (40 steps of 4 x 256 tokens of the
  built-in text, one run each) T=2 / 0.5 did better on both judges: KL to the teacher 2.11 vs
  2.20 and top-1 agreement 26.0 % vs 24.2 % on eval.txt, KL 4.08 vs 4.38 on WikiText-2. A short
  run gains most from the hard labels pulling a broken student back to plausible text.
- 200 steps of 4 x 256 tokens, half of the layers (--layers/--ratio): a student far better than
  its layer-dropped start, in about 15 minutes on a 2-core CPU (3.6 s a step) and about a minute
  on one GPU. More text and more steps help until the held-out KL stops falling.
- the held-out part of the training text is evaluated every --save-steps (default 1/8 of the
  steps) and the checkpoint with the lowest KL to the teacher is the one written: with little
  text the student overfits (training cross-entropy keeps falling while held-out figures rise).

The student is judged on text of another domain than its training text: at the end, teacher,
undistilled student and distilled student are measured on the evaluation text (built-in
edgepack/data/eval.txt, which shares no topic or passage with train.txt), with the chunks and
scoring of the build's quality gate: perplexity, KL divergence to the teacher, top-1 agreement.

Training is the Hugging Face Trainer (a subclass whose compute_loss runs the frozen teacher), so
the same command runs on a CPU and on several GPUs under `accelerate launch -m edgepack distill
...` (bf16 or fp16 autocast on CUDA; the held-out evaluation then runs on every process alike).
Checkpoints go to OUT/checkpoints (the latest and the best, ~1 GB each for the default model's
15-layer student, kept so that `--resume` can continue: step count, optimizer, scheduler and RNG
state are restored). `--resume` with a larger --steps extends a finished run; the linear decay is
then recomputed for the new total, but the first resumed step still uses the learning rate the
old schedule ended on (Trainer restores it with the optimizer).
OUT is a normal Hugging Face model directory plus distill_report.json, which records the teacher.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

from ..cache import write_atomic
from ..errors import EdgepackError, ModelError, UnsupportedModelError
from ..liblog import secondary_process, terminal
from .depth import (  # noqa: F401 (select_layers, resolve_layers: the distill API)
    CHECKPOINTS,
    DEFAULT_RATIO,
    resolve_layers,
    run_layers,
    select_layers,
)
from .distill_data import GENERATED_FILE, add_generated, check_files, generate_text, load_text
from .distill_train import check_student, compare, load_student, make_student, train
from .student_report import (  # noqa: F401 (the student's report, read by build and the CLI)
    REPORT_FILE,
    command_line,
    pruned_from,
    read_report,
    report_text,
    student_layers_from,
    teacher_of,
)

SCHEMA_VERSION = 1
DEFAULT_STEPS = 200
DEFAULT_SEQ_LEN = 256
DEFAULT_BATCH = 4
DEFAULT_TEMPERATURE = 2.0
DEFAULT_ALPHA = 0.5
DEFAULT_LR = 3e-4
HELD_OUT_EVAL_TOKENS = 2048  # per evaluation during training: enough to rank checkpoints
_NOT_COPIED = re.compile(
    r"^(config\.json|.*\.(safetensors|bin|pt|pth|gguf|ckpt|h5|msgpack)|"
    r".*\.index\.json|distill_report\.json|generated\.txt|\..*)$"
)


def teacher_layers(teacher_dir: Path) -> int:
    """Number of decoder layers of the teacher, from its config.json."""
    try:
        config = json.loads((Path(teacher_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot read {teacher_dir}/config.json ({exc}); --teacher must be a Hugging Face "
            "model directory"
        ) from None
    config = config.get("text_config", config)
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(config.get(key), int):
            return config[key]
    raise UnsupportedModelError(f"{teacher_dir}/config.json does not say how many layers it has")


def distill(
    teacher_dir: Path,
    out: Path,
    layers: int | None = None,
    *,
    ratio: float | None = None,
    data: list[Path] | tuple = (),
    steps: int = DEFAULT_STEPS,
    seq_len: int = DEFAULT_SEQ_LEN,
    batch: int = DEFAULT_BATCH,
    temperature: float = DEFAULT_TEMPERATURE,
    alpha: float = DEFAULT_ALPHA,
    lr: float = DEFAULT_LR,
    save_steps: int | None = None,
    generate: int = 0,
    resume: bool = False,
    eval_data: Path | None = None,
    student: Path | None = None,
    progress=True,
) -> dict:
    """Distil a student of `layers` layers from teacher_dir into out; returns the report.

    student: a model directory to train instead of a layer subset of the teacher (a pruned
    model healing: `edgepack prune`), with the teacher's vocabulary.

    progress: True for a bar on stderr, False for silence, or a callable given short notes.
    """
    from ..measure.quality import eval_text

    teacher_dir, out, data = Path(teacher_dir), Path(out), [Path(p) for p in data]
    if student is not None and (layers is not None or ratio is not None):
        raise EdgepackError("give --student or --layers/--ratio, not both")
    n_teacher = teacher_layers(teacher_dir)
    _check_numbers(steps, seq_len, batch, temperature, alpha, lr, save_steps, generate)
    check_files(data)
    eval_name, eval_body = eval_text(eval_data, builtin="project")
    latest, saved = latest_checkpoint(out), {}
    if resume:
        if latest is None:
            raise EdgepackError(
                f"--resume: there is no checkpoint in {out / CHECKPOINTS}; run without --resume "
                "to start a new distillation"
            )
        done = json.loads((latest / "trainer_state.json").read_text())["global_step"]
        if done >= steps:
            raise EdgepackError(
                f"--resume: {latest.name} is at step {done} already; pass --steps above {done} "
                "to train further"
            )
        saved = json.loads((latest / "config.json").read_text())
        if layers is None and ratio is None:
            layers = saved.get("num_hidden_layers")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EdgepackError(
            f"--out {out} is not empty; pass --resume to continue the distillation there, or "
            "choose a new --out directory"
        )
    if student is not None:
        layers = check_student(Path(student), teacher_dir)
    else:
        layers = resolve_layers(n_teacher, layers, ratio)
    if resume and saved.get("num_hidden_layers") != layers:
        raise EdgepackError(
            f"--resume: the checkpoint in {out} has {saved.get('num_hidden_layers')} layers, not "
            f"{layers}; resume with --layers {saved.get('num_hidden_layers')} or start anew"
        )
    created = None if out.exists() else out  # the outermost directory this run creates
    while created is not None and not created.parent.exists():
        created = created.parent
    out.mkdir(parents=True, exist_ok=True)
    options = dict(steps=steps, seq_len=seq_len, batch=batch, temperature=temperature)
    options |= dict(alpha=alpha, lr=lr, save_steps=save_steps or max(1, round(steps / 8)))
    try:
        return _run(
            teacher_dir,
            out,
            layers,
            n_teacher,
            data,
            options,
            generate,
            latest if resume else None,
            (eval_name, eval_body),
            progress,
            Path(student) if student is not None else None,
        )
    except BaseException:
        if latest_checkpoint(out) is None:  # nothing worth keeping: leave no half-written OUT
            if created is None:  # it existed, empty
                for item in out.iterdir():
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
            else:
                shutil.rmtree(created, ignore_errors=True)
        raise


def _check_numbers(steps, seq_len, batch, temperature, alpha, lr, save_steps, generate):
    for name, value, ok, want in (
        ("--steps", steps, steps >= 1, "at least 1"),
        ("--seq-len", seq_len, seq_len >= 8, "at least 8"),
        ("--batch", batch, batch >= 1, "at least 1"),
        ("--temperature", temperature, temperature > 0, "above 0 (1 = the plain softmax)"),
        ("--alpha", alpha, 0 <= alpha <= 1, "between 0 (only cross-entropy) and 1 (only KL)"),
        ("--lr", lr, 0 < lr < 1, "between 0 and 1, e.g. 3e-4"),
        ("--save-steps", save_steps, save_steps is None or save_steps >= 1, "at least 1"),
        ("--generate", generate, generate >= 0, "0 or more tokens"),
    ):
        if not ok:
            raise EdgepackError(f"{name} {value} is out of range: give {want}")


def latest_checkpoint(out: Path) -> Path | None:
    """The checkpoint with the highest step in out/checkpoints that has its trainer state."""
    found = [
        (int(p.name.rsplit("-", 1)[1]), p)
        for p in Path(out, CHECKPOINTS).glob("checkpoint-*")
        if p.name.rsplit("-", 1)[1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(found)[1] if found else None


def _run(
    teacher_dir, out, layers, n_teacher, data, o, generate, checkpoint, evaluation, progress, given
):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..measure.estimators import chunks, scored
    from ..measure.quality import MAX_EVAL_TOKENS

    started = time.monotonic()
    transformers.logging.set_verbosity_error()
    if progress is True and secondary_process():
        progress = False
    if progress is True:
        note = lambda message: print(f"distill: {message}", file=terminal())  # noqa: E731
    else:
        note = progress or (lambda message: None)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    note(f"tokenizing {len(data)} training text file(s)" if data else "tokenizing train.txt")
    text = load_text(tokenizer, data, o["seq_len"])
    note(f"loading the teacher {teacher_dir}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    teacher = teacher.to(device).eval().requires_grad_(False)
    if generate:
        path = out / GENERATED_FILE
        if not path.is_file():
            note(f"sampling {generate} tokens of training text from the teacher")
            path.write_text(generate_text(teacher, tokenizer, generate), encoding="utf-8")
        text = add_generated(text, tokenizer, path.read_text(encoding="utf-8"))
    picked = text.held_out[
        :: max(1, math.ceil(len(text.held_out) * o["seq_len"] / HELD_OUT_EVAL_TOKENS))
    ]
    held = [(w, slice(0, len(w) - 1)) for w in picked]
    keep, layer_choice = run_layers(teacher, n_teacher, layers, held, out, given, checkpoint, note)

    def fresh_student():  # the student before training: given, or the teacher's layer subset
        return load_student(given, device) if given else make_student(teacher, keep)

    resumed = (
        json.loads((checkpoint / "trainer_state.json").read_text())["global_step"]
        if checkpoint
        else 0
    )
    trainer = train(
        teacher,
        fresh_student(),
        text,
        held,
        out / CHECKPOINTS,
        o,
        checkpoint,
        progress,
    )
    if not trainer.is_world_process_zero():
        return {}
    student = trainer.model
    note("measuring teacher, undistilled and distilled student")
    ids = tokenizer(evaluation[1], add_special_tokens=False, verbose=False)["input_ids"][
        :MAX_EVAL_TOKENS
    ]
    undistilled = fresh_student()
    models = {"undistilled": undistilled, "distilled": student}
    on_eval = compare(teacher, models, [(ids[a:b], scored(a, b)) for a, b in chunks(len(ids))])
    on_held = compare(teacher, models, held)
    _save(student, teacher_dir, out)
    state = trainer.state
    report = {
        "schema_version": SCHEMA_VERSION,
        "teacher": {
            "path": str(teacher_dir.resolve()),
            "num_layers": n_teacher,
            "weights_sha256": _weights_digest(teacher_dir),
        },
        "student": {
            "num_layers": layers,
            "kept_layers": keep,
            "layer_choice": layer_choice,
            "given": str(given.resolve()) if given else None,
            "pruned": pruned_from(given) if given else None,
            "num_parameters": sum(p.numel() for p in student.parameters()),
        },
        "data": {
            "files": text.files,
            "generated_tokens": text.generated_tokens,
            "seq_len": o["seq_len"],
            "train_windows": len(text.train),
            "held_out_windows": len(text.held_out),
        },
        "training": {
            **{k: o[k] for k in ("steps", "batch", "temperature", "alpha", "lr", "save_steps")},
            "global_step": state.global_step,
            "resumed_from_step": resumed,
            "tokens_trained": state.global_step
            * o["batch"]
            * o["seq_len"]
            * trainer.args.world_size,
            "best_checkpoint": state.best_model_checkpoint,
            "best_held_out_kl": state.best_metric,
            "device": device,
            "processes": trainer.args.world_size,
            "precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32",
        },
        "loss_curve": [
            {k: e[k] for k in ("step", "loss", "kl", "ce", "learning_rate") if k in e}
            for e in state.log_history
            if "loss" in e
        ],
        "held_out_curve": [
            {"step": e["step"], "kl": e["eval_kl"], "top1": e["eval_top1"]}
            for e in state.log_history
            if "eval_kl" in e
        ],
        "held_out": on_held,
        "evaluation": {"text": evaluation[0], **on_eval},
        "wall_s": round(time.monotonic() - started, 1),
        "command": command_line(teacher_dir, layers, out, given),
    }
    write_atomic(out / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    return report


def _save(student, teacher_dir: Path, out: Path) -> None:
    """The student as a Hugging Face directory: weights, config, the teacher's tokenizer files."""
    tmp = out / ".saving"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for item in teacher_dir.iterdir():
        if item.is_file() and not _NOT_COPIED.match(item.name):
            shutil.copy2(item, tmp / item.name)
    student.save_pretrained(tmp, safe_serialization=True)
    umask = os.umask(0)
    os.umask(umask)
    (out / REPORT_FILE).unlink(missing_ok=True)
    for item in tmp.iterdir():
        item.chmod(0o666 & ~umask)  # safetensors writes 0600
        item.replace(out / item.name)
    tmp.rmdir()


def _weights_digest(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        file_digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(1 << 22):
                file_digest.update(block)
        digest.update(f"{path.name}:{file_digest.hexdigest()}\n".encode())
    return digest.hexdigest()
