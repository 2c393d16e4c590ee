"""``bench.md``: the numbers of ``bench.json`` as tables, absolute rates next to ratios."""

from __future__ import annotations

from typing import Any


def _num(value: Any, fmt: str = ",.0f") -> str:
    if value is None:
        return "n/a"
    return format(value, fmt)


def _machine(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    return [
        f"# exitgym bench — {m['date']}",
        "",
        f"Machine: {m['processor']}, {m['cpus']} CPUs, {m['platform']}; load average "
        f"{m['load_average_1min']} at start (shared machine: other work slows every number); "
        f"torch {m['versions']['torch']} with {m['torch_threads']} thread(s). "
        f"Total bench time {result['total_s']:.0f} s.",
        "",
    ]


def _loss(policies: list[dict[str, Any]]) -> float | None:
    point = policies[0].get("operating_point") or {}
    return point.get("max_loss")


def inference_markdown(result: dict[str, Any]) -> list[str]:
    policies = result["inference"]["policies"]
    lines = [
        "## Early-exit inference on the live backbone",
        "",
        f"A trained exit policy and the best rule, each deployed with `exitgym.infer` at its "
        f"operating point chosen on validation (the cheapest reading within "
        f"{_num(_loss(policies), '.3f')} of full depth's validation accuracy), on "
        f"{policies[0]['rows'][0]['num_texts']} {policies[0]['split']} texts; baseline: the "
        "model's plain full-depth forward + last head, same tokenization and batching (longest "
        "first). Times are best of the repeats; realised = wall speed-up / FLOPs speed-up.",
        "",
        "| policy | operating point | mode | batch | full ms/text | exit ms/text | full texts/s "
        "| exit texts/s | wall speed-up | FLOPs speed-up | realised | goal | mean exit layer | "
        "acc full | acc exit |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in policies:
        p, point = entry["policy"], entry.get("operating_point") or {}
        name = (f"{p.get('agent')} {p.get('reward')} α={p.get('alpha')}"
                if entry.get("category", "rl") == "rl" else f"rule: {p.get('agent')}")
        where = (f"τ={point['tau']:.4g}" if point.get("tau") is not None
                 else f"knob {point.get('knob')}" if point else "greedy")
        name = f"{name} | {where}"
        for r in entry["rows"]:
            lines.append(
                f"| {name} | {r['mode']} | {r['batch_size']} | {r['full_ms_per_text']:.2f} | "
                f"{r['exit_ms_per_text']:.2f} | {r['full_texts_per_s']:.1f} | "
                f"{r['exit_texts_per_s']:.1f} | {r['wall_speedup']:.2f}x | "
                f"{r['flops_speedup']:.2f}x | {100 * r['realised_fraction']:.0f} % | "
                f"{'met' if r['goal_met'] else 'MISSED'} (>= {100 * r['goal']:.0f} %) | "
                f"{r['mean_exit_layer']:.2f} | {_num(r.get('full_accuracy'), '.3f')} | "
                f"{_num(r.get('exit_accuracy'), '.3f')} |")
    return [*lines, ""]


def _envs(result: dict[str, Any]) -> list[str]:
    section = result["env_throughput"]
    lines = ["## Environment throughput", "",
             "| family | env | env steps/s | × CartPole-v1 | samples/s | × plain forward |",
             "|---|---|---:|---:|---:|---:|"]
    for r in section["rows"]:
        lines.append(f"| {r['family']} | {r.get('env', r['name'])} | {_num(r.get('steps_per_s'))} "
                     f"| {_num(r.get('ratio_to_cartpole'), '.2f')} | "
                     f"{_num(r.get('samples_per_s'), ',.1f')} | "
                     f"{_num(r.get('ratio_to_plain_forward'), '.2f')} |")
    lines.extend(f"- {note}" for note in section["notes"])
    return [*lines, ""]


def _flops(result: dict[str, Any]) -> list[str]:
    lines = ["## FLOPs model vs `torch.utils.flop_counter` (eager attention, one sample)", "",
             "| config | length | model GFLOPs | counted GFLOPs | matmul ratio | total ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in result["flops_check"]["rows"]:
        lines.append(f"| {r['config']} | {r['length']} | {r['model_flops'] / 1e9:.4f} | "
                     f"{r['counted_flops'] / 1e9:.4f} | {r['ratio_matmul']:.4f} | "
                     f"{r['ratio_total']:.4f} |")
    return [*lines, ""]


def _timings(result: dict[str, Any]) -> list[str]:
    t = result["timings"]
    prepare = (f"`prepare` {_num(t['prepare_s'], '.1f')} s "
               f"({'built' if t['prepare_built'] else 'cache reused, verified'})")
    fresh = (f"from-scratch `prepare` of {t['prepare_fresh_rows']} rows per split "
             f"{_num(t['prepare_fresh_s'], '.1f')} s")
    if t.get("train_s") is not None:
        each = ", ".join(f"{x:.1f}" for x in t["train_s"])
        train = f"`exitgym train` ({t['train_steps']} updates + evaluation) {each} s"
    else:
        train = f"training not timed (deployed the given run `{t['runs'][0]}`)"
    demo = (f"`exitgym demo` {_num(t['demo_s'], '.1f')} s (read from `{t['demo_run']}`)"
            if t.get("demo_s") is not None else "`exitgym demo`: no demo run under runs/ yet")
    return ["## Pipeline timings", "", f"- {prepare}", f"- {fresh}", f"- {train}", f"- {demo}",
            ""]


def _finetune(result: dict[str, Any]) -> list[str]:
    f = result.get("finetune")
    if f is None:
        return []
    return ["## Fine-tuning speed (same batches)", "",
            "| trainer | steps/s | ratio to plain HF | goal |", "|---|---:|---:|---:|",
            f"| exitgym `finetune` (every exit, embeddings frozen) | "
            f"{f['exitgym_steps_per_s']:.3f} | {f['ratio_to_hf']:.2f} | "
            f"{f['goal']} ({'met' if f['goal_met'] else 'not met'}) |",
            f"| plain HF step (AutoModel + AdamW) | {f['hf_steps_per_s']:.3f} | 1.00 | |", "",
            f"{f['steps']} steps of {f['batch_size']} texts (mean {f['mean_tokens']:.1f} tokens),"
            f" {f['threads']} torch thread(s), best of {len(f['exitgym_s'])} runs.", ""]


def _generation(result: dict[str, Any]) -> list[str]:
    from exitgym.bench.generation import to_markdown as generation_markdown

    return generation_markdown(result["generation"])


def gpu_markdown(result: dict[str, Any]) -> list[str]:
    from exitgym.bench.gpu import gpu_markdown as markdown

    return markdown(result)


def _ray(result: dict[str, Any]) -> list[str]:
    from exitgym.bench.ray import ray_markdown

    return ray_markdown(result)


PARTS = (("inference", inference_markdown), ("env_throughput", _envs), ("flops_check", _flops),
         ("finetune", _finetune), ("generation", _generation), ("timings", _timings),
         ("ray", _ray), ("gpu", gpu_markdown))
"""Section -> its part of ``bench.md``, in order; a section not measured (``--only``) has none."""


def to_markdown(result: dict[str, Any]) -> str:
    """The whole ``bench.md``."""
    parts = _machine(result)
    for name, part in PARTS:
        if name in result:
            parts += part(result)
    return "\n".join(parts)
