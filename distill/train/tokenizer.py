"""The student's tokenizer as training needs it: the `{% generation %}` template, EOS = end-of-turn, and a
pad token that is not EOS. Each of these, wrong, trains a student that looks fine and never stops.
"""

from __future__ import annotations

from typing import Any

# TRL's Qwen3 training template closes `{% generation %}` after '<|im_end|>\n'. The newline after the
# end-of-turn token is never generated (decoding stops at EOS), so it is moved out of the trained span:
# the mask then covers exactly <think>...</think>, the answer and <|im_end|>.
_TRL_QWEN3_TAIL = "{{- '<|im_end|>\\n' }}\n        {%- endgeneration %}"
_TIGHT_QWEN3_TAIL = "{{- '<|im_end|>' }}\n        {%- endgeneration %}\n        {{- '\\n' }}"


def training_chat_template(tokenizer: Any) -> str:
    """The template to train with: the tokenizer's own if it marks `{% generation %}`, else TRL's variant.

    TRL swaps in its training template only when the tokenizer's template is byte-identical to one it ships
    (e.g. Qwen3's); anything else fails here with the reason rather than training on the prompt.
    """
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tokenizer.chat_template):
        return tokenizer.chat_template
    try:
        template = get_training_chat_template(tokenizer)
    except ValueError as e:
        raise ValueError(
            f"{tokenizer.name_or_path}: its chat template has no {{% generation %}} markers and TRL has no "
            f"training variant for it; ship a template that marks the assistant turn ({e})"
        ) from None
    return template.replace(_TRL_QWEN3_TAIL, _TIGHT_QWEN3_TAIL)


def prepare_tokenizer(
    path: str, eos_token: str, pad_token: str, revision: str | None = None, chat_template: str | None = None
) -> Any:
    """The student's tokenizer with the training template, EOS = end-of-turn and a distinct pad token.

    A student trained with pad == eos never learns to stop: the collator masks pads out of the loss, and
    with pad == eos that drops every end-of-turn label too.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, revision=revision)
    if chat_template:
        tok.chat_template = chat_template
    for name, value in (("eos_token", eos_token), ("pad_token", pad_token)):
        if value not in tok.get_vocab():
            raise ValueError(f"{path}: {name} {value!r} is not in the tokenizer's vocabulary")
    tok.eos_token, tok.pad_token = eos_token, pad_token
    if tok.pad_token_id == tok.eos_token_id:
        raise ValueError(
            f"{path}: pad token == eos token ({eos_token!r}); the student would never learn to stop"
        )
    tok.chat_template = training_chat_template(tok)
    return tok
