"""The candidate as a token heat map: each token with its probability, a level for its colour, and the
model's top alternatives for the hover text. Built from the logprobs the gateway stored with the exchange.

What the heat map shows is exactly the text the customer gets, in every script. A token may hold part of a
character: OpenAI reports such a token as `bytes:\\xe3\\x83` with its `bytes`, llama.cpp as an empty or partial
piece. Tokens are merged at byte level (by their `bytes`) until they make whole characters; where a provider
sends no bytes, the tokens are laid over the answer's text and those that do not spell it take the stretch of
text between the ones that do. A merged piece shows the least likely of its tokens.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Any

from gateway.review.explanations import UNSURE_WORD, token_prob

# Probability bands: `low` and `very-low` tokens are the ones an agent should read twice, and the ones the
# review's sentences count as words the model was unsure of.
LEVELS = ((0.9, "sure"), (UNSURE_WORD, "ok"), (0.3, "low"), (0.0, "very-low"))
# How far past the text laid so far a token's text is looked for, per token not yet placed (a token is at most
# a few characters; a bound keeps a long answer's unplaceable tokens from costing a scan of the rest each).
_REACH = 16


@dataclass(frozen=True)
class Token:
    text: str
    prob: float
    level: str
    alternatives: str  # for the title attribute: "'Paris' 62%, 'Lyon' 20%"


@dataclass(frozen=True)
class _Piece:
    text: str
    raw: bytes | None  # the token's bytes, when the provider sent them
    prob: float
    hint: str  # its alternatives, as the title says them


def _level(prob: float) -> str:
    return next(name for floor, name in LEVELS if prob >= floor)


def _piece(item: dict[str, Any]) -> _Piece:
    prob = token_prob(item.get("logprob"))
    others = [alt for alt in item.get("top_logprobs") or [] if alt.get("token") != item.get("token")]
    hint = ", ".join(f"{alt.get('token', '')!r} {token_prob(alt.get('logprob')):.0%}" for alt in others[:5])
    raw = item.get("bytes")
    readable = isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw)
    return _Piece(str(item.get("token", "")), bytes(raw) if isinstance(raw, list) and readable else None, prob, hint)


def _token(text: str, pieces: list[_Piece]) -> Token:
    prob = min(piece.prob for piece in pieces)
    if len(pieces) == 1:
        hint = pieces[0].hint
        label = f"p = {prob:.0%}" + (f"; alternatives: {hint}" if hint else "")
    else:
        label = f"p = {prob:.0%}, the least likely of the {len(pieces)} tokens that make this text"
    return Token(text=text, prob=prob, level=_level(prob), alternatives=label)


def _by_bytes(pieces: list[_Piece]) -> list[Token] | None:
    """Tokens merged until their bytes decode to whole characters; None when a token has no bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    found: list[Token] = []
    waiting: list[_Piece] = []
    for piece in pieces:
        if piece.raw is None:
            return None
        waiting.append(piece)
        text = decoder.decode(piece.raw)
        if text and decoder.getstate()[0] == b"":
            found.append(_token(text, waiting))
            waiting = []
        elif text:  # whole characters, then the start of another: the next token finishes it
            found.append(_token(text, waiting))
            waiting = [piece]
    if waiting:
        found.append(_token(decoder.decode(b"", final=True), waiting))
    return found


def _laid_over(pieces: list[_Piece], answer: str) -> list[Token]:
    """Tokens laid over the answer's text: each token found where the text continues is shown as it is; the
    tokens in between (empty, partial or garbled) share the stretch of text between those found. The shown
    pieces are consecutive slices of `answer`, so together they are exactly `answer`."""
    found: list[Token] = []
    waiting: list[_Piece] = []
    at = 0
    for piece in pieces:
        reach = at + _REACH * (len(waiting) + 1) + len(piece.text)
        where = answer.find(piece.text, at, reach) if piece.text else -1
        if where < 0 or (where > at and not waiting):
            waiting.append(piece)
            continue
        if where > at:
            found.append(_token(answer[at:where], waiting))
        elif waiting:
            # Found right where the text continues: the tokens before it spelled nothing of their own.
            piece = _Piece(piece.text, piece.raw, min(p.prob for p in [*waiting, piece]), piece.hint)
        waiting = []
        found.append(_token(piece.text, [piece]))
        at = where + len(piece.text)
    if at < len(answer):
        found.append(_token(answer[at:], waiting or pieces[-1:]))
    return found


def tokens(response: dict[str, Any], choice: int = 0) -> list[Token]:
    """The heat map of one choice; empty when the provider returned no logprobs."""
    choices = response.get("choices") or []
    if choice >= len(choices):
        return []
    content = ((choices[choice].get("logprobs") or {}).get("content")) or []
    pieces = [_piece(item) for item in content if isinstance(item, dict)]
    if not pieces:
        return []
    answer = (choices[choice].get("message") or {}).get("content")
    merged = _by_bytes(pieces)
    if not isinstance(answer, str) or not answer:
        return merged if merged is not None else [_token(piece.text, [piece]) for piece in pieces]
    if merged is not None and "".join(token.text for token in merged) == answer:
        return merged
    return _laid_over(pieces, answer)
