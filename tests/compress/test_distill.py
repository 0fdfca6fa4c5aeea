"""Distillation: layer selection, loss, data, bad input, and a real student of the default model
(trained for a few steps, resumed, judged against its undistilled start, built into a bundle)."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from edgepack.compress import distill as d
from edgepack.compress import distill_train as dt
from edgepack.errors import EdgepackError
from tests.conftest import PROFILES, run_cli
from tests.tiny import tiny_causal_lm

# --- layer selection -----------------------------------------------------------------------


@pytest.mark.parametrize("n, k", [(30, 15), (30, 22), (30, 8), (30, 2), (30, 29), (12, 5), (7, 3)])
def test_layers_are_spread_and_keep_first_and_last(n, k):
    keep = d.select_layers(n, k)
    assert len(keep) == k and keep[0] == 0 and keep[-1] == n - 1
    gaps = [b - a for a, b in zip(keep, keep[1:], strict=False)]
    assert min(gaps) >= 1 and max(gaps) - min(gaps) <= 1  # evenly spread


def test_one_layer_student_keeps_the_first():
    assert d.select_layers(30, 1) == [0]


def test_layer_count_from_layers_or_ratio():
    assert d.resolve_layers(30) == 15  # default: half
    assert d.resolve_layers(30, ratio=0.5) == 15
    assert d.resolve_layers(30, ratio=0.75) == 22
    assert d.resolve_layers(30, ratio=0.01) == 1
    assert d.resolve_layers(30, layers=29) == 29


@pytest.mark.parametrize(
    "layers, ratio, message",
    [
        (0, None, "at least 1 and fewer than the teacher's 30"),
        (30, None, "choose one of 1..29"),
        (None, 0.0, "between 0 and 1"),
        (None, 1.0, "between 0 and 1"),
        (10, 0.5, "not both"),
    ],
)
def test_bad_layer_counts(layers, ratio, message):
    with pytest.raises(EdgepackError, match=re.escape(message)):
        d.resolve_layers(30, layers, ratio)


# --- loss ----------------------------------------------------------------------------------


def test_loss_at_alpha_1_is_t_squared_kl_by_hand():
    import torch

    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    temperature = 3.0
    loss, kl, _ = dt.distillation_loss(s, t, ids, temperature, alpha=1.0)
    p = torch.softmax(t.double() / temperature, -1)
    q = torch.softmax(s.double() / temperature, -1)
    by_hand = (p * (p.log() - q.log())).sum(-1).mean()
    assert math.isclose(float(kl), float(by_hand), rel_tol=1e-5)
    assert math.isclose(float(loss), temperature**2 * float(by_hand), rel_tol=1e-5)


def test_loss_at_alpha_0_is_next_token_cross_entropy():
    import torch

    torch.manual_seed(1)
    s, t = torch.randn(1, 6, 9), torch.randn(1, 6, 9)
    ids = torch.randint(0, 9, (1, 6))
    loss, _, ce = dt.distillation_loss(s, t, ids, 2.0, alpha=0.0)
    logp = torch.log_softmax(s[0, :-1].double(), -1)
    by_hand = -logp[torch.arange(5), ids[0, 1:]].mean()
    assert math.isclose(float(loss), float(by_hand), rel_tol=1e-5) and float(ce) == float(loss)


def test_identical_logits_have_zero_kl():
    import torch

    x = torch.randn(3, 4, 50) * 5
    loss, kl, _ = dt.distillation_loss(x, x.clone(), torch.zeros(3, 4, dtype=torch.long), 2.0, 1.0)
    assert abs(float(kl)) < 1e-6 and abs(float(loss)) < 1e-5


# --- student construction on a tiny model ---------------------------------------------------


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_student_copies_the_kept_layers(model_type):
    import torch

    kinds = ["full_attention", "sliding_attention"]
    extra = {}
    if model_type == "qwen2":  # a config with one attention kind per layer
        extra = dict(layer_types=[kinds[i % 3 == 0] for i in range(6)], sliding_window=8)
        extra["use_sliding_window"] = True
    teacher = tiny_causal_lm(model_type, **extra)
    keep = d.select_layers(6, 3)
    student = dt.make_student(teacher, keep)
    assert student.config.num_hidden_layers == 3 == len(student.model.layers)
    assert teacher.config.num_hidden_layers == 6  # the teacher is untouched
    if model_type == "qwen2":
        assert student.config.layer_types == [kinds[i % 3 == 0] for i in keep]
    for new, old in enumerate(keep):
        a = student.model.layers[new].mlp.down_proj.weight
        b = teacher.model.layers[old].mlp.down_proj.weight
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr()
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)
    with torch.no_grad():
        assert student(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 64)


def test_compare_batches_and_scores_the_right_positions():
    import copy

    import torch

    teacher = tiny_causal_lm(layers=3)
    twin, other = copy.deepcopy(teacher), tiny_causal_lm(layers=3)
    torch.manual_seed(2)
    rows = torch.randint(0, 64, (7, 12)).tolist()
    sequences = [(r, slice(0, 11)) for r in rows[:5]] + [(r, slice(5, 11)) for r in rows[5:]]
    one = dt.compare(teacher, {"twin": twin, "other": other}, sequences, batch=1)
    many = dt.compare(teacher, {"twin": twin, "other": other}, sequences, batch=3)
    assert one["teacher"]["tokens"] == 5 * 11 + 2 * 6
    for name in one:
        for key in ("perplexity", "kl", "top1"):
            assert math.isclose(one[name][key], many[name][key], rel_tol=1e-4, abs_tol=1e-6)
    assert one["teacher"] == {**one["teacher"], "kl": 0.0, "top1": 1.0}
    assert one["twin"]["kl"] < 1e-6 and one["twin"]["top1"] == 1.0
    assert math.isclose(one["twin"]["perplexity"], one["teacher"]["perplexity"], rel_tol=1e-5)
    assert one["other"]["kl"] > 1e-4 and one["other"]["top1"] < 1
    # by hand: perplexity of the teacher on the scored positions of the first sequence
    (ids, window), *_ = sequences
    logp = torch.log_softmax(teacher(torch.tensor([ids])).logits[0, window], -1)
    nll = -logp[torch.arange(11), torch.tensor(ids[1:])].mean()
    alone = dt.compare(teacher, {}, sequences[:1])["teacher"]["perplexity"]
    assert math.isclose(alone, float(nll.detach().exp()), rel_tol=1e-4)


# --- API helpers -----------------------------------------------------------------------------


def test_command_line(default_model, tmp_path):
    assert d.command_line(default_model, 15, Path("students/s 15")) == (
        "edgepack distill --layers 15 --out 'students/s 15'"
    )
    assert d.command_line(tmp_path, 8, Path("out")) == (
        f"edgepack distill --teacher {tmp_path} --layers 8 --out out"
    )


def test_report_readers(tmp_path, default_model):
    assert d.student_layers_from(tmp_path) is None and d.teacher_of(tmp_path) is None
    (tmp_path / d.REPORT_FILE).write_text("{not json")
    assert d.student_layers_from(tmp_path) is None
    report = {"student": {"num_layers": 15}, "teacher": {"path": str(default_model)}}
    (tmp_path / d.REPORT_FILE).write_text(json.dumps(report))
    assert d.student_layers_from(tmp_path) == 15 and d.teacher_of(tmp_path) == default_model
    report["teacher"]["path"] = str(tmp_path / "gone")
    (tmp_path / d.REPORT_FILE).write_text(json.dumps(report))
    assert d.teacher_of(tmp_path) is None


def test_cli_help_states_the_defaults():
    result = run_cli("distill", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option, value in (
        ("--steps", d.DEFAULT_STEPS),
        ("--seq-len", d.DEFAULT_SEQ_LEN),
        ("--batch", d.DEFAULT_BATCH),
        ("--temperature", d.DEFAULT_TEMPERATURE),
        ("--alpha", d.DEFAULT_ALPHA),
        ("--lr", d.DEFAULT_LR),
    ):
        stated = re.search(rf"{option} \S+ [^(]*\(default: ([^)]+)\)", text)
        assert stated and float(stated.group(1)) == value, option


# --- bad input: one line, exit 2, nothing left behind -----------------------------------------


@pytest.fixture
def nonempty(tmp_path):
    path = tmp_path / "used"
    path.mkdir()
    (path / "x").write_text("x")
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", "0"], "at least 1 and fewer than the teacher's 30"),
        (["--layers", "30"], "choose one of 1..29"),
        (["--ratio", "1.5"], "--ratio 1.5 must be between 0 and 1"),
        (["--layers", "4", "--ratio", "0.5"], "give --layers or --ratio, not both"),
        (["--data", "missing.txt"], "training text missing.txt does not exist"),
        (["--data", "EMPTY"], "is empty; give a file with text in it"),
        (["--data", "SHORT"], "fewer than two windows of --seq-len 256"),
        (["--steps", "0"], "--steps 0 is out of range"),
        (["--alpha", "2"], "--alpha 2.0 is out of range"),
        (["--resume"], "--resume: there is no checkpoint"),
    ],
)
def test_bad_input(args, message, tmp_path, default_model):
    (tmp_path / "empty.txt").write_text("  \n\n")
    (tmp_path / "short.txt").write_text("Just a few words of text.\n")
    args = [a.replace("EMPTY", str(tmp_path / "empty.txt")) for a in args]
    args = [a.replace("SHORT", str(tmp_path / "short.txt")) for a in args]
    out = tmp_path / "new" / "student"
    result = run_cli("distill", "--teacher", str(default_model), "--out", str(out), *args)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert not out.exists()  # nothing half-written
    assert result.stdout == ""


def test_non_empty_out_without_resume(nonempty, default_model):
    result = run_cli("distill", "--teacher", str(default_model), "--out", str(nonempty))
    assert result.returncode == 2
    assert "is not empty; pass --resume" in result.stderr
    assert [p.name for p in nonempty.iterdir()] == ["x"]


def test_teacher_that_is_not_a_model(tmp_path):
    result = run_cli("distill", "--teacher", str(tmp_path), "--out", str(tmp_path / "s"))
    assert result.returncode == 2 and "config.json" in result.stderr


# --- a real student of the default model ------------------------------------------------------


@pytest.fixture(scope="module")
def student(tmp_path_factory, default_model):
    """4 steps (checkpoints every 2), then --resume to step 6; both through the CLI."""
    out = tmp_path_factory.mktemp("distill") / "student15"
    common = ["distill", "--layers", "15", "--seq-len", "64", "--batch", "4", "--save-steps", "2"]
    common += ["--out", str(out), "--json"]
    first = run_cli(*common, "--steps", "4")
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli(*common, "--steps", "6", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    return out, json.loads(first.stdout), json.loads(second.stdout), second.stderr


@pytest.mark.integration
def test_student_is_a_model_directory_that_names_its_teacher(student, default_model):
    out, _, report, _ = student
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 15
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
    assert not list(out.glob("*.bin"))
    assert d.student_layers_from(out) == 15 and d.teacher_of(out) == Path(default_model).resolve()
    choice = report["student"]["layer_choice"]  # measured; --resume keeps the first run's
    assert choice["chosen"] in ("spread", "influence") and len(choice["block_influence"]) == 30
    assert report["student"]["kept_layers"] == choice[choice["chosen"]]["layers"]
    assert choice["spread"]["layers"] == d.select_layers(30, 15)
    kl = {name: choice[name]["undistilled_kl"] for name in ("spread", "influence")}
    assert kl[choice["chosen"]] == min(kl.values())
    assert report["teacher"]["weights_sha256"] and report["wall_s"] > 0
    (file,) = report["data"]["files"]
    assert file["path"] == "built-in train.txt" and file["tokens"] > 8000


@pytest.mark.integration
def test_distilled_student_is_closer_to_the_teacher_than_its_start(student):
    _, _, report, stderr = student
    for where in ("evaluation", "held_out"):  # eval.txt (another domain), held-out train text
        figures = report[where]
        assert figures["distilled"]["kl"] < figures["undistilled"]["kl"], where
        assert figures["distilled"]["perplexity"] < figures["undistilled"]["perplexity"], where
        assert figures["teacher"]["kl"] == 0 and figures["teacher"]["top1"] == 1
    assert (
        report["evaluation"]["text"] == "built-in" and report["evaluation"]["distilled"]["tokens"]
    )
    assert re.search(r"^distilled +15 ", stderr, re.M) and re.search(r"^teacher +30 ", stderr, re.M)


@pytest.mark.integration
def test_resume_continues_from_the_checkpoint(student):
    out, first, second, _ = student
    assert first["training"]["global_step"] == 4 and first["training"]["resumed_from_step"] == 0
    assert second["training"]["global_step"] == 6 and second["training"]["resumed_from_step"] == 4
    state = json.loads((out / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    # the log of the first run came back with the checkpoint: steps 1..6, each once
    assert [e["step"] for e in second["loss_curve"]] == [1, 2, 3, 4, 5, 6]
    assert second["loss_curve"][:4] == first["loss_curve"]
    assert [e["step"] for e in second["held_out_curve"]] == [2, 4, 6]


@pytest.mark.integration
def test_the_best_checkpoint_by_held_out_kl_is_kept(student):
    _, _, report, _ = student
    curve = report["held_out_curve"]
    best = min(curve, key=lambda e: e["kl"])
    assert report["training"]["best_held_out_kl"] == best["kl"]
    assert report["training"]["best_checkpoint"].endswith(f"checkpoint-{best['step']}")


def _generous(tmp_path):
    text = (PROFILES / "laptop.toml").read_text().replace('name = "laptop"', 'name = "generous"')
    budget = dict(memory_gb=12, disk_gb=100, first_token_ms=120000, decode_tokens_per_s=0.5)
    for key, value in {**budget, "min_quality": 1e-6}.items():
        text = re.sub(rf"^{key} = [^#\n]*", f"{key} = {value} ", text, flags=re.M)
    path = tmp_path / "generous.toml"
    path.write_text(text)
    return path


@pytest.mark.integration
def test_student_builds_into_a_gguf_bundle_that_passes_its_check(student, tmp_path):
    """The student directory is accepted by the exporter and its bundle passes its check.

    f16, not q8_0: after 6 steps the student is still far from the teacher (its quality is
    judged against the teacher's: retention 0.0007 on WikiText-2, hence the floor of 1e-6) and
    has many near-ties, so q8_0 misses the 0.95 top-1 agreement of validation (0.92 measured);
    at 20 steps it passed. f16 validation
    compares logits within 1.0 of the student's fp32, which a wrongly written student fails."""
    out = student[0]
    result = run_cli(
        "build",
        "--model",
        str(out),
        "--target",
        str(_generous(tmp_path)),
        "--format",
        "gguf",
        "--precision",
        "f16",
        "--eval-tokens",
        "512",
        "--out",
        str(tmp_path / "bundles"),
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (bundle,) = json.loads(result.stdout)["bundles"]
    manifest = json.loads((Path(bundle["path"]) / "manifest.json").read_text())
    assert manifest["build_host"]["check"]["pass"], manifest["build_host"]["check"]


def test_layers_by_block_influence_keep_the_last():
    from edgepack.compress.depth import layers_by_influence

    influence = np.array([0.9, 0.01, 0.5, 0.02, 0.3, 0.001])
    assert layers_by_influence(influence, 3) == [0, 2, 5]  # the last whatever it scores
    assert layers_by_influence(influence, 1) == [5]
    assert layers_by_influence(influence, 5) == [0, 2, 3, 4, 5]
