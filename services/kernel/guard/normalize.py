"""Normalisation against obfuscation, for the guard's detectors (pure, no I/O).

``fold`` maps a text onto the form the rules and the classifier read: NFKC, invisible
characters dropped, homoglyphs (Cyrillic/Greek look-alikes) folded onto Latin letters, case
folded, leetspeak folded inside words that mix letters and digits, letters spelled out with
separators ("i g n o r e", "i.g.n.o.r.e") joined, whitespace collapsed.

``payloads`` finds text hidden *inside* a text: Unicode tag characters (an invisible ASCII
copy), base64 blocks that decode to readable text, and the ROT13 reading of the text; the
detectors scan each payload like a text of its own.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

# Zero-width, soft hyphen, bidi controls, word joiners, BOM: they hide text from a reviewer.
INVISIBLE: Final = re.compile("[\u00ad\u180e\u200b-\u200f\u2060-\u2064\ufeff\u202a-\u202e\u2066-\u2069]")
# Unicode tag characters U+E0000..U+E007F spell ASCII invisibly.
TAGS: Final = re.compile("[\U000e0000-\U000e007f]+")

_HOMOGLYPHS: Final = str.maketrans(
    {
        # Cyrillic
        "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
        "т": "t", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w",
        "ɡ": "g", "ӏ": "l",
        "А": "a", "В": "b", "Е": "e", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p", "С": "c",
        "Т": "t", "У": "y", "Х": "x", "І": "i", "Ј": "j", "Ѕ": "s",
        # Greek
        "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
        "υ": "u", "χ": "x", "Α": "a", "Β": "b", "Ε": "e", "Ι": "i", "Κ": "k", "Μ": "m", "Ν": "n",
        "Ο": "o", "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x", "Ζ": "z", "Η": "h",
        # Typographic forms NFKC keeps
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u201c": '"', "\u201d": '"',
        "\u201e": '"', "\u00ab": '"', "\u00bb": '"', "\u2010": "-", "\u2011": "-", "\u2012": "-",
        "\u2013": "-", "\u2014": "-", "\u2212": "-",
    }
)
_LEET: Final = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
# A word mixing letters with leet digits/symbols ("1gn0r3", "pr3v10us", "@ll"); plain numbers
# ("2024", "E11.9") stay as they are: at least two letters and one leet character.
_LEET_WORD: Final = re.compile(r"(?<![\w@$])(?=[\w@$]*[a-zäöüß][\w@$]*[a-zäöüß])(?=[\w@$]*[013457@$])"
                               r"[\w@$]{3,}")
# Letters spelled out one by one with a separator: "i g n o r e", "i.g.n.o.r.e", "i-g-n-o-r-e".
_SPELLED: Final = re.compile(r"(?<!\w)(?:[a-zäöüß][ ._\-*]){3,}[a-zäöüß](?!\w)")
_SPACES: Final = re.compile(r"\s+")


def strip_invisible(text: str) -> str:
    return INVISIBLE.sub("", TAGS.sub("", text))


@lru_cache(maxsize=256)  # the injection scan and the topic lexicon read the same texts
def fold(text: str) -> str:
    """The canonical form every detector reads (see the module docstring)."""
    if text.isascii():  # most texts: nothing to normalise, hide or fold but case
        text = text.lower()
    else:
        text = unicodedata.normalize("NFKC", text)
        text = strip_invisible(text).translate(_HOMOGLYPHS).casefold()
    if any(c in text for c in "013457@$"):
        text = _LEET_WORD.sub(lambda m: m.group(0).translate(_LEET), text)
    if _SPELLED.search(text):
        text = _SPELLED.sub(lambda m: re.sub(r"[ ._\-*]", "", m.group(0)), text)
    return _SPACES.sub(" ", text).strip()


@dataclass(frozen=True, slots=True)
class Payload:
    kind: str  # "unicode_tags", "base64", "rot13"
    text: str


_B64: Final = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
_ROT13: Final = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZabcdefghijklm",
)
_MAX_PAYLOADS: Final = 8


def _readable(text: str) -> bool:
    if len(text) < 8:
        return False
    letters = sum(c.isalpha() or c.isspace() for c in text)
    return letters / len(text) > 0.8 and " " in text.strip()


_ROT13_BYTES: Final = bytes.maketrans(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    b"nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZabcdefghijklm",
)


def rot13(text: str) -> str:
    if text.isascii():  # bytes.translate: a table look-up per byte instead of a dict's per character
        return text.encode("ascii").translate(_ROT13_BYTES).decode("ascii")
    return text.translate(_ROT13)


def payloads(text: str, *, rot13: bool = True) -> list[Payload]:
    """Text hidden inside ``text``: tag characters, base64 that decodes to words, ROT13."""
    found: list[Payload] = []
    for match in TAGS.finditer(text):
        hidden = "".join(chr(ord(c) - 0xE0000) for c in match.group(0) if 0x20 <= ord(c) - 0xE0000 < 0x7F)
        if hidden.strip():
            found.append(Payload("unicode_tags", hidden))
    for match in _B64.finditer(text):
        if len(found) >= _MAX_PAYLOADS:
            break
        token = match.group(0)
        try:
            decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if _readable(decoded):
            found.append(Payload("base64", decoded))
    # ROT13 is its own inverse; the rules decide whether the reading says anything.
    if rot13:
        found.append(Payload("rot13", text.translate(_ROT13)))
    return found


# Quoted spans in folded text (typographic quotes are ASCII by now). A single quote must not
# sit inside a word ("don't", "geht's").
_QUOTED: Final = re.compile(r"\"([^\"]{6,400})\"|(?<!\w)'([^']{6,400})'(?!\w)")
_MIN_FRAME_WORDS: Final = 4


def split_quotes(folded: str) -> tuple[str, list[str]]:
    """The text with quoted passages replaced by ``"…"``, and the passages — when the text
    around them is a frame of its own (at least four words: "a customer wrote …, please
    categorise"). Otherwise the text unchanged and no passages: a prompt that is nothing but
    a quotation is read as it is."""
    passages = [m.group(1) or m.group(2) for m in _QUOTED.finditer(folded)]
    if not passages:
        return folded, []
    frame = _QUOTED.sub('"…"', folded)
    if len(re.findall(r"\w+", frame)) < _MIN_FRAME_WORDS:
        return folded, []
    return frame, passages
