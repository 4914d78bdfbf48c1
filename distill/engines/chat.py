"""Prompt rendering and the split of a completion into its reasoning and its response.

All engines share this so that the HF, vLLM and OpenAI-served teachers see byte-identical prompts.
"""

from __future__ import annotations

from typing import Any

from distill.engines.formats import THINK_CLOSE, THINK_OPEN, student_format

DEFAULT_PROMPT = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


def messages_for(problem: str, template: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    try:
        user = template.format(problem=problem)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f"generate.prompt_template must contain {{problem}} and escape other braces as {{{{ }}}}: {e!r}"
        ) from None
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": user}]


def template_kwargs(sampling: Any) -> dict[str, Any]:
    """The chat-template kwargs of a sampling config: its `chat_template_kwargs` plus `reasoning_effort`
    (gpt-oss's template reads it; templates that do not, ignore it)."""
    out = dict(getattr(sampling, "chat_template_kwargs", None) or {})
    if effort := getattr(sampling, "reasoning_effort", None):
        out["reasoning_effort"] = effort
    return out


def render(
    tokenizer: Any,
    messages: list[dict[str, str]],
    enable_thinking: bool = True,
    kwargs: dict[str, Any] | None = None,
) -> str:
    """The prompt text exactly as the model saw it in training (its own chat template)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')} has no chat template")
    return tokenizer.apply_chat_template(
        messages,
        tokenize=False,
        add_generation_prompt=True,
        **{"enable_thinking": enable_thinking, **(kwargs or {})},
    )


def split_completion(completion: str) -> tuple[str | None, str | None]:
    """(reasoning, response). A completion that opens `<think>` but never closes it has no response."""
    if THINK_CLOSE in completion:
        head, _, tail = completion.partition(THINK_CLOSE)
        reasoning = head.split(THINK_OPEN, 1)[-1]
        return reasoning.strip("\n"), tail.lstrip("\n")
    if THINK_OPEN in completion:
        return completion.split(THINK_OPEN, 1)[1].strip("\n"), None
    return None, completion


def join_reasoning(reasoning: str | None, content: str | None) -> str:
    """Rebuilds one completion from a server's separate `reasoning_content` and `content`."""
    return student_format(reasoning, content)
