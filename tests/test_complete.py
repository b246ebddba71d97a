"""The autocomplete engine: suggestions reuse the prefix's state, and the prompt UI."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from gen_fixtures import successor_table, table_lm, tiny_lm, word_tokenizer

from lmtool.errors import BadInput
from lmtool.inference.complete import CompletionEngine, trim


def typing_session(text: str) -> list[str]:
    """The line after each keystroke of typing `text`, with a backspace mid-way."""
    lines, typed = [], ""
    for i, ch in enumerate(text):
        typed += ch
        lines.append(typed)
        if i == len(text) // 2:  # a typo, then a backspace
            lines.append(typed + "x")
            lines.append(typed)
    return lines


def count_reads(model):
    """Wrap model.encode to record how many tokens each stateful call reads."""
    reads = []
    original = model.encode

    def encode(idx, state=None):
        if state is not None:
            reads.append(idx.size(1))
        return original(idx, state)

    model.encode = encode
    return reads


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_each_keystroke_reads_only_what_changed_and_suggests_as_a_fresh_engine(arch):
    lm = tiny_lm(arch=arch, vocab=37, context=64, seed=2)
    engine = CompletionEngine(lm, max_words=3, max_tokens=4, follow=False)
    reads = count_reads(lm.model)
    text = "t9 t10 t11 t12 t13 t14 t15"
    for line in typing_session(text):
        before = len(reads)
        got = engine.suggest(line)
        prefix_reads = reads[before] if len(reads) > before else 0
        if line != text[:1]:  # the first keystroke reads [EOS] and the first token
            assert prefix_reads <= 2, (line, prefix_reads)
        fresh = CompletionEngine(lm, max_words=3, max_tokens=4, follow=False).suggest(line)
        assert got == fresh, line
    assert len(lm.tokenizer.encode(text).ids) > 4  # the line grew well past 2 tokens


def test_typing_the_suggestion_reuses_it_without_the_model():
    V = 20
    lm = table_lm(successor_table(V), word_tokenizer(V))
    engine = CompletionEngine(lm, max_words=3, max_tokens=6)
    assert engine.suggest("t9") == " t10 t11 t12"
    reads = count_reads(lm.model)
    assert engine.suggest("t9 ") == "t10 t11 t12"
    assert engine.suggest("t9 t") == "10 t11 t12"
    assert reads == []  # no model call while the typing follows the suggestion
    engine.suggest("t9 tx")
    assert reads  # a different character: the model ran


def test_cancelled_suggestion_returns_none_and_leaves_the_state_usable():
    lm = tiny_lm(context=64, seed=3)
    engine = CompletionEngine(lm, max_words=5, max_tokens=6)
    assert engine.suggest("t9 t10", cancelled=lambda: True) is None
    assert engine.suggest("t9 t10") == CompletionEngine(lm).suggest("t9 t10")


def test_alternatives_are_distinct_ranked_and_leave_the_prefix_state():
    V = 20
    table = successor_table(V)
    table[9, 11], table[9, 12] = 9.0, 8.0  # after t9: t10, then t11, then t12
    lm = table_lm(table, word_tokenizer(V))
    engine = CompletionEngine(lm, max_words=2, max_tokens=4)
    alts = engine.alternatives("t8 t9", k=3)
    assert [a.text for a in alts][:3] == [" t10 t11", " t11 t12", " t12 t13"]
    assert [a.score for a in alts] == sorted((a.score for a in alts), reverse=True)
    assert engine.suggest("t8 t9") == " t10 t11"


def test_trim_stops_at_the_sentence_end_or_the_word_limit():
    assert trim(" sat on the mat. Then", 5) == " sat on the mat."
    assert trim(" one two three four", 2) == " one two"
    assert trim("ing well\nnext", 5) == "ing well"


def test_engine_refuses_backward_runs():
    with pytest.raises(BadInput, match="backward"):
        CompletionEngine(tiny_lm(backward=True))


def _wait(condition, timeout=20.0):
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.01)


def test_the_prompt_shows_ghost_text_tab_accepts_enter_prints_ctrl_d_exits():
    """Driven through prompt_toolkit's pipe input, drawn into a VT100 screen."""
    import io

    from prompt_toolkit.data_structures import Size
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output.vt100 import Vt100_Output

    from lmtool.cli.complete_ui import build_session, run_prompt

    V = 20
    lm = table_lm(successor_table(V), word_tokenizer(V))
    engine = CompletionEngine(lm, max_words=2, max_tokens=4)
    screen = io.StringIO()
    output = Vt100_Output(screen, lambda: Size(rows=24, columns=80), term="xterm")
    lines: list[str] = []
    with create_pipe_input() as pipe:
        session = build_session(engine, 3, input=pipe, output=output)
        thread = threading.Thread(target=run_prompt, args=(session, lines.append))
        thread.start()
        try:
            pipe.send_text("t7 t8")
            _wait(lambda: session.default_buffer.suggestion is not None)
            assert session.default_buffer.suggestion.text == " t9 t10"
            _wait(lambda: "t9 t10" in screen.getvalue())  # the ghost text was drawn
            pipe.send_text("\t")  # Tab accepts it
            _wait(lambda: session.default_buffer.text == "t7 t8 t9 t10")
            pipe.send_text("\r")  # Enter prints the line
            _wait(lambda: lines == ["t7 t8 t9 t10"])
            pipe.send_text("t12 oops")
            _wait(lambda: session.default_buffer.text == "t12 oops")
            pipe.send_text("\x03")  # Ctrl-C clears the line
            _wait(lambda: session.default_buffer.text == "")
            pipe.send_text("\x1b[A")  # ↑: the history
            _wait(lambda: session.default_buffer.text == "t7 t8 t9 t10")
            pipe.send_text("\x03\x04")  # clear, then Ctrl-D on the empty line: quit
            thread.join(timeout=20)
            assert not thread.is_alive()
        finally:
            if thread.is_alive():
                pipe.send_text("\x03\x04")
                thread.join(timeout=5)
    assert lines == ["t7 t8 t9 t10"]


def test_the_menu_key_offers_the_alternatives():
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from lmtool.cli.complete_ui import build_session, run_prompt

    V = 20
    table = successor_table(V)
    table[8, 10] = 9.0
    lm = table_lm(table, word_tokenizer(V))
    engine = CompletionEngine(lm, max_words=1, max_tokens=3)
    lines: list[str] = []
    with create_pipe_input() as pipe:
        session = build_session(engine, 3, input=pipe, output=DummyOutput())
        thread = threading.Thread(target=run_prompt, args=(session, lines.append))
        thread.start()
        try:
            pipe.send_text("t7 t8")
            pipe.send_text("\x00")  # Ctrl-Space: the menu
            buffer = session.default_buffer
            _wait(lambda: buffer.complete_state is not None and buffer.complete_state.completions)
            texts = [c.text for c in buffer.complete_state.completions]
            assert texts[:2] == [" t9", " t10"]
            pipe.send_text("\x1b[B\x1b[B")  # ↓ ↓: the second alternative
            _wait(lambda: buffer.text == "t7 t8 t10")
            pipe.send_text("\r")  # Enter takes it (the menu closes, the line stays)
            _wait(lambda: buffer.complete_state is None)
            pipe.send_text("\r")
            _wait(lambda: lines == ["t7 t8 t10"])
            pipe.send_text("\x04")
            thread.join(timeout=20)
        finally:
            if thread.is_alive():
                pipe.send_text("\x03\x04")
                thread.join(timeout=5)
    assert lines == ["t7 t8 t10"]


def test_complete_function_gives_the_k_best():
    from lmtool.inference import complete

    V = 20
    table = successor_table(V)
    table[7, 9] = 9.0  # after t7: t8, else t9
    lm = table_lm(table, word_tokenizer(V))
    out = complete(lm, "t7", k=2, max_words=2)
    assert [c.text for c in out] == [" t8 t9", " t9 t10"]
    assert isinstance(out[0].score, float) and torch.isfinite(torch.tensor(out[0].score))


def test_alternatives_give_k_distinct_texts_when_the_vocabulary_has_them():
    """Beams that differ only after the word limit trim to one text: the search widens
    until it has k (here t8 t9 t10 and t8 t10 t11 are both " t8")."""
    V = 20
    table = successor_table(V)
    table[8, 10] = 9.0  # after t8: t9, else t10
    table[7, 12] = 7.0  # after t7: t8, else (far less likely) t12
    lm = table_lm(table, word_tokenizer(V))
    engine = CompletionEngine(lm, max_words=1, max_tokens=3)
    alts = engine.alternatives("t7", k=3)
    assert [a.text for a in alts][:2] == [" t8", " t12"]
    assert len(alts) == 3 and len({a.text for a in alts}) == 3
    assert [a.score for a in alts] == sorted((a.score for a in alts), reverse=True)


def ghost_not_in_the_beams_lm():
    """After t7 the single most likely token is t8 (greedy: the ghost text), but t8 leads
    nowhere likely, so the two best texts of two tokens are t12 t13 and t14 t15."""
    V = 20
    table = successor_table(V)
    table[7, 8], table[7, 12], table[7, 14] = 5.0, 4.9, 4.8
    table[8, :] = 0.0  # after t8: anything ([EOS] first among equals)
    return table_lm(table, word_tokenizer(V))


def test_the_menu_starts_with_the_ghost_text_even_when_the_search_does_not_find_it():
    engine = CompletionEngine(ghost_not_in_the_beams_lm(), max_words=2, max_tokens=2)
    ghost = engine.suggest("t7")
    assert ghost == " t8"
    assert ghost not in [a.text for a in engine.alternatives("t7", k=2)]
    menu = engine.menu("t7", k=2)
    assert [c.text for c in menu] == [" t8", " t12 t13"]
    assert all(isinstance(c.score, float) and c.score < 0 for c in menu)
    assert [c.text for c in engine.menu("t7", k=1)] == [" t8"]


def test_the_menu_key_offers_the_ghost_text_first():
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from lmtool.cli.complete_ui import build_session, run_prompt

    engine = CompletionEngine(ghost_not_in_the_beams_lm(), max_words=2, max_tokens=2)
    with create_pipe_input() as pipe:
        session = build_session(engine, 2, input=pipe, output=DummyOutput())
        thread = threading.Thread(target=run_prompt, args=(session, lambda line: None))
        thread.start()
        try:
            pipe.send_text("t7")
            buffer = session.default_buffer
            _wait(lambda: buffer.suggestion is not None)
            assert buffer.suggestion.text == " t8"
            pipe.send_text("\x00")  # Ctrl-Space: the menu
            _wait(lambda: buffer.complete_state is not None and buffer.complete_state.completions)
            assert [c.text for c in buffer.complete_state.completions] == [" t8", " t12 t13"]
            pipe.send_text("\x03\x04")
            thread.join(timeout=20)
        finally:
            if thread.is_alive():
                pipe.send_text("\x03\x04")
                thread.join(timeout=5)
