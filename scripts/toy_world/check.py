"""Sampling the saved teacher and gating the build on its held-out accuracy and well-formedness."""

from __future__ import annotations

import re

import torch
from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM

from toy_world.model import chat_prompt
from toy_world.world import LEVELS, MAX_NEW_TOKENS, SEED, TEMPERATURE

# -------------------------------------------------------------------------------------------- evaluation


def extract_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} after </think> (None if there is no closed think block)."""
    if "</think>" not in text:
        return None
    found = re.findall(r"\\boxed\{([^{}]*)\}", text.split("</think>")[-1])
    return found[-1].strip() if found else None


def well_formed(text: str) -> bool:
    """Exactly one <think>...</think> block, opened first, followed by a boxed answer."""
    return (
        text.startswith("<think>\n")
        and text.count("<think>") == 1
        and text.count("</think>") == 1
        and extract_boxed(text) is not None
    )


def is_correct(pred: str | None, answer: str) -> bool:
    """Integer comparison, so '007' or '+7' still match '7'; unparsable predictions are wrong."""
    try:
        return pred is not None and int(pred) == int(answer)
    except ValueError:
        return False


@torch.no_grad()
def sample(
    model: Qwen3ForCausalLM, tok: PreTrainedTokenizerFast, rows: list[dict], n: int
) -> list[list[str]]:
    """n seeded samples per problem with HF generate (left-padded batch), decoded without specials."""
    prompts = [tok(chat_prompt(tok, r["problem"]), add_special_tokens=False)["input_ids"] for r in rows]
    width = max(map(len, prompts))
    input_ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    torch.manual_seed(SEED)
    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=MAX_NEW_TOKENS,
        num_return_sequences=n,
        do_sample=True,
        temperature=TEMPERATURE,
        top_p=1.0,
    )
    texts = tok.batch_decode(out[:, width:], skip_special_tokens=True)
    return [texts[i * n : (i + 1) * n] for i in range(len(rows))]


def accuracy_report(rows: list[dict], samples: list[list[str]]) -> dict:
    """Sampled accuracy overall and per level, plus the well-formed rate."""
    report: dict = {"n_problems": len(rows), "samples_per_problem": len(samples[0])}
    for name, keep in [("overall", lambda r: True)] + [
        (f"level{lv}", lambda r, lv=lv: r["level"] == lv) for lv in LEVELS
    ]:
        pairs = [(r, s) for r, ss in zip(rows, samples, strict=False) if keep(r) for s in ss]
        report[f"accuracy_{name}"] = round(
            sum(is_correct(extract_boxed(s), r["answer"]) for r, s in pairs) / len(pairs), 4
        )
    flat = [s for ss in samples for s in ss]
    report["well_formed_rate"] = round(sum(map(well_formed, flat)) / len(flat), 4)
    report["pass_at_4_overall"] = round(
        sum(
            any(is_correct(extract_boxed(s), r["answer"]) for s in ss)
            for r, ss in zip(rows, samples, strict=False)
        )
        / len(rows),
        4,
    )
    return report
