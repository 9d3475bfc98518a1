"""Map characters of a decoded response to the generated token ids that produced them.

The detector reports a confusion point as a character offset into the decoded response,
and the loss needs the index of the token that contains that character. Decoding the
response and re-tokenizing it can change token boundaries, so this module works from
the generated ids themselves. Each token's vocabulary piece is turned back into the
bytes or characters it contributes by replaying the tokenizer's own decoder, as stored
in its `tokenizers` JSON: `ByteLevel`, `Metaspace`, or a `Sequence` of `Replace`,
`ByteFallback`, `Fuse` and `Strip` steps. Every call checks the result against
`tokenizer.decode(ids, skip_special_tokens=True)`.

Ownership rule: a character belongs to the token that supplies its last byte. When a
multi-byte character is split across tokens, the token that completes it owns it and
the earlier tokens own nothing for it. Special tokens skipped by `decode` own nothing.
A U+FFFD that replaces invalid bytes belongs to the token whose byte made the UTF-8
decoder emit it, which can be the token after the invalid bytes, or the last token
when the ids end inside a character.

Checked on byte-level BPE (GPT-2/Llama-3/Qwen style) and sentencepiece-style BPE with
byte fallback (Llama-2/Gemma style), with Korean, Chinese, Japanese, Arabic, emoji and
Latin text (see `tests/test_alignment.py`).
"""

from __future__ import annotations

import bisect
import codecs
import json
import re
from collections.abc import Sequence
from functools import lru_cache

__all__ = ["char_to_token", "decode_with_spans", "token_char_spans"]

# A unit is a run of decoded characters, each paired with the index (into the token id
# list) of the token that owns it. Decoder steps transform lists of units.
_Unit = list[tuple[str, int]]

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")

# UTF-8 encodes code points below 0x80, 0x800 and 0x10000 in 1, 2 and 3 bytes, the rest in 4.
_UTF8_LENGTH_LIMITS = (0x80, 0x800, 0x10000)
_UTF8_LENGTH = (1, 2, 3, 4)


@lru_cache(maxsize=1)
def _byte_level_char_to_byte() -> dict[str, int]:
    """Inverse of the GPT-2 byte-to-unicode table used by byte-level BPE vocabularies.

    Printable Latin-1 bytes map to themselves; the other 68 byte values map, in order,
    to the code points 256, 257, ... so that every byte has a visible character.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {chr(b): b for b in printable}
    next_code_point = 256
    for byte in range(256):
        if byte not in printable:
            table[chr(next_code_point)] = byte
            next_code_point += 1
    return table


def _decode_owned_bytes(owned_bytes: Sequence[tuple[int, int]]) -> _Unit:
    """Decode (byte, owner) pairs as UTF-8 with U+FFFD replacement, keeping owners.

    Each character is owned by the token of its last byte. The output equals
    `bytes(...).decode("utf-8", errors="replace")`, which replaces maximal invalid
    subsequences the same way as Rust's `String::from_utf8_lossy` used by `tokenizers`
    (checked on truncated, overlong, surrogate and out-of-range sequences).
    """
    data = bytes(byte for byte, _ in owned_bytes)
    text = data.decode("utf-8", errors="replace")
    if "\ufffd" not in text:
        # Valid UTF-8: walk the characters by their encoded lengths.
        unit: _Unit = []
        end = 0
        for char in text:
            end += _UTF8_LENGTH[bisect.bisect_right(_UTF8_LENGTH_LIMITS, ord(char))]
            unit.append((char, owned_bytes[end - 1][1]))
        return unit

    # With invalid bytes, an incremental decoder fed one byte at a time shows when each
    # character (or replacement character) comes out, and the byte that released it.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    unit = []
    for byte, owner in owned_bytes:
        for char in decoder.decode(bytes((byte,))):
            unit.append((char, owner))
    if owned_bytes:
        last_owner = owned_bytes[-1][1]
        for char in decoder.decode(b"", final=True):
            unit.append((char, last_owner))
    return unit


def _unit_text(unit: _Unit) -> str:
    return "".join(char for char, _ in unit)


def _step_byte_level(units: list[_Unit]) -> list[_Unit]:
    # `tokenizers` maps a token through the byte table only when every character of it
    # is in the table. Other tokens, such as an added token containing a space, give
    # their UTF-8 bytes as they are. All tokens are then fused.
    table = _byte_level_char_to_byte()
    owned_bytes: list[tuple[int, int]] = []
    for unit in units:
        try:
            owned_bytes.extend([(table[char], owner) for char, owner in unit])
        except KeyError:
            for char, owner in unit:
                owned_bytes.extend((byte, owner) for byte in char.encode("utf-8"))
    return [_decode_owned_bytes(owned_bytes)]


def _step_byte_fallback(units: list[_Unit]) -> list[_Unit]:
    # Consecutive `<0xHH>` tokens are decoded together. If the run is not valid UTF-8,
    # `tokenizers` emits one U+FFFD per byte token instead.
    result: list[_Unit] = []
    run: list[tuple[int, int]] = []

    def flush_run() -> None:
        if not run:
            return
        try:
            bytes(byte for byte, _ in run).decode("utf-8")
        except UnicodeDecodeError:
            result.extend([("\ufffd", owner)] for _, owner in run)
        else:
            result.append(_decode_owned_bytes(run))
        run.clear()

    for unit in units:
        match = _BYTE_TOKEN.fullmatch(_unit_text(unit))
        if match and unit:
            run.append((int(match.group(1), 16), unit[0][1]))
        else:
            flush_run()
            result.append(unit)
    flush_run()
    return result


def _step_replace(units: list[_Unit], pattern: str, content: str) -> list[_Unit]:
    result = []
    for unit in units:
        text = _unit_text(unit)
        new_unit: _Unit = []
        position = 0
        while position < len(unit):
            if pattern and text.startswith(pattern, position):
                # The replacement text is owned by the token of the first replaced char.
                owner = unit[position][1]
                new_unit.extend((char, owner) for char in content)
                position += len(pattern)
            else:
                new_unit.append(unit[position])
                position += 1
        result.append(new_unit)
    return result


def _step_strip(units: list[_Unit], content: str, start: int, stop: int) -> list[_Unit]:
    result = []
    for unit in units:
        begin = 0
        while begin < min(start, len(unit)) and unit[begin][0] == content:
            begin += 1
        end = len(unit)
        while len(unit) - end < stop and end > begin and unit[end - 1][0] == content:
            end -= 1
        result.append(unit[begin:end])
    return result


def _step_metaspace(units: list[_Unit], replacement: str, prepend_scheme: str) -> list[_Unit]:
    # The first token loses its replacement characters (the prefix space that the
    # normalizer added); every other occurrence becomes a space.
    result = []
    for index, unit in enumerate(units):
        drop = index == 0 and prepend_scheme != "never"
        new_unit: _Unit = []
        for char, owner in unit:
            if char != replacement:
                new_unit.append((char, owner))
            elif not drop:
                new_unit.append((" ", owner))
        result.append(new_unit)
    return result


def _apply_decoder(spec: dict, units: list[_Unit]) -> list[_Unit]:
    kind = spec.get("type")
    if kind == "Sequence":
        for step in spec["decoders"]:
            units = _apply_decoder(step, units)
        return units
    if kind == "ByteLevel":
        return _step_byte_level(units)
    if kind == "ByteFallback":
        return _step_byte_fallback(units)
    if kind == "Fuse":
        return [[pair for unit in units for pair in unit]]
    if kind == "Strip":
        return _step_strip(units, spec["content"], spec["start"], spec["stop"])
    if kind == "Replace":
        pattern = spec["pattern"]
        if "String" not in pattern:
            raise ValueError(f"unsupported tokenizer decoder: Replace with a regex pattern {pattern!r}")
        return _step_replace(units, pattern["String"], spec["content"])
    if kind == "Metaspace":
        scheme = spec.get("prepend_scheme")
        if scheme is None:  # files written before `prepend_scheme` existed store `add_prefix_space`
            scheme = "always" if spec.get("add_prefix_space", True) else "never"
        return _step_metaspace(units, spec["replacement"], scheme)
    raise ValueError(
        f"unsupported tokenizer decoder {kind!r}: character alignment supports ByteLevel, "
        "Metaspace and Sequence of Replace/ByteFallback/Fuse/Strip decoders"
    )


def _decoder_spec(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(
            f"{type(tokenizer).__name__} has no `tokenizers` backend; character alignment needs a fast "
            "tokenizer (load it with AutoTokenizer.from_pretrained(..., use_fast=True))"
        )
    if backend.decoder is None:
        raise ValueError(f"{type(tokenizer).__name__} has no decoder; character alignment cannot follow `decode`")
    # The decoder's own state is its JSON. Serialising the whole tokenizer instead would
    # copy the vocabulary on every call, about 70 ms for 150 K entries.
    return json.loads(backend.decoder.__getstate__())


def _special_token_ids(tokenizer) -> frozenset[int]:
    added = tokenizer.backend_tokenizer.get_added_tokens_decoder()
    return frozenset(token_id for token_id, token in added.items() if token.special)


def _align_deletions(raw: _Unit, expected: str) -> _Unit | None:
    """Match `expected` as a subsequence of `raw`, or return None when it is not one.

    `decode` may post-process the text: `clean_up_tokenization_spaces` removes spaces
    before punctuation. Such edits only delete characters, so a greedy left-to-right
    match recovers the owner of every remaining character.
    """
    kept: _Unit = []
    position = 0
    for char in expected:
        while position < len(raw) and raw[position][0] != char:
            position += 1
        if position == len(raw):
            return None
        kept.append(raw[position])
        position += 1
    return kept


def decode_with_spans(tokenizer, token_ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """Decode `token_ids` and return the text with the character span of every token.

    The text equals `tokenizer.decode(token_ids, skip_special_tokens=True)`. Span `i` is
    the half-open range `[start, end)` of text characters owned by `token_ids[i]`. The
    spans are contiguous and in order. A token that owns nothing, such as a skipped
    special token, a leading byte of a split character or a stripped space, gets an
    empty span at the current position.

    Raises ValueError when the tokenizer's decoder is of a kind this module cannot
    follow, or when the reconstruction does not match `decode`.
    """
    if hasattr(token_ids, "tolist"):
        token_ids = token_ids.tolist()
    token_ids = [int(token_id) for token_id in token_ids]

    spec = _decoder_spec(tokenizer)
    special_ids = _special_token_ids(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(token_ids)
    units: list[_Unit] = [
        [(char, index) for char in piece]
        for index, (token_id, piece) in enumerate(zip(token_ids, pieces))
        if token_id not in special_ids and piece is not None
    ]
    raw = [pair for unit in _apply_decoder(spec, units) for pair in unit]

    expected = tokenizer.decode(token_ids, skip_special_tokens=True)
    owned = raw if _unit_text(raw) == expected else _align_deletions(raw, expected)
    if owned is None:
        raise ValueError(
            "cannot align characters to tokens: the token pieces concatenate to "
            f"{_unit_text(raw)[:80]!r} but tokenizer.decode gives {expected[:80]!r}; "
            f"the {spec.get('type')} decoder of {type(tokenizer).__name__} is not fully supported"
        )

    spans: list[tuple[int, int]] = []
    char_index = 0
    for token_index in range(len(token_ids)):
        start = char_index
        while char_index < len(owned) and owned[char_index][1] == token_index:
            char_index += 1
        spans.append((start, char_index))
    if char_index != len(owned):
        raise ValueError(
            f"cannot align characters to tokens: character {char_index} of {expected[:80]!r} "
            "is owned by an earlier token than the one before it"
        )
    return expected, spans


def token_char_spans(tokenizer, token_ids: Sequence[int]) -> list[tuple[int, int]]:
    """Return the character span `(start, end)` of each token in `decode(token_ids)`.

    Same as `decode_with_spans(tokenizer, token_ids)[1]`, which documents the rules.
    """
    return decode_with_spans(tokenizer, token_ids)[1]


def char_to_token(spans: Sequence[tuple[int, int]], char_offset: int) -> int:
    """Return the index of the token whose span contains character `char_offset`.

    Raises ValueError when the offset lies outside the decoded text.
    """
    starts = [start for start, _ in spans]
    index = bisect.bisect_right(starts, char_offset) - 1
    # Empty spans share the start of the next non-empty one, so step back over them.
    while index >= 0 and not spans[index][0] <= char_offset < spans[index][1]:
        if spans[index][0] < spans[index][1]:
            break
        index -= 1
    if index < 0 or not spans[index][0] <= char_offset < spans[index][1]:
        text_length = spans[-1][1] if spans else 0
        raise ValueError(f"character offset {char_offset} is outside the decoded text of length {text_length}")
    return index
