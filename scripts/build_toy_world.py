"""Build the deterministic "toy world" under data/toy/ that tests and smoke runs use on CPU.

The pipeline needs a teacher that is competent but not perfect (so curation has wrong samples to drop),
a much smaller untrained student, a tokenizer/chat template that behaves like Qwen3's (so TRL and vLLM
treat it like the real thing), and problem splits that never leak into the teacher's own training data.
Everything here is generated from fixed seeds, so rerunning gives the same problems and a teacher of the
same quality.

    .venv/bin/python scripts/build_toy_world.py            # writes data/toy/, exits 1 if the gate fails
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import sys
import time
from pathlib import Path

import reasoning_gym
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM
from trl.chat_template_utils import qwen3_chat_template

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "toy"
SEED = 20261128

# Difficulty knobs: level 2 has more operations and bigger numbers, so the teacher fails it more often.
LEVELS = {
    1: dict(min_terms=2, max_terms=3, min_digits=1, max_digits=1),
    2: dict(min_terms=4, max_terms=5, min_digits=1, max_digits=1),
}
# The teacher is imperfect by construction: each step of its training traces is wrong with this
# probability (and the chain goes on from the wrong value), so its sampled accuracy falls with the number
# of steps and verification has real errors to remove.
STEP_ERROR = 0.15
# "Pre-training": arithmetic facts as plain text (no chat template, no think block). The student starts
# from this base, as a real student starts from a base LM that knows arithmetic but not the format.
FACT_RANGE = range(-45, 46)
SPLIT_SIZES = {"train": 256, "heldout": 64}  # per level
# chain_sum seeds item i with Random(seed + i): seed blocks must be far apart or splits share items.
SEED_BASE = {"heldout": 1_000_000, "train": 2_000_000, "teacher": 3_000_000}
LEVEL_SEED_STRIDE = 400_000

TEACHER_ARCH = dict(
    hidden_size=128,
    num_hidden_layers=4,
    intermediate_size=512,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
)
STUDENT_ARCH = dict(
    hidden_size=64,
    num_hidden_layers=2,
    intermediate_size=128,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,
)

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK = ["<think>", "</think>"]
BPE_VOCAB = 448  # including the 256 byte alphabet and the 3 special tokens; <think> tokens come on top

ACC_RANGE = (0.40, 0.90)
SAMPLES_PER_PROBLEM = 4
MAX_NEW_TOKENS = 160
TEMPERATURE = 0.8


def log(msg: str) -> None:
    """Progress lines with elapsed time: the build is long enough that silence looks like a hang."""
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


T0 = time.perf_counter()


# ----------------------------------------------------------------------------------------------- problems


def user_prompt(problem: str) -> str:
    """The exact user prompt the pipeline uses; the teacher is trained on it so it must not drift."""
    return f"{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


def chain_sum_items(level: int, split: str, size: int) -> list[dict]:
    """Raw reasoning-gym items for one (level, split) seed block."""
    seed = SEED + SEED_BASE[split] + level * LEVEL_SEED_STRIDE
    return list(reasoning_gym.create_dataset("chain_sum", size=size, seed=seed, **LEVELS[level]))


def take_unique(items: list[dict], n: int, used: set[str]) -> list[dict]:
    """First n items whose expression is not in `used` (and adds them to it): dedup is by expression."""
    out = []
    for item in items:
        expr = item["metadata"]["expression"]
        if expr in used:
            continue
        used.add(expr)
        out.append(item)
        if len(out) == n:
            return out
    raise RuntimeError(f"only {len(out)} unique expressions, wanted {n}: enlarge the pool")


def build_splits() -> tuple[dict[str, list[dict]], set[str]]:
    """Held-out first, then train, each disjoint by expression; returns rows and every used expression."""
    used: set[str] = set()
    splits: dict[str, list[dict]] = {}
    for split in ("heldout", "train"):
        rows = []
        for level in LEVELS:
            items = take_unique(
                chain_sum_items(level, split, 4 * SPLIT_SIZES[split]), SPLIT_SIZES[split], used
            )
            rows += [
                {
                    "problem": it["question"],
                    "answer": it["answer"],
                    "level": level,
                    "category": f"chain_sum-L{level}",
                    "split": split,
                    "_expr": it["metadata"]["expression"],
                }
                for it in items
            ]
        for i, row in enumerate(rows):
            row["id"] = f"toy-{split}-{i:05d}"
        splits[split] = rows
    return splits, used


def write_splits(splits: dict[str, list[dict]], out: Path) -> None:
    """One JSON object per line with exactly the documented keys (the private _expr is dropped)."""
    keys = ("id", "problem", "answer", "level", "category", "split")
    (out / "problems").mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        with open(out / "problems" / f"{split}.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps({k: row[k] for k in keys}) + "\n")


def teacher_problems(n_per_level: int, used: set[str]) -> list[dict]:
    """Fresh problems for the teacher's SFT, excluding every train/held-out expression.

    Repeats inside this set are allowed (level 1 has few distinct one-digit sums), only the
    evaluation splits must stay unseen, so its errors on them are real.
    """
    out = []
    for level in LEVELS:
        items = chain_sum_items(level, "teacher", n_per_level)
        out += [it for it in items if it["metadata"]["expression"] not in used]
    random.Random(SEED).shuffle(out)
    return out


def reasoning_steps(expression: str, rng: random.Random | None = None) -> tuple[str, int]:
    """Left-to-right chain, one operation per line: '4 - 1 = 3\\n3 + 5 = 8', and its final value.

    With `rng`, each step is wrong with probability STEP_ERROR (off by 1-2) and the chain continues from
    the wrong value, as a sloppy solver's would.
    """
    tokens = expression.split()
    acc, lines = int(tokens[0]), []
    for op, num in zip(tokens[1::2], tokens[2::2], strict=False):
        new = acc + int(num) if op == "+" else acc - int(num)
        if rng is not None and rng.random() < STEP_ERROR:
            new += rng.choice([-2, -1, 1, 2])
        lines.append(f"{acc} {op} {num} = {new}")
        acc = new
    return "\n".join(lines), acc


def conversation(problem: str, expression: str, answer: str, rng: random.Random | None = None) -> list[dict]:
    """A Qwen3-style thinking conversation: reasoning in <think>, boxed answer after it."""
    assert int(answer) == eval(expression), (expression, answer)  # noqa: S307 (digits and +/- only)
    steps, final = reasoning_steps(expression, rng)
    content = "<think>\n" + steps + "\n</think>\n\n" + f"The answer is \\boxed{{{final}}}."
    return [{"role": "user", "content": user_prompt(problem)}, {"role": "assistant", "content": content}]


def fact_lines(rng: random.Random, n_seqs: int, per_seq: int = 8) -> list[str]:
    """Plain-text arithmetic facts 'a + d = r' (a in FACT_RANGE, d a digit), `per_seq` to a sequence."""
    facts = [
        f"{a} {op} {d} = {a + d if op == '+' else a - d}"
        for a in FACT_RANGE
        for d in range(10)
        for op in "+-"
    ]
    return ["\n".join(rng.choice(facts) for _ in range(per_seq)) + "\n" for _ in range(n_seqs)]


def encode_facts(tok: PreTrainedTokenizerFast, texts: list[str]) -> list[tuple[list[int], int]]:
    """(ids, 0): loss on every token of a fact sequence."""
    return [(ids, 0) for ids in tok(texts, add_special_tokens=False)["input_ids"]]


# ---------------------------------------------------------------------------------------------- tokenizer


def tokenizer_corpus(convs: list[list[dict]]) -> list[str]:
    """Message texts without chat markup: special and <think> tokens are added whole, not learned."""
    texts = ["system", "user", "assistant"]
    for conv in convs:
        for msg in conv:
            content = msg["content"]
            for t in THINK:
                content = content.replace(t, "")
            texts.append(content)
    return texts


def build_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    """Byte-level BPE with single-digit tokens and Qwen3's special/added tokens and chat template.

    Digits are split one per token so numbers are spelled the same everywhere (the model can learn
    column arithmetic); <think>/</think> are added but not special, so they survive
    decode(skip_special_tokens=True) as in Qwen3; pad (<|endoftext|>) differs from eos (<|im_end|>).
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK])
    assert Path(qwen3_chat_template_path()).read_text(encoding="utf-8") == qwen3_chat_template
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=SPECIAL[1:],
        chat_template=qwen3_chat_template,
        model_max_length=512,
    )
    check_tokenizer(hf)
    return hf


def qwen3_chat_template_path() -> Path:
    """The template file TRL compares against (it swaps in its training template on an exact match)."""
    import trl

    return Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja"


def check_tokenizer(tok: PreTrainedTokenizerFast) -> None:
    """Fail early on the properties the pipeline relies on rather than in a confusing later step."""
    assert tok.chat_template == qwen3_chat_template
    assert (
        tok.eos_token == "<|im_end|>"
        and tok.pad_token == "<|endoftext|>"
        and tok.pad_token_id != tok.eos_token_id
    )
    assert tok.tokenize("123") == ["1", "2", "3"], tok.tokenize("123")
    text = "<think>\n12 - 7 = 5\n</think>\n\nThe answer is \\boxed{5}.<|im_end|>"
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text.replace("<|im_end|>", "")
    for t in SPECIAL + THINK:
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1, t
    assert set(tok.all_special_tokens) == set(SPECIAL), tok.all_special_tokens
    assert tok.decode(tok("<|im_start|><think>")["input_ids"], skip_special_tokens=True) == "<think>"


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


# ------------------------------------------------------------------------------------------------ driver


def parse_args() -> argparse.Namespace:
    """Defaults are the tuned values; the flags exist for re-tuning into a scratch --out."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    # A second, cooler pass over the same data: the first pass alone left the teacher at 35% (<40%).
    ap.add_argument("--extra-steps", type=int, default=400)
    ap.add_argument("--extra-lr", type=float, default=1.5e-3)
    ap.add_argument("--student-steps", type=int, default=800)
    # The harmony teacher (scripts/toy_harmony.py), fine-tuned from the saved toy teacher.
    ap.add_argument("--harmony-only", action="store_true", help="build only harmony_teacher/ from teacher/")
    ap.add_argument("--harmony-steps", type=int, default=600)
    ap.add_argument("--threads", type=int, default=2)  # 1 on a machine shared with other jobs
    return ap.parse_args()


def build_harmony_teacher(args, out: Path, splits: dict, used: set[str]) -> dict:
    """harmony_teacher/: the toy teacher re-taught gpt-oss's harmony format at two efforts; gated on the
    saved files: nearly every completion parses as harmony, and high effort writes longer traces."""
    import toy_harmony

    tok = toy_harmony.harmony_tokenizer(out / "tokenizer")
    problems = teacher_problems(args.harmony_steps * 16 // len(LEVELS) + 16, used)
    ex = toy_harmony.examples(tok, problems, reasoning_steps, user_prompt, SEED + 11)
    log(f"harmony: {len(ex)} conversations, median {sorted(len(i) for i, _ in ex)[len(ex) // 2]} tokens")
    model = toy_harmony.init_from(out / "teacher", tok)
    loss = train(model, ex, args.harmony_steps, 16, 2e-3, tok.pad_token_id)
    toy_harmony.save(model, tok, out / "harmony_teacher")
    report = toy_harmony.check(out / "harmony_teacher", splits["heldout"][::16], user_prompt)
    report.update(steps=args.harmony_steps, final_loss=round(loss, 4))
    log(f"harmony teacher: {report}")
    m, h = report["medium"], report["high"]
    assert min(m["well_formed"], h["well_formed"]) >= 0.9 and h["mean_tokens"] > 1.3 * m["mean_tokens"], (
        report
    )
    return report


def build_teacher_data(args, used: set[str]) -> tuple[PreTrainedTokenizerFast, list]:
    """Teacher SFT conversations, the tokenizer trained on them, and their encodings."""
    n_per_level = args.steps * args.batch_size // len(LEVELS) + args.batch_size
    problems = teacher_problems(n_per_level, used)
    rng = random.Random(SEED + 7)
    convs = [conversation(p["question"], p["metadata"]["expression"], p["answer"], rng) for p in problems]
    log(f"{len(convs)} teacher SFT conversations (train/held-out expressions excluded)")
    facts = fact_lines(random.Random(SEED + 8), 2000)
    tok = build_tokenizer(tokenizer_corpus(convs[:5000]) + facts[:500])
    log(f"tokenizer: {len(tok)} tokens")
    examples = encode_conversations(tok, convs) + encode_facts(tok, facts[: len(convs) // 3])
    lengths = sorted(len(ids) for ids, _ in examples)
    log(f"encoded; tokens per conversation median {lengths[len(lengths) // 2]}, max {lengths[-1]}")
    return tok, examples


def evaluate_saved_teacher(path: Path, heldout: list[dict]) -> dict:
    """Gate on the files as saved (not the in-memory model), so the report describes the artifact."""
    tok = PreTrainedTokenizerFast.from_pretrained(path)
    model = Qwen3ForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    samples = sample(model, tok, heldout, SAMPLES_PER_PROBLEM)
    for row, ss in list(zip(heldout, samples, strict=False))[:: len(heldout) // 4][:4]:
        log(f"{row['problem'].split(': ')[-1]} {row['answer']} -> {ss[0]!r}")
    return accuracy_report(heldout, samples)


def write_docs(out: Path, report: dict) -> None:
    """build_report.json (machine-readable) and a short README generated from the same numbers."""
    (out / "build_report.json").write_text(json.dumps(report, indent=2) + "\n")
    acc = report["teacher_heldout"]
    t, s = report["params"]["teacher"], report["params"]["student"]
    (out / "README.md").write_text(f"""# Toy world

Deterministic CPU-sized stand-ins for the real distillation setup. Rebuild (same seed, ~{report["build_seconds"] / 60:.0f} min
on 2 CPU cores) with:

    .venv/bin/python scripts/build_toy_world.py

- `problems/train.jsonl` ({report["problems"]["train"]} rows), `problems/heldout.jsonl` ({report["problems"]["heldout"]} rows):
  reasoning-gym `chain_sum`, level 1 = {LEVELS[1]["min_terms"]}-{LEVELS[1]["max_terms"]} terms of {LEVELS[1]["min_digits"]}-{LEVELS[1]["max_digits"]} digits,
  level 2 = {LEVELS[2]["min_terms"]}-{LEVELS[2]["max_terms"]} terms of {LEVELS[2]["min_digits"]}-{LEVELS[2]["max_digits"]} digits, half of each split per level. Splits are disjoint
  by expression, and the teacher never trained on any expression in either.
- `tokenizer/`: byte-level BPE ({report["vocab_size"]} tokens, one token per digit), Qwen3 special tokens
  (`<|im_end|>` = eos, `<|endoftext|>` = pad, `<think>`/`</think>` added but not special) and TRL's exact
  Qwen3 chat template.
- `teacher/`: Qwen3ForCausalLM, {t:,} parameters, trained from scratch ({report["teacher_training"]["steps"]} + {report["teacher_training"]["extra_steps"]} steps x
  {report["teacher_training"]["batch_size"]}) on `<think>` step-by-step chains for the prompt
  `"{{problem}}\\nPlease reason step by step, and put your final answer within \\\\boxed{{}}."`, mixed with plain
  arithmetic facts. It is imperfect by construction: each step of its training traces is wrong with
  probability {STEP_ERROR} (the chain continues from the wrong value), so it makes real, verifiable mistakes.
- `student/`: Qwen3ForCausalLM, {s:,} parameters ({t / s:.1f}x fewer): the "base model". Pre-trained only on
  plain-text arithmetic facts (`-4 + 6 = 2`, {report["teacher_training"]["student_fact_steps"]} steps), never on the chat format, `<think>` blocks
  or chains, as a real student starts from a base LM that knows arithmetic but not the reasoning format.

Teacher on the held-out split, {acc["samples_per_problem"]} samples per problem, temperature {TEMPERATURE}, top_p 1.0:
accuracy {acc["accuracy_overall"]:.3f} overall, {acc["accuracy_level1"]:.3f} level 1, {acc["accuracy_level2"]:.3f} level 2;
well-formed (`<think>...</think>` then `\\boxed{{}}`) {acc["well_formed_rate"]:.3f}. Details: `build_report.json`.
""")


def main() -> int:
    """Build everything, then gate on the saved teacher's sampled held-out accuracy."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    splits, used = build_splits()
    if args.harmony_only:
        report = json.loads((out / "build_report.json").read_text())
        report["harmony_teacher"] = build_harmony_teacher(args, out, splits, used)
        (out / "build_report.json").write_text(json.dumps(report, indent=2) + "\n")
        return 0
    write_splits(splits, out)
    log(f"problems: train {len(splits['train'])}, heldout {len(splits['heldout'])}")
    tok, examples = build_teacher_data(args, used)
    if (out / "tokenizer").exists():
        shutil.rmtree(out / "tokenizer")
    tok.save_pretrained(out / "tokenizer")

    teacher = make_model(TEACHER_ARCH, tok, seed=SEED)
    student = make_model(STUDENT_ARCH, tok, seed=SEED + 1)
    params = {"teacher": n_params(teacher), "student": n_params(student)}
    log(f"params {params}")
    assert params["teacher"] >= 10 * params["student"], params
    facts = encode_facts(tok, fact_lines(random.Random(SEED + 9), 20000))
    student_loss = train(student, facts, args.student_steps, 64, 3e-3, tok.pad_token_id)
    log(f"student base (facts only) loss {student_loss:.4f}")
    save_model_dir(student, tok, out / "student")
    final_loss = train(teacher, examples, args.steps, args.batch_size, args.lr, tok.pad_token_id)
    if args.extra_steps:
        final_loss = train(
            teacher, examples, args.extra_steps, args.batch_size, args.extra_lr, tok.pad_token_id
        )
    save_model_dir(teacher, tok, out / "teacher")

    acc = evaluate_saved_teacher(out / "teacher", splits["heldout"])
    report = {
        "seed": SEED,
        "params": params,
        "vocab_size": len(tok),
        "teacher_heldout": acc,
        "problems": {k: len(v) for k, v in splits.items()},
        "levels": LEVELS,
        "teacher_training": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "extra_steps": args.extra_steps,
            "extra_lr": args.extra_lr,
            "step_error": STEP_ERROR,
            "student_fact_steps": args.student_steps,
            "conversations": len(examples),
            "final_loss": round(final_loss, 4),
        },
        "build_seconds": round(time.perf_counter() - T0, 1),
    }
    report["harmony_teacher"] = build_harmony_teacher(args, out, splits, used)
    write_docs(out, report)
    log(json.dumps(acc))
    ok = ACC_RANGE[0] <= acc["accuracy_overall"] <= ACC_RANGE[1]
    log(f"gate {ACC_RANGE}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
