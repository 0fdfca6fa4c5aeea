"""The speed model's database and fit: every row names its source, the stored fit is the fit of
the stored database, and a held-out device is predicted by a fit that never saw it (no backend)."""

import hashlib
import subprocess
import sys
from importlib import resources

import pytest

from edgepack.plan import speed_fit as sf
from edgepack.plan.speed_model import (
    FEATURES,
    Cluster,
    Machine,
    Work,
    features,
    ops_per_cycle,
    thread_rate,
)
from tests.conftest import ROOT

KEYS = {"id", "device", "kind", "arch", "backend", "runtime", "model", "params_b", "quant",
        "pp_tps", "pp_tokens", "tg_tps", "tg_tokens", "source_url", "ambiguous",
        "note"}  # fmt: skip


def test_every_row_names_its_source_and_says_whether_it_is_ambiguous():
    rows = sf.rows()
    assert len(rows) >= 40
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert KEYS <= set(r), r["id"]
        assert r["source_url"].startswith("http"), r["id"]
        assert r["tg_tps"] or r["pp_tps"], r["id"]
        if r["ambiguous"]:
            assert r["note"], f"{r['id']} is ambiguous without saying why"
    kinds = {(r["arch"], r["kind"]) for r in rows}
    assert {("arm64", "cpu"), ("x86_64", "cpu"), ("x86_64", "gpu")} <= kinds
    assert any(r.get("active_params_b") for r in rows), "no mixture of experts"


def test_the_stored_fit_is_the_fit_of_the_stored_database():
    stored = sf.fitted()
    db = resources.files("edgepack").joinpath(sf.DB).read_bytes()
    assert stored["database_sha256"] == hashlib.sha256(db).hexdigest(), (
        "the database changed: run tools/speed_fit.py --write"
    )
    refit = sf.fit_all(sf.rows())
    for key, coef in stored["coefficients"].items():
        assert coef == pytest.approx(refit[key], rel=1e-9), key
        assert all(c >= 0 for c in coef)


def test_a_row_the_fit_cannot_use_says_why():
    row = dict(sf.rows()[0], ambiguous=True, note="threads not stated")
    assert sf.usable(row, "decode").startswith("ambiguous")
    metal = dict(row, ambiguous=False, backend="metal")
    assert "edgepack plans CPU and CUDA" in sf.usable(metal, "decode")


def test_little_cores_set_the_pace_of_every_thread():
    big, little = Cluster(4, 2.4, ("neon", "dotprod")), Cluster(4, 1.8, ("neon", "dotprod"))
    four = Machine("cpu", 17, "arm64", threads=4, clusters=(big, little))
    eight = Machine("cpu", 17, "arm64", threads=8, clusters=(big, little))
    assert thread_rate(four, 4) == pytest.approx(2.4e9 * 64)
    assert thread_rate(eight, 4) == pytest.approx(1.8e9 * 64)
    work = Work(1e9, 2e9, 22, 4)
    _, _, c4, _ = features("cpu", "decode", work, four)  # the arm compute term
    _, _, c8, _ = features("cpu", "decode", work, eight)
    assert c8 == pytest.approx(c4 / 2 * 2.4 / 1.8)  # twice the threads, each a little slower


def test_llama_cpp_kernels_set_the_ops_per_cycle():
    """arm64: i8mm for the types llama.cpp repacks for it (Q4_0), dot products for K-quants;
    x86: AVX2's rate even where AVX-512 VNNI or AMX is there."""
    arm = ("neon", "dotprod", "i8mm")
    assert ops_per_cycle(arm, 4, "arm64", "q4_0") == 128
    assert ops_per_cycle(arm, 4, "arm64", "q4_k") == 64
    assert ops_per_cycle(("neon",), 8, "arm64", "q8_0") == 32
    spr = ("avx2", "avx512", "avx512_vnni", "amx")
    assert ops_per_cycle(spr, 4, "x86_64", "q4_k") == ops_per_cycle(("avx2",), 4, "x86_64") == 64
    assert sf.quant_family("Q4_K_M") == "q4_k" and sf.quant_family("q4_k_m_mixed") == "q4_k"


def test_held_out_rows_are_predicted_without_their_device():
    held = sf.leave_one_device_out(sf.rows())
    devices = {(h["device"], h["phase"]) for h in held}
    assert len(devices) >= 5
    for kind, phase in FEATURES:
        s = sf.spread(held, kind, phase)
        if s.get("rows"):
            assert s["ratio_q10"] <= 1 <= s["ratio_q90"] or s["rows"] < 5
            assert s["median_x"] >= 1 and s["worst_x"] >= s["median_x"]


def test_the_tool_prints_every_held_out_row_and_the_summary():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "speed_fit.py")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "leave one device out" in result.stdout and "cpu/decode" in result.stdout
    held = sf.leave_one_device_out(sf.rows())
    assert sum(h["id"][:44] in result.stdout for h in held) == len(held)
