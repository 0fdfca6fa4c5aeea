"""Readable text for the terminal: profiles, model facts and plans."""

from __future__ import annotations

from ..device.profiles import Profile
from ..model.facts import ModelFacts
from ..model.weight_grid import describe
from ..plan.cost import cost_text
from ..plan.planner import GB, Candidate, Plan


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def targets_table(profiles: list[Profile]) -> str:
    rows = []
    for p in profiles:
        hw, b = p.hardware, p.budget
        accel = f"{p.gpu.name} {p.gpu.vram_gb:g} GB" if p.gpu else "none"
        rows.append(
            [
                p.name,
                hw.arch,
                str(hw.cores),
                f"{hw.ram_gb:g}",
                accel,
                f"{b.memory_gb:g}",
                str(b.context_tokens),
                f"{b.decode_tokens_per_s:g}",
                f"{b.min_quality:g}",
                p.description,
            ]
        )
    header = [
        "name",
        "arch",
        "cores",
        "RAM GB",
        "accelerator",
        "mem budget GB",
        "context",
        "min tok/s",
        "min quality",
        "description",
    ]
    return _table(header, rows)


def _values(f: ModelFacts) -> str:
    if f.weights != "safetensors":
        return "not read"
    return describe(f.weight_grid) or "continuous (on no quantization grid)"


def facts_text(f: ModelFacts) -> str:
    source = {
        "safetensors": "exact, from safetensors headers",
        "pickle": "exact, from checkpoint",
        "config": "computed from config.json (no weights present)",
    }[f.parameters_source]
    lines = [
        ("path", f.path),
        ("architecture", f"{f.architecture} ({f.model_type}, {f.kind})"),
        ("layers", f.num_layers),
        ("hidden size", f.hidden_size),
        ("intermediate size", f.intermediate_size),
        (
            "attention heads",
            f"{f.num_attention_heads} (KV heads {f.num_key_value_heads}, head dim {f.head_dim})",
        ),
        ("vocabulary", f.vocab_size),
        ("tied embeddings", "yes" if f.tie_word_embeddings else "no"),
        ("parameters", f"{f.num_parameters:,} ({source})"),
        ("  embedding / head", f"{f.embedding_parameters:,} / {f.head_parameters:,}"),
        ("  transformer blocks", f"{f.layer_parameters:,}"),
        ("dtype", f.dtype),
        ("weights", f.weights),
        ("weight values", _values(f)),
        ("size on disk", f"{f.disk_bytes / 1e6:,.1f} MB"),
    ]
    if f.num_experts:
        experts = (
            f"{f.num_experts} per layer, {f.experts_per_token} per token: "
            f"{f.expert_parameters:,} parameters, {f.active_parameters:,} active per token"
        )
        lines.insert(11, ("  experts", experts))
    if f.sliding_layers:
        window = f"{f.sliding_window} tokens, in {f.sliding_layers} of {f.num_layers} layers"
        lines.insert(6, ("sliding window", window))
    unsupported = dict(f.unsupported)
    for name in (*f.formats, *unsupported):
        lines.append((f"format {name}", "supported" if name in f.formats else unsupported[name]))
    return "\n".join(f"{k:<22}{v}" for k, v in lines)


def _student_cell(c: Candidate) -> str:
    """The plan table's student column: layers kept, or w25 for 25 % of the MLP pruned."""
    return c.student.slug if c.is_student else "-"


def _row(c: Candidate, verdict: str) -> list[str]:
    p = c.predicted
    decode = f"{p.decode_tokens_per_s:,.1f}" if p.decode_tokens_per_s is not None else "-"
    return [
        str(c.rank) if c.rank else "-",
        c.format,
        c.precision,
        str(c.bits),
        _student_cell(c),
        c.device + ("+cpu" if c.cpu_moe_layers else ""),  # experts in host RAM beside a GPU
        f"{p.memory_bytes / GB:.2f}",
        f"{p.disk_bytes / GB:.2f}",
        decode,
        f"{p.first_token_ms:,.0f}",
        f"{p.quality:.3f}",
        verdict,
    ]


def plan_text(plan: Plan) -> str:
    m, b = plan.model, plan.budget
    vram = f", VRAM {b['accelerator_memory_gb']:g} GB" if b.get("accelerator_memory_gb") else ""
    head = [
        f"model   {m['architecture']}, {m['num_parameters'] / 1e6:,.1f}M parameters, "
        f"{m['num_layers']} layers ({m['path']})",
        f"target  {plan.target}: memory {b['memory_gb']:g} GB{vram}, disk {b['disk_gb']:g} GB, "
        f"context {b['context_tokens']} tokens, first token {b['first_token_ms']:g} ms, "
        f"decode {b['decode_tokens_per_s']:g} tok/s, quality >= {b['min_quality']:g} "
        f"(objective: {plan.objective})",
        "",
    ]
    rows = []
    for c in plan.candidates:
        if c.feasible:
            verdict = "CHOSEN" if c is plan.chosen or c == plan.chosen else "fits"
            verdict += " (marginal)" if c.marginal else ""
        else:
            extra = f" (+{len(c.reasons) - 1} more)" if len(c.reasons) > 1 else ""
            verdict = c.reasons[0] + extra
        rows.append(_row(c, verdict))
    header = [
        "rank",
        "format",
        "precision",
        "bits",
        "student",
        "device",
        "memory GB",
        "disk GB",
        "tok/s",
        "first ms",
        "quality",
        "verdict",
    ]
    out = head + [_table(header, rows), ""]
    if plan.chosen:
        c = plan.chosen
        where = "VRAM" if c.device == "gpu" else "memory"
        out.append(
            f"chosen  {c.label} on {c.runtime} ({c.device}): {where} {c.predicted.arithmetic}"
        )
        if c.predicted.host_arithmetic:
            out.append(f"        host {c.predicted.host_arithmetic}")
        out += _speed_lines(c.predicted)
        out += [f"        {r}" for r in c.reasons if r.startswith("marginal:")]
        if c.predicted.build_memory_bytes:
            out.append(
                f"build   needs about {c.predicted.build_memory_bytes / 1e9:.1f} GB of memory on "
                f"the machine that builds it (its {c.predicted.build_stage} stage) and writes "
                f"{c.predicted.build_disk_bytes / 1e9:.1f} GB"
            )
        if c.cost:
            out += [
                f"cost    {cost_text(c.cost)}",
                f"        at ${c.cost['hourly_usd']:g}/h (${c.cost['monthly_usd']:,.0f} a month): "
                f"{c.cost['instance']}; {c.cost['source']}",
            ]
    elif plan.needs:
        out.append(plan.needs["message"])
    out += [f"note    {n}" for n in plan.notes]
    out.append(
        "(quality is a prior until a build measures it; see `edgepack plan --json` for "
        "every reason)"
    )
    return "\n".join(out)


def _speed_lines(p) -> list[str]:
    """The chosen candidate's predicted speed with its interval, and what it rests on."""
    if not p.speed_basis:
        return []
    decode = ""
    if p.decode_tokens_per_s is not None and p.decode_tokens_per_s_low is not None:
        decode = (
            f"decode {p.decode_tokens_per_s:.1f} tok/s ({p.decode_tokens_per_s_low:.1f}-"
            f"{p.decode_tokens_per_s_high:.1f}), "
        )
    first = (
        f"first token {p.first_token_ms:,.0f} ms ({p.first_token_ms_low:,.0f}-"
        f"{p.first_token_ms_high:,.0f})"
    )
    return [f"speed   {decode}{first}", f"        {p.speed_basis}"]


def check_text(report: dict) -> str:
    """The text of check.py's report (one implementation, in the kit)."""
    from ..bundle.kit import check_module

    return check_module().report_text(report)


def emulation_text(emulation: dict) -> str:
    """How the bundle ran under emulation (edgepack verify --emulate)."""
    lines = [
        f"  emulated: qemu {emulation['cpu']} in {emulation['root']}; install "
        f"{emulation['install_s']:.0f} s from the wheelhouse, check {emulation['check_s']:.0f} s"
    ]
    lines += [f"  install: {line}" for line in emulation.get("install_log_tail", [])]
    return "\n".join(lines)


def build_text(results) -> str:
    lines = []
    for r in results:
        student = f", {r.student}" if r.student else ""
        lines.append(f"bundle  {r.path}  ({r.format} {r.precision}{student} for {r.target})")
        lines.append(f"        {r.tarball}")
        rows = [_candidate_row(c) for c in r.candidates_measured]
        header = [
            "candidate",
            "size MB (bpw, vs fp32)",
            "quality pred/meas",
            "memory MB pred/meas",
            "tok/s device/here",
            "verdict",
        ]
        lines += ["        " + line for line in _table(header, rows).splitlines()]
        lines += [f"        {line}" for line in task_lines(r.candidates_measured)]
        check = r.check
        if not check:
            lines.append("        check on this host: skipped (--no-check)")
        elif "error" in check:
            lines.append(f"        check on this host: {check['verdict']}: {check['error']}")
        else:
            failed = [c["name"] for c in check["checks"] if not c["pass"] and c.get("judged", True)]
            lines.append(
                f"        check on this host: {check['verdict']}"
                + (f" (missed: {', '.join(failed)})" if failed else "")
            )
        chosen = next((c for c in r.candidates_measured if c["chosen"] and c.get("cost")), None)
        if chosen:  # at the device's decode (Trial.row)
            c = chosen["cost"]
            lines.append(f"        cost on {c['instance']}: {cost_text(c)}")
    if results:
        from pathlib import Path

        lines.append(f"report  {Path(results[0].path).parent / 'report.html'}")
    return "\n".join(lines)


def task_lines(rows: list[dict]) -> list[str]:
    """Each candidate's task accuracy (--eval-tasks) beside the reference's, per category."""
    lines = []
    for c in rows:
        t = c["measured"].get("tasks")
        if not t:
            continue
        kept = "-" if t["retention"] is None else f"{t['retention']:.3f}"
        if t.get("retention_low") is not None:
            kept += f" (95 % {t['retention_low']:.3f}-{t['retention_high']:.3f})"
        lines.append(
            f"tasks   {c['format']} {c['precision']}: accuracy {t['accuracy']:.3f}, reference "
            f"{t['reference_accuracy']:.3f}, retention {kept}, agreement {t['agreement']:.3f} "
            f"over {t['items']} items of {t['task_set']}"
        )
        lines.append(
            "          "
            + "; ".join(
                f"{k['category']} {k['accuracy']:.2f}/{k['reference_accuracy']:.2f}"
                for k in t["categories"]
            )
            + " (candidate/reference)"
        )
    return lines


def _candidate_row(c: dict) -> list[str]:
    p, m = c["predicted"], c["measured"]
    verdict = (
        "CHOSEN" if c["chosen"] else ("accepted" if c["accepted"] else "; ".join(c["reasons"]))
    )
    mem = "-" if m["peak_rss_bytes"] is None else f"{m['peak_rss_bytes'] / 1e6:,.0f}"
    return [
        f"{c['format']} {c['precision']}",
        size_text(m),
        f"{p['quality']:.3f} / {_num(m['retention'])}",
        f"{p['memory_bytes'] / 1e6:,.0f} / {mem}",
        f"{device_speed(c)} / {_num(m['decode_tokens_per_s'], 1)}",
        verdict,
    ]


def size_text(measured: dict) -> str:
    """The weight files' size, bits per weight and the share saved against fp32."""
    if not measured.get("weights_bytes"):
        return "-"
    return (
        f"{measured['weights_bytes'] / 1e6:,.1f} ({measured['bits_per_weight']:.2f}, "
        f"-{measured['smaller_than_fp32']:.1%})"
    )


def device_speed(c: dict) -> str:
    """The device's predicted decode with its interval, "(marginal)" where the interval
    straddles a budget: the build's refined prediction, else the plan's."""
    d = c.get("device_prediction") or c["predicted"]
    decode = d.get("decode_tokens_per_s")
    if decode is None:
        return "-"
    text = _num(float(decode), 1)
    low, high = d.get("decode_tokens_per_s_low"), d.get("decode_tokens_per_s_high")
    if low is not None and high is not None:
        text += f" ({_num(float(low), 1)}-{_num(float(high), 1)})"
    if d.get("marginal"):
        text += " marginal: " + ", ".join(d["marginal"])
    return text


def _num(value, digits: int = 3) -> str:
    """A float with `digits` decimals below 100 and none above; an int with separators; "-" for
    what was not measured."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)
