"""Progressive release: a streamed text answer goes to its client chunk by chunk (a sentence, or a number of
tokens) while each chunk's own confidence, from its tokens' logprobs and calibrated like a whole answer of its
group, clears the policy's release band. The first chunk that does not, and the first tool call, stop the flow:
the client keeps what it has, and the rest is decided with the whole answer (held for an agent, with what was
released fixed). A chunk without logprobs is unscored, so it stops the flow too.

Which tokens made a chunk is known per upstream chunk (an SSE event carries its text and the tokens that wrote
it), so a sentence that ends inside an event is scored with that whole event.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gateway.conversation.chunks import Assembled
from gateway.policy import Policy
from gateway.scoring.calibrator import Calibrators
from gateway.scoring.scorer import Scorer

# A sentence ends at . ! ? or … followed by white space or by nothing yet (what the model writes next is a new
# chunk, scored on its own, so "3." released before "14" is safe), or at a CJK full stop, question or exclamation
# mark; closing quotes and brackets belong to the sentence they end.
_SENTENCE_END = re.compile(r"(?:[.!?…][\"'”’)\]]*(?:\s+|$)|[。！？][」』”’)）]*)")


class Progress:
    """One streamed answer's progressive release, fed the assembled stream as it grows."""

    def __init__(
        self,
        policy: Policy,
        calibrators: Calibrators,
        scorer: Scorer,
        model: str,
        release: Callable[[str], None],
    ) -> None:
        self.policy = policy
        self.calibrators = calibrators
        self.scorer = scorer
        self.model = model
        self.release = release  # hands a chunk of text to the client's stream
        self.released = 0  # characters of the text released
        self.sent = ""  # the text released, as the client has it
        self.stopped: tuple[float | None, str] | None = None  # the confidence and group of the chunk that was not
        self.by_tool_call = False
        self._tokens = 0  # of the assembled tokens, those already in a released or stopped chunk

    @property
    def flowing(self) -> bool:
        return self.stopped is None and not self.by_tool_call

    def advance(self, assembled: Assembled) -> None:
        """Release what the stream has completed since the last chunk, if its confidence clears the band."""
        if not self.flowing:
            return
        if assembled.calls or assembled.refusal:
            self.by_tool_call = True  # never released in part: decided whole
            return
        end = self._boundary(assembled)
        if end is not None:
            self._offer(assembled, end)

    def finish(self, assembled: Assembled) -> None:
        """The stream is whole: its last chunk is offered as it is."""
        if assembled.calls or assembled.refusal:
            self.by_tool_call = True
        if self.flowing and len(assembled.content) > self.released:
            self._offer(assembled, len(assembled.content))

    def _boundary(self, assembled: Assembled) -> int | None:
        """Where the pending text's chunk ends (in the whole text), if it has ended."""
        size = self.policy.spec.stream_chunk
        pending = assembled.content[self.released :]
        if isinstance(size, int):
            return len(assembled.content) if len(assembled.tokens) - self._tokens >= size else None
        ends = list(_SENTENCE_END.finditer(pending))
        return self.released + ends[-1].end() if ends else None

    def _offer(self, assembled: Assembled, end: int) -> None:
        tokens: list[dict[str, Any]] = assembled.tokens[self._tokens :]
        confidence, group = self.scorer.piece(self.model, tokens, self.calibrators)
        self._tokens = len(assembled.tokens)
        if not self.policy.releases(confidence, group):
            self.stopped = (confidence, group)
            return
        chunk = assembled.content[self.released : end]
        self.release(chunk)
        self.sent += chunk
        self.released = end
