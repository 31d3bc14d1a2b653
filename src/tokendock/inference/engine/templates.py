"""Chat templates: Jinja source from the GGUF metadata, or a named fallback from the catalog.

Templates run in Jinja's immutable sandbox: they come from model files, which are data.

Only the template may write control tokens. `render_pieces` renders the conversation with a
unique placeholder in place of each message's text and splits the result on them, so the engine
can tokenize the template's own text with special-token parsing and every message's text
without it: `<end_of_turn>` typed by a user stays seven characters of text, it cannot close
the turn. The pieces are checked to join into exactly what the template renders from the real
messages; a template that rewrites message text in a way the placeholders cannot follow is
refused (ChatTemplateError), never tokenized with the text parsed for control tokens.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tokendock.inference.vocabulary import ChatTurn

GEMMA = (
    "{{ bos_token }}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for m in messages -%}"
    "{%- if m.role in ['system', 'developer'] -%}"
    "{%- set ns.system = ns.system + m.content + '\n\n' -%}"
    "{%- elif m.role == 'assistant' -%}"
    "{{ '<start_of_turn>model\n' + m.content | trim + '<end_of_turn>\n' }}"
    "{%- else -%}"
    "{{ '<start_of_turn>user\n' + ns.system + m.content | trim + '<end_of_turn>\n' }}"
    "{%- set ns.system = '' -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

CHATML = (
    "{%- for m in messages -%}"
    "{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

LLAMA3 = (
    "{{ bos_token }}"
    "{%- for m in messages -%}"
    "{{ '<|start_header_id|>' + m.role + '<|end_header_id|>\n\n' }}"
    "{{ m.content | trim + '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{%- endif -%}"
)

BUILTIN = {"gemma": GEMMA, "chatml": CHATML, "llama3": LLAMA3}


@dataclass(frozen=True, slots=True)
class PromptPiece:
    """A stretch of a rendered prompt: the template's own text (`content=False`, may hold
    control tokens) or text that came from a message (`content=True`, always plain text)."""

    text: str
    content: bool


class RenderedChat(str):
    """A rendered prompt that remembers which stretches are message text (`pieces`)."""

    pieces: tuple[PromptPiece, ...]

    def __new__(cls, pieces: Sequence[PromptPiece]) -> RenderedChat:
        self = super().__new__(cls, "".join(p.text for p in pieces))
        self.pieces = tuple(pieces)
        return self


class ChatTemplateError(Exception):
    """The template could not be compiled or refused the conversation."""


def _raise(message: str) -> None:
    raise ChatTemplateError(message)


class ChatTemplate:
    def __init__(self, source: str, *, bos_token: str, eos_token: str, name: str):
        self.name = name
        self._bos = bos_token
        self._eos = eos_token
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise ChatTemplateError(f"chat template '{name}' does not compile: {exc}") from exc

    def render(self, turns: Sequence[ChatTurn]) -> str:
        return self._render([{"role": t.role, "content": t.content} for t in turns])

    def render_pieces(self, turns: Sequence[ChatTurn]) -> RenderedChat:
        """The prompt, split into template text and message text (see the module docstring)."""
        nonce = secrets.token_hex(8)
        messages: list[dict[str, str]] = []
        parts: dict[str, tuple[str, str, str]] = {}  # index → (leading ws, text, trailing ws)
        for i, turn in enumerate(turns):
            text = turn.content.strip()
            if not text:  # whitespace only: nothing a tokenizer could read as a control token
                messages.append({"role": turn.role, "content": turn.content})
                continue
            lead = turn.content[: len(turn.content) - len(turn.content.lstrip())]
            trail = turn.content[len(turn.content.rstrip()) :]
            parts[str(i)] = (lead, text, trail)
            messages.append({"role": turn.role, "content": f"{lead}\ue000{nonce}:{i}\ue001{trail}"})
        skeleton = self._render(messages)
        pieces: list[PromptPiece] = []
        pos = 0
        for mark in re.finditer(f"\ue000{nonce}:(\\d+)\ue001", skeleton):
            lead, text, trail = parts[mark.group(1)]
            start, end = mark.start(), mark.end()
            # The template kept the whitespace around the text (no `| trim`): it is message text.
            if lead and skeleton.endswith(lead, pos, start):
                start, text = start - len(lead), lead + text
            if trail and skeleton.startswith(trail, end):
                end, text = end + len(trail), text + trail
            if start > pos:
                pieces.append(PromptPiece(skeleton[pos:start], content=False))
            pieces.append(PromptPiece(text, content=True))
            pos = end
        if pos < len(skeleton):
            pieces.append(PromptPiece(skeleton[pos:], content=False))
        rendered = RenderedChat(pieces)
        if parts and rendered != self.render(turns):
            raise ChatTemplateError(
                f"chat template '{self.name}' transforms message text in a way TokenDock cannot "
                "keep apart from the template's control tokens"
            )
        return rendered

    def _render(self, messages: list[dict[str, str]]) -> str:
        try:
            rendered: str = self._template.render(
                messages=messages,
                add_generation_prompt=True,
                bos_token=self._bos,
                eos_token=self._eos,
                tools=None,
            )
            return rendered
        except TemplateError as exc:
            raise ChatTemplateError(str(exc)) from exc


def choose_template(
    gguf_template: str | None, fallback: str | None, *, force_fallback: bool
) -> tuple[str, str]:
    """(name, source): the GGUF's own template unless absent or overridden by the catalog."""
    if fallback is not None and (force_fallback or not gguf_template):
        return (fallback, BUILTIN[fallback]) if fallback in BUILTIN else ("catalog", fallback)
    if gguf_template:
        return ("gguf", gguf_template)
    raise ChatTemplateError(
        "the model has no chat template in its GGUF metadata and the catalog names no fallback "
        f"(set chat_template to one of {sorted(BUILTIN)} or to Jinja source)"
    )
