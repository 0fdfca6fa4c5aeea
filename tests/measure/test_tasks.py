"""Task sets (`build --eval-tasks`): rows read and validated with one-line errors naming the
line, answers normalised and matched, and the accuracy table with its retention interval. No
backend: the integration tier answers them in each runtime (tests/build/test_build.py)."""

import json

import numpy as np
import pytest

from edgepack.measure.task_scoring import TaskReference, retention, retention_interval, summarise
from edgepack.measure.tasks import TaskError, is_correct, load_tasks, normalise, parse_row


def write(tmp_path, rows, name="mine.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_the_builtin_set_has_a_hundred_items_in_five_categories():
    tasks = load_tasks("builtin")
    assert tasks.name == "built-in" and len(tasks.tasks) == 100
    assert tasks.categories() == ["completion", "factual", "language", "long-context", "reasoning"]
    kinds = {t.kind for t in tasks.tasks}
    assert kinds == {"choice", "generate"}
    assert load_tasks(None).sha256 == tasks.sha256


def test_a_choice_row_becomes_lm_evals_context_and_continuations(tmp_path):
    path = write(
        tmp_path,
        [
            {"question": "2 + 2?", "choices": ["3", "4"], "answer": "4", "category": "maths"},
            "",
            {"question": "Who?", "choices": ["Ida", "Tom"], "answer": 0, "passage": "Ida won."},
        ],
    )
    first, second = load_tasks(path).tasks
    assert first.context == "Question: 2 + 2?\nAnswer:" and first.choices == (" 3", " 4")
    assert first.answer == 1 and first.category == "maths"
    assert second.context == "Ida won.\n\nQuestion: Who?\nAnswer:" and second.category == "all"


@pytest.mark.parametrize(
    "row, says",
    [
        ("{not json", "line 2: not JSON"),
        ("[1, 2]", "line 2: a row is a JSON object"),
        ({"question": "q", "choices": ["a"], "answer": 0}, "at least two"),
        ({"question": "q", "choices": ["a", "b"], "answer": 2}, "out of range: 0 to 1"),
        ({"question": "q", "choices": ["a", "b"], "answer": "c"}, "'c' is not one of the choices"),
        ({"question": "q", "choices": ["a", "a"], "answer": 0}, "the same choice twice"),
        ({"question": "q", "choices": ["a", "b"], "answer": True}, "index or its text"),
        ({"question": "q", "choices": ["a", "b"], "answer": 0, "hint": 1}, "unknown key 'hint'"),
        ({"prompt": "p", "answer": "x", "match": "fuzzy"}, "'fuzzy' is not one of exact"),
        ({"prompt": "p", "answer": []}, "'answer' must be a string or a list"),
        ({"prompt": "p", "answer": "x", "max_new_tokens": 0}, "from 1 to 256"),
        ({"prompt": "p", "question": "q", "answer": "x"}, "not both"),
        ({"text": "p"}, "needs 'question' and 'choices'"),
        ({"prompt": "p", "answer": "x", "category": ""}, "'category' must be"),
    ],
)
def test_a_malformed_row_is_one_line_naming_its_line(tmp_path, row, says):
    good = {"prompt": "The sky is", "answer": "blue"}
    path = write(tmp_path, [good, row])
    with pytest.raises(TaskError) as raised:
        load_tasks(path)
    message = str(raised.value)
    assert message.startswith("mine.jsonl line 2: ") and says in message and "\n" not in message


def test_an_empty_unreadable_or_binary_file_is_refused(tmp_path):
    with pytest.raises(TaskError, match="holds no task rows"):
        load_tasks(write(tmp_path, ["", "  "]))
    with pytest.raises(TaskError, match="cannot read the task file"):
        load_tasks(tmp_path / "absent.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TaskError, match="not UTF-8"):
        load_tasks(tmp_path / "bin.jsonl")


def test_generation_answers_are_normalised_and_matched():
    exact = parse_row(json.dumps({"prompt": "p", "answer": ["Paris"]}), "x")
    assert is_correct(exact, " Paris.\nThe capital") and not is_correct(exact, " Paris is big")
    contains = parse_row(json.dumps({"prompt": "p", "answer": "4", "match": "contains"}), "x")
    assert is_correct(contains, " It is 4 apples") and not is_correct(contains, " 14 apples")
    assert not is_correct(contains, "\n\nno\n4")  # only the first line counts
    assert normalise("  The  Sun! ") == "the sun"


def reference(correct, categories):
    n = len(correct)
    return TaskReference("t", "0" * 64, categories, [{}] * n, [0] * n, correct, [])


def test_accuracy_per_category_retention_and_agreement():
    ref = reference([True, True, False, True], ["a", "a", "b", "b"])
    correct = np.array([True, False, True, True])
    same = np.array([True, False, False, True])
    table = summarise(ref, correct, same)
    assert table["accuracy"] == 0.75 and table["reference_accuracy"] == 0.75
    assert table["retention"] == 1.0 and table["agreement"] == 0.5 and table["items"] == 4
    a, b = table["categories"]
    assert (a["category"], a["accuracy"], a["reference_accuracy"], a["retention"]) == (
        "a",
        0.5,
        1.0,
        0.5,
    )
    assert b["retention"] == 1.0  # capped: 2 right against the reference's 1
    assert table["retention_low"] <= table["retention"] <= table["retention_high"]


def test_retention_is_undefined_where_the_reference_knows_nothing():
    assert retention(3, 0) is None and retention(3, 6) == 0.5
    assert retention_interval(np.array([True]), np.array([False])) == (None, None)
    low, high = retention_interval(np.array([True] * 40 + [False] * 60), np.array([True] * 100))
    assert 0.3 < low < 0.4 < high < 0.5


def test_build_refuses_bad_tasks_and_encoders_in_seconds(tmp_path):
    from tests.conftest import encoder_dir, run_cli

    bad = write(tmp_path, [{"prompt": "p", "answer": "x"}, {"prompt": "p"}])
    r = run_cli("build", "--target", "edge-4gb", "--eval-tasks", str(bad), "--out", str(tmp_path))
    assert r.returncode == 2 and "mine.jsonl line 2: " in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli("build", "--model", str(encoder_dir()), "--target", "edge-4gb",
                "--eval-tasks", "builtin", "--out", str(tmp_path / "b"))  # fmt: skip
    assert r.returncode == 2 and "measures decoders" in r.stderr, r.stderr
    assert not (tmp_path / "b").exists()
