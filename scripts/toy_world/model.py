"""The toy models (Qwen3 bodies, CPU-sized) and the small training loop that makes the teacher competent
but imperfect and gives the student its plain-arithmetic base."""

from __future__ import annotations

import math
import random
import shutil
from pathlib import Path

import torch
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from toy_world.world import SEED, TEMPERATURE, log, user_prompt

# ------------------------------------------------------------------------------------------------- models


def make_model(arch: dict, tok: PreTrainedTokenizerFast, seed: int) -> Qwen3ForCausalLM:
    """A from-scratch Qwen3 (the real pipeline's family), deterministically initialised from `seed`."""
    config = Qwen3Config(
        vocab_size=len(tok),
        max_position_embeddings=512,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=None,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
        torch_dtype="float32",
        **arch,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config = generation_config(tok)
    return model


def generation_config(tok: PreTrainedTokenizerFast) -> GenerationConfig:
    """Qwen3-like sampling defaults; both <|im_end|> and <|endoftext|> stop, as in Qwen3."""
    return GenerationConfig(
        eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id],
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        do_sample=True,
        temperature=TEMPERATURE,
        top_p=1.0,
    )


def n_params(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def save_model_dir(model: Qwen3ForCausalLM, tok: PreTrainedTokenizerFast, path: Path) -> None:
    """Weights as safetensors plus the tokenizer, so the directory loads alone in HF, TRL and vLLM."""
    if path.exists():
        shutil.rmtree(path)
    model.save_pretrained(path, safe_serialization=True)
    model.generation_config.save_pretrained(path)
    tok.save_pretrained(path)


# ---------------------------------------------------------------------------------------------- training


def chat_prompt(tok: PreTrainedTokenizerFast, problem: str) -> str:
    """The inference prompt: ends with '<|im_start|>assistant\\n'; the model must open <think> itself."""
    messages = [{"role": "user", "content": user_prompt(problem)}]
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=True)


def encode_conversations(
    tok: PreTrainedTokenizerFast, convs: list[list[dict]]
) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per conversation; loss later covers only tokens after the prompt.

    The prompt is the rendered text up to '<|im_start|>assistant\n' (checked against the inference
    prompt on a sample, rendering each conversation once is the slow part). The assistant turn starts
    with the added token <think>, so the prompt's tokens are an exact prefix of the full ones (asserted).
    """
    fulls = [tok.apply_chat_template(c, tokenize=False) for c in convs]
    marker = "<|im_start|>assistant\n"
    prompts = [full[: full.index(marker) + len(marker)] for full in fulls]
    for conv, prompt in list(zip(convs, prompts, strict=False))[:100]:
        assert prompt == chat_prompt(tok, conv[0]["content"].split("\n")[0]), prompt
    full_ids = tok(fulls, add_special_tokens=False)["input_ids"]
    prompt_ids = tok(prompts, add_special_tokens=False)["input_ids"]
    out = []
    for full, ids, p_ids in zip(fulls, full_ids, prompt_ids, strict=False):
        assert ids[: len(p_ids)] == p_ids and full.endswith("<|im_end|>\n"), full
        out.append((ids, len(p_ids)))
    return out


def collate(batch: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and labels (-100 on prompt and padding).

    With right padding and causal attention no real token ever attends to a pad, so no attention
    mask is needed and SDPA can take its fast causal path.
    """
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return input_ids, labels


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warmup then cosine decay to 10% of peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def length_bucketed_batches(examples: list, batch_size: int, steps: int) -> list[list]:
    """`steps` batches of similar-length conversations, in seeded random order.

    Level 1 and level 2 conversations differ by ~30 tokens; sorting within windows of 16 batches cuts
    the padding (and so CPU time) by about a fifth without making the batch order length-ordered.
    """
    pool = (examples * (1 + steps * batch_size // max(1, len(examples))))[: steps * batch_size]
    window = 16 * batch_size
    batches = []
    for start in range(0, len(pool), window):
        chunk = sorted(pool[start : start + window], key=lambda e: len(e[0]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    random.Random(SEED).shuffle(batches)
    return batches


def train(
    model: Qwen3ForCausalLM, examples: list, steps: int, batch_size: int, lr: float, pad_id: int
) -> float:
    """Plain AdamW loop with warmup + cosine; returns the final smoothed training loss."""
    torch.manual_seed(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    model.train()
    smooth = None
    for step, batch in enumerate(length_bucketed_batches(examples, batch_size, steps)):
        input_ids, labels = collate(batch, pad_id)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup=max(1, steps // 20))
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        if step % 50 == 0 or step == steps - 1:
            log(f"step {step:5d}/{steps}  loss {smooth:.4f}  lr {opt.param_groups[0]['lr']:.2e}")
    model.eval()
    return smooth
