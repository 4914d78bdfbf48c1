"""Reasoning formats: how a teacher writes its reasoning, and how it becomes the student's training format.

Teachers disagree on where the reasoning sits: Qwen3 writes `<think>…</think>` itself (`think`); R1-distill
templates put `<think>\\n` in the prompt, so the completion starts inside the reasoning (`think_prompted`);
gpt-oss writes harmony channels (`harmony`), whose markers are special tokens that a text decode strips
(`analysis…assistantfinal…`), so harmony is parsed from the output token ids; a plain instruct model
writes no reasoning (`none`). Every engine parses through here, so a sample always carries the reasoning
and the final answer separately, its `completion` in the student's format (`<think>\\n…\\n</think>\\n\\n…`),
and the teacher's raw text for audit. What cannot become a clean pair (a commentary channel, a tool call,
no final message) is a named `format_problem`, which curate rejects under that name.

Harmony is parsed by a small parser of its special tokens over the ids (not the `oss-harmony` library that
the vLLM install ships): the library knows only the o200k vocabulary's ids, while a teacher with its own
vocabulary (the toy harmony teacher, a re-tokenised gpt-oss) uses other ids for the same tokens. The tests
check this parser against the library on o200k ids.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from distill.engines.base import Completion

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
FORMATS = ("auto", "think", "think_prompted", "harmony", "none")
HARMONY_SPECIALS = (
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|channel|>",
    "<|constrain|>",
    "<|return|>",
    "<|call|>",
)
_TERMINATORS = ("<|end|>", "<|return|>", "<|call|>")
# Curate's named rejections for a format, in funnel order (distill.curate.funnel).
FORMAT_PROBLEMS = (
    "harmony_malformed",
    "harmony_tool_call",
    "harmony_commentary",
    "harmony_unknown_channel",
    "harmony_repeated_final",
    "harmony_no_final",
    "harmony_stripped",
    "channel_markers",
)
# Harmony structure in text: the markers themselves, or what a decode that skips special tokens leaves.
_MARKERS = re.compile(
    r"<\|(?:start|end|message|channel|constrain|return|call)\|>"
    r"|\A(?:analysis|commentary)(?=\S)|\Afinal(?=[A-Z\\$])|assistant(?:final|analysis|commentary)"
)


@dataclass(frozen=True)
class Parsed:
    """One completion split: `reasoning` None means no closed reasoning; `problem` names why the
    completion cannot be a training pair as it is (None: it can)."""

    reasoning: str | None
    answer: str | None
    raw: str
    problem: str | None = None
    detail: str | None = None

    @property
    def completion(self) -> str:
        """The student's training format; the raw text where there is no clean split to rebuild."""
        if self.reasoning is None or self.answer is None or self.problem:
            return self.raw
        return student_format(self.reasoning, self.answer)


def student_format(reasoning: str | None, answer: str | None) -> str:
    """`<think>\\nR\\n</think>\\n\\nA`: the Qwen3 training format every teacher's sample is stored in."""
    if reasoning is None:
        return answer or ""
    return f"{THINK_OPEN}\n{reasoning.strip(chr(10))}\n{THINK_CLOSE}\n\n{(answer or '').lstrip(chr(10))}"


def _vocab_has(tokenizer: Any, token: str) -> bool:
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    return token in vocab


def detect(tokenizer: Any, template_kwargs: dict | None = None) -> str:
    """The format a tokenizer and its chat template imply: harmony tokens -> harmony; a generation prompt
    that ends in `<think>` -> think_prompted; a `<think>` token or template -> think; else none."""
    if all(_vocab_has(tokenizer, t) for t in ("<|channel|>", "<|message|>", "<|start|>")):
        return "harmony"
    template = getattr(tokenizer, "chat_template", None) or ""
    if template:
        try:
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": "x"}],
                tokenize=False,
                add_generation_prompt=True,
                **(template_kwargs or {}),
            )
        except Exception:  # noqa: BLE001 (a template that cannot render a probe says nothing about format)
            prompt = ""
        tail = prompt.rstrip()
        if tail.endswith(THINK_OPEN):
            return "think_prompted"
        if tail.endswith(THINK_CLOSE):  # thinking switched off in the prompt (Qwen3 enable_thinking=false)
            return "none"
    if _vocab_has(tokenizer, THINK_OPEN) or THINK_OPEN in template:
        return "think"
    return "none"


def resolve(
    fmt: str, tokenizer: Any = None, template_kwargs: dict | None = None, endpoint: bool = False
) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"reasoning_format={fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt != "auto" or endpoint:
        return fmt
    if tokenizer is None:
        return "think"  # an endpoint: servers split reasoning themselves; `<think>` text is the fallback
    return detect(tokenizer, template_kwargs)


def parse_think(text: str, open_in_prompt: bool = False) -> Parsed:
    """`<think>R</think>A`; with the open tag in the prompt, `R</think>A`. No close: no reasoning, and
    the raw text keeps what curate's think checks need to name the problem."""
    if THINK_CLOSE in text:
        head, _, tail = text.partition(THINK_CLOSE)
        return Parsed(head.split(THINK_OPEN, 1)[-1].strip("\n"), tail.lstrip("\n"), text)
    if open_in_prompt and THINK_OPEN not in text:
        return Parsed(None, None, THINK_OPEN + "\n" + text)  # shown as an unclosed block
    if THINK_OPEN in text:
        return Parsed(None, None, text)
    return Parsed(None, text, text)


# ------------------------------------------------------------------------------------------------ harmony


@dataclass(frozen=True)
class HarmonyMessage:
    role: str
    channel: str | None
    recipient: str | None
    content: str
    end: str | None  # the terminator: <|end|> | <|return|> | <|call|>; None: cut off


def segments_from_ids(ids: Sequence[int], tokenizer: Any) -> tuple[list[tuple[bool, str]], Callable[[], str]]:
    """[(is_harmony_special, text)] with runs of ordinary ids decoded together, and the raw decode."""
    special = {tokenizer.convert_tokens_to_ids(t): t for t in HARMONY_SPECIALS if _vocab_has(tokenizer, t)}
    segs: list[tuple[bool, str]] = []
    run: list[int] = []
    for i in ids:
        if i in special:
            if run:
                segs.append((False, tokenizer.decode(run, skip_special_tokens=True)))
                run = []
            segs.append((True, special[i]))
        else:
            run.append(i)
    if run:
        segs.append((False, tokenizer.decode(run, skip_special_tokens=True)))
    return segs, lambda: tokenizer.decode(list(ids), skip_special_tokens=False)


def segments_from_text(text: str) -> list[tuple[bool, str]]:
    """The same segments from text that kept its special tokens (an endpoint that returned them)."""
    pat = "(" + "|".join(re.escape(t) for t in HARMONY_SPECIALS) + ")"
    return [(p in HARMONY_SPECIALS, p) for p in re.split(pat, text) if p]


def harmony_messages(segs: list[tuple[bool, str]]) -> tuple[list[HarmonyMessage], str | None]:
    """Messages of an assistant completion (the prompt ends in `<|start|>assistant`), or a malformation."""
    msgs: list[HarmonyMessage] = []
    header, body, in_body = ["assistant"], [], False
    for special, text in segs:
        if not in_body:
            if special and text == "<|message|>":
                in_body = True
            elif special and text in _TERMINATORS:
                return msgs, f"{text} before <|message|>"
            elif special and text == "<|start|>":
                header = []
            else:
                header.append(text)
            continue
        if special and text in _TERMINATORS:
            msgs.append(_message("".join(header), "".join(body), text))
            header, body, in_body = [], [], False
        elif special and text in ("<|start|>", "<|message|>", "<|channel|>"):
            return msgs, f"{text} inside a message body"
        else:
            body.append(text)
    if in_body:
        msgs.append(_message("".join(header), "".join(body), None))
    elif "".join(header).strip() not in ("", "assistant"):
        return msgs, f"text outside any message: {''.join(header)[:60]!r}"
    return msgs, None


def _message(header: str, content: str, end: str | None) -> HarmonyMessage:
    role, _, rest = header.partition("<|channel|>")
    channel = re.split(r"\s|<\|constrain\|>", rest.strip(), maxsplit=1)[0] if rest else None
    to = re.search(r"to=(\S+?)(?:<\||\s|$)", header)
    return HarmonyMessage(
        role.split()[0] if role.strip() else "assistant", channel, to and to.group(1), content, end
    )


def harmony_verdict(msgs: list[HarmonyMessage], malformed: str | None, raw: str) -> Parsed:
    """analysis -> reasoning, final -> answer; anything else is a named problem."""
    if malformed:
        return Parsed(None, None, raw, "harmony_malformed", malformed)
    for m in msgs:
        if m.recipient or m.end == "<|call|>":
            return Parsed(None, None, raw, "harmony_tool_call", f"to={m.recipient}")
        if m.channel == "commentary":
            return Parsed(None, None, raw, "harmony_commentary", m.content[:80])
        if m.channel not in ("analysis", "final"):
            return Parsed(None, None, raw, "harmony_unknown_channel", str(m.channel))
    finals = [m for m in msgs if m.channel == "final"]
    analysis = [m.content for m in msgs if m.channel == "analysis"]
    if len(finals) > 1:
        return Parsed(None, None, raw, "harmony_repeated_final", f"{len(finals)} final messages")
    if not finals or finals[0].end is None:
        what = "final message cut off" if finals else "no final message"
        return Parsed("\n".join(analysis) or None, None, raw, "harmony_no_final", what)
    if msgs[-1] is not finals[0]:
        return Parsed(None, None, raw, "harmony_malformed", "a message after the final one")
    return Parsed("\n".join(analysis) if analysis else None, finals[0].content, raw)


def _closed(msgs: list[HarmonyMessage], stopped: bool) -> list[HarmonyMessage]:
    """`stopped`: generation ended on a stop token that was left out (vLLM drops the matched eos,
    `<|return|>`, from ids and text alike), so the last message is whole, not cut off."""
    if stopped and msgs and msgs[-1].end is None:
        last = msgs[-1]
        msgs[-1] = HarmonyMessage(last.role, last.channel, last.recipient, last.content, "<|return|>")
    return msgs


def parse_harmony_ids(ids: Sequence[int], tokenizer: Any, stopped: bool = False) -> Parsed:
    segs, raw = segments_from_ids(ids, tokenizer)
    msgs, malformed = harmony_messages(segs)
    return harmony_verdict(_closed(msgs, stopped), malformed, raw())


def parse_harmony_text(text: str, stopped: bool = False) -> Parsed:
    """Text that kept its special tokens: an endpoint asked for them (vLLM: `skip_special_tokens: false`)."""
    msgs, malformed = harmony_messages(segments_from_text(text))
    return harmony_verdict(_closed(msgs, stopped), malformed, text)


# --------------------------------------------------------------------------------------------- one entry


def parse(
    fmt: str, text: str, ids: Sequence[int] | None = None, tokenizer: Any = None, stopped: bool = False
) -> Parsed:
    """A completion in format `fmt` (resolved, not `auto`); harmony needs the ids and their tokenizer,
    or text that kept its special tokens."""
    if fmt == "harmony":
        if ids is not None and tokenizer is not None:
            return parse_harmony_ids(ids, tokenizer, stopped)
        if "<|message|>" in text:
            return parse_harmony_text(text, stopped)
        return Parsed(None, None, text, "harmony_stripped", _STRIPPED)
    if fmt == "none":
        return Parsed(None, text, text)
    if fmt in ("think", "think_prompted"):
        return parse_think(text, open_in_prompt=fmt == "think_prompted")
    raise ValueError(
        f"reasoning_format={fmt!r} is not one of {', '.join(FORMATS[1:])} (auto is resolved first)"
    )


_STRIPPED = (
    "no token ids and no harmony markers in the text (a server decoding without special tokens: send "
    "engine.extra_body.skip_special_tokens=false to vLLM, or serve with its harmony/gpt-oss parser)"
)


def reply_format(fmt: str, reasoning: str | None, content: str | None) -> str:
    """An endpoint's format, `auto` decided by the reply itself: a server-side split or plain text is
    `think`; a body that kept harmony's special tokens (vLLM with skip_special_tokens=false), or shows the
    channel names they leave behind when stripped (`analysis…assistantfinal…`), is harmony."""
    if fmt != "auto":
        return fmt
    if reasoning is None and ("<|message|>" in (content or "") or channel_markers(content or "")):
        return "harmony"  # kept its tokens, or lost them (a `harmony_stripped` rejection that names the fix)
    return "think"


def from_server(reasoning: str | None, content: str | None, fmt: str, stopped: bool = False) -> Parsed:
    """An endpoint's separate reasoning and content (vLLM: `message.reasoning`; others
    `reasoning_content`); without a server-side split, the content is parsed as text (`stopped`: the
    server's finish_reason was "stop")."""
    if reasoning is not None:
        p = Parsed(reasoning.strip("\n"), content or "", student_format(reasoning, content))
        if bad := channel_markers(p.reasoning) or channel_markers(p.answer or ""):
            return Parsed(None, None, p.raw, "channel_markers", bad)
        return p
    return parse(reply_format(fmt, reasoning, content), content or "", stopped=stopped)


def channel_markers(text: str) -> str | None:
    """Harmony structure left in text that should hold none (a stripped decode, a mis-parsed server
    reply): the student would learn the channel names as words."""
    m = _MARKERS.search(text)
    return None if m is None else f"harmony marker {m.group(0).strip()!r} in the text"


def completion(
    fmt: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    ids: Sequence[int] | None = None,
    tokenizer: Any = None,
) -> Completion:
    """An engine's `Completion` for one output, parsed in the teacher's format."""
    p = parse(fmt, text, ids, tokenizer, stopped=finish_reason == "stop")
    return Completion(
        p.completion,
        finish_reason,
        prompt_tokens,
        len(ids) if ids is not None else 0,
        reasoning=p.reasoning,
        response=p.answer,
        raw=p.raw,
        format=fmt,
        format_problem=p.problem,
        format_detail=p.detail,
    )


def format_rejection(row: dict) -> tuple[str | None, str | None]:
    """Curate's reason to drop a sample for its format: the problem the engine named while parsing, or
    harmony markers left in the text (an external file, a server without a reasoning parser)."""
    if row.get("format_problem"):
        return row["format_problem"], row.get("format_detail")
    if bad := channel_markers(row["completion"]):
        return "channel_markers", bad
    return None, None
