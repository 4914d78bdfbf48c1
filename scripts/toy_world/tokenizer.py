"""The toy tokenizer: byte-level BPE with Qwen3's special tokens and TRL's Qwen3 chat template, so TRL
and vLLM treat it like the real thing."""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from trl.chat_template_utils import qwen3_chat_template

from toy_world.world import BPE_VOCAB, SPECIAL, THINK

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
