"""Chat templates: Jinja source from the GGUF metadata, or a named fallback from the catalog.

Templates run in Jinja's immutable sandbox: they come from model files, which are data.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tokendock.inference.base import ChatTurn

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
        messages = [{"role": t.role, "content": t.content} for t in turns]
        try:
            return self._template.render(
                messages=messages,
                add_generation_prompt=True,
                bos_token=self._bos,
                eos_token=self._eos,
                tools=None,
            )
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
