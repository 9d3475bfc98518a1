"""Character-to-token alignment on real tokenizers trained in the test."""

import json

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tlpo.alignment import _byte_level_char_to_byte, char_to_token, decode_with_spans, token_char_spans

CORPUS = [
    "hello world, how are you today?",
    "안녕하세요 세계입니다. 오늘 날씨가 좋네요.",
    "你好世界，我们今天去公园吧。",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "café crème à la française",
] * 20

# Text with scripts, emoji and a rare CJK character that the tiny vocabularies never saw,
# so they must fall back to bytes or split a character across tokens.
MIXED = "hello 안녕 세계 你好 鼇 😀 مرحبا café 🦀!"


@pytest.fixture(scope="module")
def byte_level_tokenizer():
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|eot|>", "<|user|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|eot|>")
    wrapped.add_tokens(["<think>", "two words"])
    return wrapped


def _byte_fallback_bpe() -> Tokenizer:
    """A sentencepiece-style BPE (`▁` for spaces) whose vocabulary has all 256 `<0xHH>` tokens."""
    base = Tokenizer(models.BPE(unk_token="<unk>"))
    base.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    base.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=150, special_tokens=["<unk>", "<s>", "</s>"]))
    model = json.loads(base.to_str())["model"]
    vocab = dict(model["vocab"])
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in model["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True))
    tokenizer.normalizer = base.normalizer
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>"])
    return tokenizer


@pytest.fixture(scope="module")
def byte_fallback_tokenizer():
    tokenizer = _byte_fallback_bpe()
    # The decoder that `transformers` builds for Llama-2 and Mistral sentencepiece models.
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module")
def metaspace_tokenizer():
    tokenizer = _byte_fallback_bpe()
    tokenizer.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")


def _encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _check_invariants(tokenizer, ids):
    text, spans = decode_with_spans(tokenizer, ids)
    assert text == tokenizer.decode(ids, skip_special_tokens=True)
    assert len(spans) == len(ids)
    assert spans[0][0] == 0
    assert spans[-1][1] == len(text)
    for (_, previous_end), (start, end) in zip(spans, spans[1:]):
        assert start == previous_end
        assert end >= start
    return text, spans


@pytest.mark.parametrize("fixture", ["byte_level_tokenizer", "byte_fallback_tokenizer", "metaspace_tokenizer"])
def test_spans_cover_decoded_text(fixture, request):
    tokenizer = request.getfixturevalue(fixture)
    for line in [*CORPUS[:5], MIXED]:
        _check_invariants(tokenizer, _encode(tokenizer, line))


def test_byte_level_prefix_decodes_match_spans(byte_level_tokenizer):
    # A prefix of the ids decodes to the text up to the end of its last token's span,
    # except where the prefix ends inside a character (decode then shows U+FFFD).
    ids = _encode(byte_level_tokenizer, MIXED)
    text, spans = _check_invariants(byte_level_tokenizer, ids)
    checked = 0
    for length in range(1, len(ids) + 1):
        prefix_text = byte_level_tokenizer.decode(ids[:length])
        if "\ufffd" in prefix_text:
            continue
        assert prefix_text == text[: spans[length - 1][1]]
        checked += 1
    assert checked > len(ids) // 2


def test_split_character_owned_by_last_token(byte_level_tokenizer):
    ids = _encode(byte_level_tokenizer, "a 鼇")
    pieces = byte_level_tokenizer.convert_ids_to_tokens(ids)
    text, spans = _check_invariants(byte_level_tokenizer, ids)
    assert text == "a 鼇"
    # The rare character is not in the 400-entry vocabulary, so its three UTF-8 bytes
    # come as several tokens: only the one that completes it owns it.
    owners = [index for index, (start, end) in enumerate(spans) if start <= 2 < end]
    assert owners == [len(ids) - 1]
    assert len(pieces) >= 3
    assert spans[-2][1] - spans[-2][0] <= 1  # the leading-byte token owns at most the space
    assert char_to_token(spans, 2) == len(ids) - 1


def test_multibyte_scripts_map_to_right_tokens(byte_level_tokenizer):
    ids = _encode(byte_level_tokenizer, MIXED)
    text, spans = _check_invariants(byte_level_tokenizer, ids)
    for char in ["안", "세", "你", "鼇", "😀", "م", "é", "🦀"]:
        offset = text.index(char)
        token = char_to_token(spans, offset)
        start, end = spans[token]
        assert start <= offset < end
        # Decoding up to and including that token shows the character completely.
        assert char in byte_level_tokenizer.decode(ids[: token + 1])
        # Decoding up to the token before does not.
        assert char not in byte_level_tokenizer.decode(ids[:token])


def test_byte_fallback_tokens_own_completed_character(byte_fallback_tokenizer):
    ids = _encode(byte_fallback_tokenizer, "hello 鼇 😀")
    pieces = byte_fallback_tokenizer.convert_ids_to_tokens(ids)
    assert "<0xF0>" in pieces  # the emoji is spelled as four byte tokens
    text, spans = _check_invariants(byte_fallback_tokenizer, ids)
    assert text == "hello 鼇 😀"
    emoji_token = char_to_token(spans, text.index("😀"))
    assert pieces[emoji_token] == "<0x80>"
    assert [pieces[i] for i in range(emoji_token - 3, emoji_token)] == ["<0xF0>", "<0x9F>", "<0x98>"]
    for leading in range(emoji_token - 3, emoji_token):
        assert spans[leading][0] == spans[leading][1]
    han_token = char_to_token(spans, text.index("鼇"))
    assert pieces[han_token].startswith("<0x")


def test_invalid_byte_run_gives_one_replacement_per_token(byte_fallback_tokenizer):
    # A truncated emoji (three of its four bytes) is invalid UTF-8: `tokenizers` writes
    # one U+FFFD per byte token, and each of those tokens owns its own U+FFFD.
    byte_ids = byte_fallback_tokenizer.convert_tokens_to_ids(["<0xF0>", "<0x9F>", "<0x98>"])
    ids = _encode(byte_fallback_tokenizer, "hello") + byte_ids
    text, spans = _check_invariants(byte_fallback_tokenizer, ids)
    assert text.endswith("\ufffd" * 3)
    assert [text[start:end] for start, end in spans[-3:]] == ["\ufffd"] * 3


def test_truncated_character_at_end(byte_level_tokenizer):
    # A response cut off by max_new_tokens can end inside a character: decode shows
    # U+FFFD for the incomplete bytes, and the last token owns it.
    ids = _encode(byte_level_tokenizer, "안녕 鼇")
    text, spans = _check_invariants(byte_level_tokenizer, ids[:-1])
    assert text.endswith("\ufffd")
    assert char_to_token(spans, len(text) - 1) == len(ids) - 2


@pytest.mark.parametrize(
    "data",
    [
        b"a\xf0\x9f",
        b"\xf0\x9fa",
        b"\x80\x80a",
        b"\xe4\xbd\xa0\xe5",
        b"\xed\xa0\x80x",
        b"\xc0\xafz",
        b"\xf4\x90\x80\x80",
    ],
    ids=[
        "truncated_end",
        "truncated_middle",
        "stray_continuation",
        "valid_then_truncated",
        "surrogate",
        "overlong",
        "above_max",
    ],
)
def test_invalid_bytes_match_decode(byte_level_tokenizer, data):
    # One token per byte, spelled with the byte-level alphabet.
    alphabet = {byte: char for char, byte in _byte_level_char_to_byte().items()}
    ids = byte_level_tokenizer.convert_tokens_to_ids([alphabet[byte] for byte in data])
    text, spans = _check_invariants(byte_level_tokenizer, ids)
    assert text == data.decode("utf-8", errors="replace")
    assert "\ufffd" in text


def test_special_tokens_own_nothing(byte_level_tokenizer):
    eot = byte_level_tokenizer.convert_tokens_to_ids("<|eot|>")
    user = byte_level_tokenizer.convert_tokens_to_ids("<|user|>")
    ids = [user, *_encode(byte_level_tokenizer, "안녕 hello"), eot]
    text, spans = _check_invariants(byte_level_tokenizer, ids)
    assert text == "안녕 hello"
    assert spans[0] == (0, 0)
    assert spans[-1] == (len(text), len(text))


def test_added_tokens_keep_their_text(byte_level_tokenizer):
    ids = _encode(byte_level_tokenizer, "<think>two words 안녕")
    text, spans = _check_invariants(byte_level_tokenizer, ids)
    assert text == "<think>two words 안녕"
    assert text[slice(*spans[0])] == "<think>"
    assert text[slice(*spans[1])] == "two words"


def test_metaspace_first_token_space_dropped(metaspace_tokenizer):
    ids = _encode(metaspace_tokenizer, "hello 안녕")
    text, spans = _check_invariants(metaspace_tokenizer, ids)
    assert not text.startswith(" ")
    owner = char_to_token(spans, text.index("안"))
    assert "안" in metaspace_tokenizer.convert_ids_to_tokens(ids[owner])


def test_cleanup_spaces_are_aligned():
    # A WordLevel model is not BPE, so `transformers` applies clean_up_tokenization_spaces,
    # which deletes the space before "." and ",".
    vocab = {"<unk>": 0, "▁hello": 1, "▁.": 2, "▁world": 3, "▁,": 4, "▁안녕": 5}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, clean_up_tokenization_spaces=True)
    ids = [1, 4, 3, 2, 5]
    text, spans = _check_invariants(wrapped, ids)
    assert text == "hello, world. 안녕"
    assert [text[start:end] for start, end in spans] == ["hello", ",", " world", ".", " 안녕"]


def test_unsupported_decoder_raises():
    tokenizer = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1, "##s": 2}, unk_token="<unk>"))
    tokenizer.decoder = decoders.WordPiece()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    with pytest.raises(ValueError, match="unsupported tokenizer decoder 'WordPiece'"):
        token_char_spans(wrapped, [1, 2])


def test_char_to_token_out_of_range():
    spans = [(0, 0), (0, 3), (3, 3), (3, 5), (5, 5)]
    assert char_to_token(spans, 0) == 1
    assert char_to_token(spans, 2) == 1
    assert char_to_token(spans, 3) == 3
    assert char_to_token(spans, 4) == 3
    with pytest.raises(ValueError, match="offset 5 is outside"):
        char_to_token(spans, 5)
    with pytest.raises(ValueError, match="offset -1 is outside"):
        char_to_token(spans, -1)
