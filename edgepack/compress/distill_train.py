"""The model side of `edgepack distill`: the student, the loss, the comparison with the teacher,
and the training loop (a Hugging Face Trainer with a frozen teacher).

Trainer gives checkpoints with optimizer/scheduler/RNG state (so --resume continues exactly),
best-checkpoint selection (load_best_model_at_end on the held-out KL) and multi-GPU training
under `accelerate launch`. Its own tqdm bar and its stdout printer are replaced by one bar on
stderr showing loss and tokens/s.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import numpy as np

from ..errors import UnsupportedModelError
from ..liblog import terminal

_LAYER_KEY = re.compile(r"^(.*?\.(?:layers|h|blocks)\.)(\d+)(\..+)$")


def make_student(teacher, keep: list[int]):
    """A model of the teacher's class with only the `keep` layers, weights copied."""
    import copy

    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    student = AutoModelForCausalLM.from_config(config)
    rename = {str(old): str(new) for new, old in enumerate(keep)}
    state, matched = {}, False
    for key, value in teacher.state_dict().items():
        m = _LAYER_KEY.match(key)
        matched |= m is not None
        if m is None:
            state[key] = value
        elif m.group(2) in rename:
            state[m.group(1) + rename[m.group(2)] + m.group(3)] = value
    if not matched:
        raise UnsupportedModelError(
            f"cannot find the decoder layers of {type(teacher).__name__} (no '.layers.N.' "
            "weights); distillation supports decoder models with a stack of layers"
        )
    student.load_state_dict(state, strict=True)
    return student.to(next(teacher.parameters()).device)


def check_student(student_dir: Path, teacher_dir: Path) -> int:
    """A given student (`distill --student`): a model directory with the teacher's
    vocabulary; returns its layer count."""
    import json

    from ..errors import EdgepackError

    path = Path(student_dir) / "config.json"
    if not path.is_file() or not any(Path(student_dir).glob("*.safetensors")):
        raise EdgepackError(
            f"--student {student_dir} is not a model directory (config.json and safetensors "
            "weights); give one made by `edgepack prune` or saved by transformers"
        )
    mine = json.loads(path.read_text())
    theirs = json.loads((Path(teacher_dir) / "config.json").read_text())
    if mine.get("vocab_size") != theirs.get("vocab_size"):
        raise EdgepackError(
            f"--student {student_dir} has a vocabulary of {mine.get('vocab_size')} tokens, the "
            f"teacher {theirs.get('vocab_size')}; a student must share its teacher's tokenizer"
        )
    return int(mine.get("num_hidden_layers") or 0)


def load_student(student_dir: Path, device: str):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32)
    return model.to(device)


def distillation_loss(student_logits, teacher_logits, input_ids, temperature, alpha):
    """(loss, kl, ce): alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * next-token CE.

    KL is summed over the vocabulary and averaged over positions; CE is the mean over positions
    that have a next token.
    """
    import torch.nn.functional as F

    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(s, t, log_target=True, reduction="none").sum(-1).mean()
    ce = F.cross_entropy(
        student_logits[:, :-1].flatten(0, 1).float(), input_ids[:, 1:].flatten().long()
    )
    return alpha * temperature**2 * kl + (1 - alpha) * ce, kl, ce


def compare(teacher, students: dict, sequences, batch: int = 4) -> dict:
    """Perplexity, KL to the teacher and top-1 agreement of each model on scored positions.

    sequences: (token ids, slice of the positions whose next token is scored), each evaluated
    from an empty context; runs of sequences of the same shape go through in batches.
    """
    import torch

    device = next(teacher.parameters()).device
    modes = {name: m.training for name, m in {"teacher": teacher, **students}.items()}
    sums = {name: [0.0, 0.0, 0] for name in modes}  # nll, kl, agreeing top-1
    count, groups = 0, []
    for ids, window in sequences:
        shape = (len(ids), window.start, window.stop)
        if not groups or groups[-1][0] != shape or len(groups[-1][1]) == batch:
            groups.append((shape, []))
        groups[-1][1].append(list(ids))
    with torch.inference_mode():
        for model in (teacher, *students.values()):
            model.eval()
        for (_, start, stop), rows in groups:
            x = torch.as_tensor(rows, dtype=torch.long, device=device)
            targets = x[:, start + 1 : stop + 1, None]
            ref = torch.log_softmax(teacher(x).logits[:, start:stop].float(), -1)
            top = ref.argmax(-1)
            sums["teacher"][0] += float(-ref.gather(-1, targets).sum())
            sums["teacher"][2] += top.numel()
            for name, model in students.items():
                logp = torch.log_softmax(model(x).logits[:, start:stop].float(), -1)
                sums[name][0] += float(-logp.gather(-1, targets).sum())
                sums[name][1] += float((ref.exp() * (ref - logp)).sum())
                sums[name][2] += int((logp.argmax(-1) == top).sum())
            count += top.numel()
    for name, model in {"teacher": teacher, **students}.items():
        model.train(modes[name])
    return {
        name: {
            "perplexity": math.exp(nll / count),
            "kl": max(0.0, kl / count),
            "top1": agree / count,
            "tokens": count,
        }
        for name, (nll, kl, agree) in sums.items()
    }


class Windows:
    """Token windows as a map-style dataset of {"input_ids": LongTensor[seq_len]}."""

    def __init__(self, windows: np.ndarray):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        import torch

        return {"input_ids": torch.from_numpy(self.windows[i].astype(np.int64))}


def train(teacher, student, text, held, checkpoints: Path, o: dict, checkpoint, progress):
    """Train student against teacher on text.train; returns the Trainer, best model loaded."""
    import torch
    from transformers import PrinterCallback, TrainingArguments

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1  # torchrun, accelerate launch
    args = TrainingArguments(
        output_dir=str(checkpoints),
        max_steps=o["steps"],
        per_device_train_batch_size=o["batch"],
        per_device_eval_batch_size=o["batch"],
        learning_rate=o["lr"],
        warmup_steps=int(0.05 * o["steps"]),
        lr_scheduler_type="linear",
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_strategy="steps",
        logging_steps=max(1, o["steps"] // 100),
        eval_strategy="steps",
        eval_steps=o["save_steps"],
        save_strategy="steps",
        save_steps=o["save_steps"],
        save_total_limit=1,  # the latest checkpoint; Trainer also keeps the best one
        load_best_model_at_end=True,
        metric_for_best_model="kl",
        greater_is_better=False,
        bf16=bf16,
        fp16=cuda and not bf16,
        report_to=[],
        disable_tqdm=True,
        log_level="error",
        log_level_replica="error",
        dataloader_pin_memory=cuda,
        # on CPUs, a process group of several processes (torchrun, accelerate launch) is gloo's;
        # without use_cpu, Trainer would run each process alone, each writing the student
        use_cpu=not cuda and several,
        ddp_backend="gloo" if not cuda and several else None,
        remove_unused_columns=False,
        seed=0,
    )
    trainer = _trainer_class()(
        model=student,
        args=args,
        train_dataset=Windows(text.train),
        eval_dataset=Windows(text.held_out),
        teacher=teacher,
        temperature=o["temperature"],
        alpha=o["alpha"],
        held=held,
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log line on stdout
    tokens = o["batch"] * o["seq_len"] * args.world_size * args.gradient_accumulation_steps
    trainer.add_callback(_callbacks(progress, tokens))
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return trainer


def _trainer_class():
    import torch
    from transformers import Trainer

    class DistillTrainer(Trainer):
        """compute_loss: the distillation loss against the frozen teacher; evaluate: held-out
        KL divergence to the teacher, top-1 agreement and perplexity."""

        def __init__(self, *args, teacher, temperature, alpha, held, **kwargs):
            super().__init__(*args, **kwargs)
            self.teacher = teacher.to(self.args.device)
            self.temperature, self.alpha, self.held = temperature, alpha, held
            self.model_accepts_loss_kwargs = False  # the loss is a per-token mean already
            self._kl = self._ce = 0.0
            self._parts = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ids = inputs["input_ids"]
            with torch.no_grad():
                teacher_logits = self.teacher(input_ids=ids).logits
            outputs = model(input_ids=ids)
            loss, kl, ce = distillation_loss(
                outputs.logits, teacher_logits, ids, self.temperature, self.alpha
            )
            self._kl, self._ce = self._kl + kl.detach(), self._ce + ce.detach()
            self._parts += 1
            return (loss, outputs) if return_outputs else loss

        def log(self, logs, start_time=None):
            if "loss" in logs and self._parts:
                logs["kl"] = round(float(self._kl) / self._parts, 4)
                logs["ce"] = round(float(self._ce) / self._parts, 4)
                self._kl = self._ce = 0.0
                self._parts = 0
            super().log(logs, start_time)

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            figures = compare(self.teacher, {"student": self.model}, self.held)["student"]
            metrics = {f"{metric_key_prefix}_{k}": figures[k] for k in ("kl", "top1", "perplexity")}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(
                self.args, self.state, self.control, metrics
            )
            return metrics

    return DistillTrainer


def _callbacks(progress, tokens_per_step):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """A tqdm bar on stderr (or notes to a callable) with loss, held-out KL and tokens/s;
        also makes the last step evaluated, so that it can be the best checkpoint."""

        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.started, self.first = time.monotonic(), state.global_step
            self.loss = self.held = None
            if progress is True and state.is_world_process_zero:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=state.max_steps,
                    initial=state.global_step,
                    desc="distilling",
                    unit="step",
                    file=terminal(),
                    dynamic_ncols=True,
                )

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_evaluate = True
            if not state.is_world_process_zero:
                return
            rate = (state.global_step - self.first) * tokens_per_step
            rate /= max(time.monotonic() - self.started, 1e-9)
            parts = [f"loss {self.loss:.3f}"] if self.loss is not None else []
            parts += [f"held-out KL {self.held:.3f}"] if self.held is not None else []
            parts.append(f"{rate:,.0f} tok/s")
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix_str(", ".join(parts))
            elif callable(progress):
                progress(f"step {state.global_step}/{state.max_steps}: {', '.join(parts)}")

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            self.loss = logs.get("loss", self.loss)
            self.held = logs.get("eval_kl", self.held)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return Progress()
