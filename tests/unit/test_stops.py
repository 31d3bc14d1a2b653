from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from tokendock.inference.engine.stops import StopScanner


def run(stops: tuple[str, ...], pieces: Iterable[str]) -> tuple[list[str], str, bool]:
    """Feed every piece; return (what each feed returned, flush(), stopped)."""
    scanner = StopScanner(stops)
    outs = [scanner.feed(p) for p in pieces]
    return outs, scanner.flush(), scanner.stopped


def emitted(stops: tuple[str, ...], pieces: Iterable[str]) -> str:
    outs, tail, _ = run(stops, pieces)
    return "".join(outs) + tail


def random_pieces(rng: random.Random, text: str) -> list[str]:
    """Split `text` at random points, empty pieces included (an engine can emit empty text)."""
    pieces: list[str] = []
    i = 0
    while i < len(text):
        size = rng.choice((0, 1, 1, 1, 2, 3, 5, 8))
        pieces.append(text[i : i + size])
        i += size
    return pieces


# --- basics ---------------------------------------------------------------------------------


def test_no_stops_passes_text_through_immediately() -> None:
    outs, tail, stopped = run((), ["hello", " ", "world"])
    assert outs == ["hello", " ", "world"]
    assert tail == ""
    assert stopped is False


def test_empty_stop_strings_are_ignored() -> None:
    outs, tail, stopped = run(("",), ["abc", "def"])
    assert outs == ["abc", "def"]
    assert (tail, stopped) == ("", False)


def test_stop_in_one_feed_cuts_before_it_and_drops_the_rest() -> None:
    scanner = StopScanner(("STOP",))
    assert scanner.feed("hello STOP world") == "hello "
    assert scanner.stopped is True
    assert scanner.feed("more text") == ""
    assert scanner.flush() == ""


def test_stop_at_the_very_start_emits_nothing() -> None:
    scanner = StopScanner(("<end>",))
    assert scanner.feed("<end>tail") == ""
    assert scanner.stopped is True


def test_text_that_cannot_start_a_stop_is_not_held_back() -> None:
    scanner = StopScanner(("xyz",))
    assert scanner.feed("hello") == "hello"
    assert scanner.feed("x") == ""  # could become "xyz"
    assert scanner.feed("a") == "xa"  # it did not: released at once
    assert scanner.flush() == ""


def test_only_the_possible_prefix_is_held() -> None:
    scanner = StopScanner(("</s>",))
    assert scanner.feed("answer</") == "answer"
    assert scanner.flush() == "</"
    assert scanner.stopped is False


# --- split across feeds ----------------------------------------------------------------------


def test_stop_split_char_by_char_never_leaks() -> None:
    text = "The answer is 42.<|end|> and then garbage"
    outs, tail, stopped = run(("<|end|>",), list(text))
    assert "".join(outs) + tail == "The answer is 42."
    assert stopped is True
    assert tail == ""
    # No single feed ever returned a piece of the stop sequence.
    assert all("<" not in o and "|" not in o for o in outs)


def test_stop_split_across_two_token_like_pieces() -> None:
    outs, tail, stopped = run(("\n\nUser:",), ["Sure.\n", "\nUs", "er:", " hi"])
    assert outs == ["Sure.", "", "", ""]
    assert (tail, stopped) == ("", True)


def test_nothing_is_emitted_after_a_stop() -> None:
    scanner = StopScanner(("END",))
    assert scanner.feed("abcE") == "abc"
    assert scanner.feed("ND") == ""
    assert scanner.stopped is True
    for piece in ("x", "END", "more", ""):
        assert scanner.feed(piece) == ""
    assert scanner.flush() == ""


def test_partial_prefix_is_released_by_flush_when_no_stop_completes() -> None:
    scanner = StopScanner(("<|eot|>",))
    assert scanner.feed("done <|eo") == "done "
    assert scanner.stopped is False
    assert scanner.flush() == "<|eo"
    # flush empties the buffer: a second flush has nothing left.
    assert scanner.flush() == ""


def test_prefix_that_diverges_is_released_with_the_next_feed() -> None:
    scanner = StopScanner(("###",))
    assert scanner.feed("a#") == "a"
    assert scanner.feed("#") == ""
    assert scanner.feed("b") == "##b"
    assert scanner.flush() == ""
    assert scanner.stopped is False


# --- several stops ---------------------------------------------------------------------------


def test_earliest_stop_in_the_text_wins_not_the_first_listed() -> None:
    scanner = StopScanner(("world", "lo"))
    assert scanner.feed("hello world") == "hel"
    assert scanner.stopped is True


def test_earliest_stop_wins_when_fed_char_by_char() -> None:
    assert emitted(("world", "lo"), "hello world") == "hel"
    assert emitted(("zzz", "b"), "aaabzzz") == "aaa"


def test_hold_back_covers_the_longest_possible_prefix_of_any_stop() -> None:
    scanner = StopScanner(("abc", "bcd"))
    assert scanner.feed("xab") == "x"  # "ab" may become "abc"
    assert scanner.feed("c") == ""
    assert scanner.stopped is True


def test_shorter_stop_completing_first_wins_char_by_char() -> None:
    # "bc" completes at the third character, before "abcd" can.
    assert emitted(("abcd", "bc"), "abcd") == "a"


# --- overlapping prefixes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop", "text", "expected"),
    [
        ("aab", "aaab", "a"),
        ("aab", "aaaab", "aa"),
        ("abab", "abababx", ""),
        ("abac", "ababac", "ab"),
        ("aaa", "aa", "aa"),
        ("aab", "aaba", ""),
        ("aab", "aaa", "aaa"),
    ],
)
def test_self_overlapping_stops(stop: str, text: str, expected: str) -> None:
    assert expected == reference_single(text, stop), "the case itself is wrong"
    assert emitted((stop,), text) == expected, "char by char"
    assert emitted((stop,), [text]) == expected, "one piece"


def test_aab_in_aaab_holds_exactly_two_chars_before_the_b() -> None:
    scanner = StopScanner(("aab",))
    assert scanner.feed("a") == ""
    assert scanner.feed("a") == ""
    assert scanner.feed("a") == "a"  # the first "a" can no longer start "aab"
    assert scanner.feed("b") == ""
    assert scanner.stopped is True


# --- unicode --------------------------------------------------------------------------------


def test_unicode_stop_split_char_by_char() -> None:
    text = "Grüße 你好🙂世界 – fin"
    assert emitted(("🙂世",), list(text)) == "Grüße 你好"
    assert emitted(("世界",), list(text)) == "Grüße 你好🙂"


def test_unicode_prefix_held_then_flushed() -> None:
    scanner = StopScanner(("。\n\n",))
    assert scanner.feed("結論。") == "結論"
    assert scanner.feed("\n") == ""
    assert scanner.flush() == "。\n"


def test_combining_characters_are_compared_as_code_points() -> None:
    # "é" as e + U+0301: a stop "e" matches the base letter, leaving the accent unseen.
    assert emitted(("e",), "cafe\u0301") == "caf"
    assert emitted(("\u00e9",), "cafe\u0301") == "cafe\u0301"


# --- properties against a simple reference ------------------------------------------------


def reference_single(text: str, stop: str) -> str:
    i = text.find(stop)
    return text if i < 0 else text[:i]


def reference_char_by_char(text: str, stops: tuple[str, ...]) -> str:
    """Stop at the first position where any stop completes; cut at the longest one ending there."""
    for end in range(1, len(text) + 1):
        starts = [end - len(s) for s in stops if text[:end].endswith(s)]
        if starts:
            return text[: min(starts)]
    return text


ALPHABET = "ab€\n"


def random_text(rng: random.Random, max_len: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, max_len)))


def test_property_single_stop_random_pieces_match_str_find() -> None:
    rng = random.Random(20240501)
    for case in range(400):
        text = random_text(rng, 30)
        stop = random_text(rng, 4) or "a"
        pieces = random_pieces(rng, text)
        assert "".join(pieces) == text
        outs, tail, stopped = run((stop,), pieces)
        got = "".join(outs) + tail
        assert got == reference_single(text, stop), (case, text, stop, pieces)
        assert stopped == (stop in text), (case, text, stop, pieces)
        assert stop not in got


def test_property_substring_free_stops_random_pieces_match_earliest_find() -> None:
    # When no stop is a substring of another, the earliest-starting occurrence is also the first
    # to complete, so the result must not depend on how the text is split.
    rng = random.Random(7)
    checked = 0
    while checked < 300:
        text = random_text(rng, 30)
        stops = tuple({random_text(rng, 4) or "b" for _ in range(rng.randint(1, 3))})
        if any(a != b and a in b for a in stops for b in stops):
            continue
        checked += 1
        found = [i for i in (text.find(s) for s in stops) if i >= 0]
        expected = text[: min(found)] if found else text
        pieces = random_pieces(rng, text)
        assert emitted(stops, pieces) == expected, (text, stops, pieces)


def test_property_any_stops_char_by_char_match_first_completion() -> None:
    rng = random.Random(99)
    for _ in range(300):
        text = random_text(rng, 25)
        stops = tuple(random_text(rng, 4) or "a" for _ in range(rng.randint(1, 3)))
        assert emitted(stops, list(text)) == reference_char_by_char(text, stops), (text, stops)


def test_property_output_is_always_a_prefix_of_the_text_at_every_step() -> None:
    rng = random.Random(3)
    for _ in range(200):
        text = random_text(rng, 30)
        stops = tuple(random_text(rng, 3) or "€" for _ in range(2))
        scanner = StopScanner(stops)
        so_far = ""
        for piece in random_pieces(rng, text):
            so_far += scanner.feed(piece)
            assert text.startswith(so_far)
            assert not any(s in so_far for s in stops)
