"""The interactive prompt of `lmtool complete`, on prompt_toolkit.

As the person types, the engine's suggestion appears after the cursor as grey ghost
text. Keys:
  Tab or →      accept the suggestion
  Ctrl-Space    a menu of the top alternatives (↑/↓ to choose, Enter to take one)
  Enter         print the line on stdout and start a new one
  ↑ / ↓         history
  Ctrl-C        clear the line
  Ctrl-D        quit (on an empty line; exit status 0)
Suggestions are computed in a worker thread (typing never waits for the model) and a
suggestion whose text has changed since it was asked for stops at its next token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggest, Suggestion
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.filters import Condition, has_completions
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings

from lmtool.inference.complete import CompletionEngine

TOOLBAR = " Tab/→ accept · Ctrl-Space alternatives · Enter print · Ctrl-C clear · Ctrl-D quit"


class ModelSuggest(AutoSuggest):
    """Ghost text from the engine, computed off the UI thread."""

    def __init__(self, engine: CompletionEngine):
        self.engine = engine

    def get_suggestion(self, buffer, document) -> Suggestion | None:
        text = document.text
        if not text.strip() or document.cursor_position != len(text):
            return None  # nothing typed yet, or the cursor is not at the end
        # Stale once the buffer holds something else: the engine stops at its next token.
        result = self.engine.suggest(text, cancelled=lambda: buffer.text != text)
        return Suggestion(result) if result else None

    async def get_suggestion_async(self, buffer, document) -> Suggestion | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.get_suggestion, buffer, document)


class ModelAlternatives(Completer):
    """The menu (asked for with Ctrl-Space only): the ghost text first, then the
    engine's best other continuations, k in all."""

    def __init__(self, engine: CompletionEngine, k: int):
        self.engine, self.k = engine, k

    def get_completions(self, document, complete_event):
        if not document.text.strip() or not complete_event.completion_requested:
            return
        for alternative in self.engine.menu(document.text, self.k):
            yield Completion(alternative.text, start_position=0,
                             display=alternative.text.strip(),
                             display_meta=f"{alternative.score:.2f}")

    async def get_completions_async(self, document, complete_event):
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(
            None, lambda: list(self.get_completions(document, complete_event))
        )
        for completion in found:
            yield completion


def key_bindings() -> KeyBindings:
    bindings = KeyBindings()
    at_end_with_suggestion = Condition(_has_suggestion)

    @bindings.add("tab", filter=at_end_with_suggestion)
    def _accept(event):
        buffer = event.current_buffer
        buffer.insert_text(buffer.suggestion.text)

    @bindings.add("c-space")
    def _menu(event):
        event.current_buffer.start_completion(select_first=False)

    @bindings.add("enter", filter=has_completions, eager=True)
    def _take(event):
        buffer = event.current_buffer
        state = buffer.complete_state
        if state.current_completion is not None:
            buffer.apply_completion(state.current_completion)
        else:
            buffer.cancel_completion()

    return bindings


def _has_suggestion() -> bool:
    from prompt_toolkit.application.current import get_app

    buffer = get_app().current_buffer
    return buffer.suggestion is not None and buffer.document.is_cursor_at_the_end


def build_session(engine: CompletionEngine, k: int, *, input=None, output=None):
    return PromptSession(
        auto_suggest=ModelSuggest(engine),
        completer=ModelAlternatives(engine, k),
        complete_while_typing=False,
        history=InMemoryHistory(),
        key_bindings=key_bindings(),
        bottom_toolbar=TOOLBAR,
        input=input,
        output=output,
    )


def run_prompt(session, write: Callable[[str], None], prompt: str = "> ") -> None:
    """Read lines until Ctrl-D; each accepted line goes to `write`."""
    while True:
        try:
            line = session.prompt(prompt)
        except KeyboardInterrupt:
            continue  # Ctrl-C: the line is dropped, a fresh one starts
        except EOFError:
            return  # Ctrl-D
        write(line)
