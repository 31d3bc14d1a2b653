"""CPU time to turn N empty chat turns into prompt tokens (issue 9, finding 4).

`before`: what the engine did until then — render the Gemma template, then one llama.cpp
`tokenize` call with special-token parsing over the whole prompt (quadratic in the number of
special and user-defined tokens it carves). `after`: the engine's own path
(`ChatTemplate.render_pieces` + `Tokenizer.encode_pieces`). Both on the packaged model's
vocabulary; CPU time of this process (`time.process_time`).

Run from the repository root:
`.venv/bin/python -m bench.tokenize_turns 20000 100000 [--before]` (`--before` also times the old
path: ~25 s of CPU for 20,000 turns, far longer for 100,000).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import llama_cpp
from llama_cpp import Llama

from tokendock.inference.engine.templates import GEMMA, ChatTemplate
from tokendock.inference.engine.tokenizer import Tokenizer
from tokendock.inference.vocabulary import ChatTurn

GGUF = Path("data/models/gemma-3-270m-q4_k_m.gguf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("turns", type=int, nargs="+")
    parser.add_argument("--before", action="store_true", help="also time the old single call")
    args = parser.parse_args()
    llm = Llama(str(GGUF), n_ctx=256, vocab_only=True, verbose=False)
    template = ChatTemplate(GEMMA, bos_token="<bos>", eos_token="<eos>", name="gemma")
    tokenizer = Tokenizer(llama_cpp, llm._model.vocab, GEMMA + "<bos><eos>")
    for n in args.turns:
        turns = [ChatTurn("user" if i % 2 == 0 else "assistant", "") for i in range(n)]
        t0 = time.process_time()
        rendered = template.render_pieces(turns)
        ids = tokenizer.encode_pieces([(p.text, not p.content) for p in rendered.pieces])
        after = time.process_time() - t0
        print(f"{n:>7} empty turns  after: {after:6.2f} s CPU  ({len(ids)} tokens)", flush=True)
        if args.before:
            t0 = time.process_time()
            text = template.render(turns)
            old = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            before = time.process_time() - t0
            print(
                f"{n:>7} empty turns before: {before:6.2f} s CPU  ({len(old)} tokens)", flush=True
            )
            assert old == ids, "the two paths disagree"


if __name__ == "__main__":
    main()
