"""A small writer of the raw MIME bytes the sink sends: header fields (RFC 5322 folding, RFC 2047 encoded
words) and a multipart/alternative body (RFC 2045/2046), written straight to bytes.

The standard library's ``email`` package builds the same message through its header registry, content
manager and generator — about 3.5 ms of CPU per mail, more than everything else the sink does for it. This
writer makes the same choices in a few passes over strings, with the C codecs of ``binascii``:

- **Header values**: printable ASCII is written as is, folded at spaces so no line passes 78 characters;
  anything else (non-ASCII, control characters, a word too long to fold, text that looks like an encoded
  word) is written whole as UTF-8 encoded words (``=?utf-8?q?…?=`` or ``=?utf-8?b?…?=``, whichever is
  shorter), each line ≤ 78 characters, never splitting a character between two words. CR and LF in a value
  can therefore never start a header of their own.
- **Display names** (``From``): an atom phrase as is, a quoted string if it holds specials, encoded words
  (the restricted RFC 2047 §5(3) set) if it is not ASCII.
- **Bodies**: the standard library's rule — ``7bit`` if ASCII with lines ≤ 78, ``8bit`` if only the lines
  are short, else quoted-printable or base64, whichever is shorter on the first ten lines; line breaks
  normalised to LF, a final line break added.
- **Line ends**: LF, as the standard library's default policy writes them (SES accepts both).

Every choice is checked against the standard library's parser in tests/test_mime_writer.py: the parsed
headers and bodies equal those of the message the ``email`` package builds, for every template and locale.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
import sys

MAX_LINE = 78  # RFC 5322 §2.1.1: lines SHOULD be at most 78 characters
_PRINTABLE = re.compile(r"[\x20-\x7e]*\Z")  # \Z: "$" would also match before a final newline
_ATOM_PHRASE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?: [A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*\Z")
_BOUNDARY_WIDTH = len(repr(sys.maxsize - 1))
_WORD_OVERHEAD = len("=?utf-8?q??=")

# bytes written as themselves in a "Q" encoded word; everything else is =XX and the space is "_".
# The phrase set is RFC 2047 §5(3)'s (safe in a display name); text allows every printable but "=?_".
_Q_PHRASE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_TEXT = frozenset(range(0x21, 0x7f)) - frozenset(b"=?_")


def _q_char(ch: str, safe: frozenset[int]) -> str:
    out = []
    for byte in ch.encode("utf-8"):
        if byte == 0x20:
            out.append("_")
        elif byte in safe:
            out.append(chr(byte))
        else:
            out.append(f"={byte:02X}")
    return "".join(out)


def encoded_words(value: str, first_room: int, room: int, phrase: bool = False) -> list[str]:
    """``value`` as UTF-8 encoded words: the first at most ``first_room`` characters long, the others at
    most ``room`` (each word fits the line it goes on). Q or B, whichever is shorter for the whole value."""
    safe = _Q_PHRASE if phrase else _Q_TEXT
    q_parts = [_q_char(ch, safe) for ch in value]
    raw_len = len(value.encode("utf-8"))
    use_q = sum(map(len, q_parts)) <= 4 * ((raw_len + 2) // 3)
    words: list[str] = []
    limit = first_room - _WORD_OVERHEAD
    if use_q:
        current: list[str] = []
        size = 0
        for part in q_parts:
            if current and size + len(part) > limit:
                words.append("=?utf-8?q?" + "".join(current) + "?=")
                current, size, limit = [], 0, room - _WORD_OVERHEAD
            current.append(part)
            size += len(part)
        if current or not words:
            words.append("=?utf-8?q?" + "".join(current) + "?=")
        return words
    chunk = bytearray()
    for ch in value:
        data = ch.encode("utf-8")
        if chunk and 4 * ((len(chunk) + len(data) + 2) // 3) > limit:
            words.append("=?utf-8?b?" + base64.b64encode(bytes(chunk)).decode("ascii") + "?=")
            chunk, limit = bytearray(), room - _WORD_OVERHEAD
        chunk += data
    if chunk or not words:
        words.append("=?utf-8?b?" + base64.b64encode(bytes(chunk)).decode("ascii") + "?=")
    return words


def fold(name: str, tokens: list[str]) -> str | None:
    """``Name: token token …`` folded before a token wherever a line would pass 78 characters (the space
    before a token is where the line breaks); None if a line cannot be kept within 78 or would be blank."""
    lines: list[str] = []
    line = f"{name}:"
    for token in tokens:
        if len(line) + 1 + len(token) <= MAX_LINE:
            line += " " + token
            continue
        if not line.strip() or len(line) > MAX_LINE:
            return None
        lines.append(line)
        line = " " + token
    if not line.strip() or len(line) > MAX_LINE:
        return None
    lines.append(line)
    return "\n".join(lines)


def unstructured(name: str, value: str) -> str:
    """One header field of free text (``Subject``, ``X-…``): as is if printable ASCII that folds within
    78-character lines, else encoded words."""
    if _PRINTABLE.match(value) and "=?" not in value:
        folded = fold(name, value.split(" "))
        if folded is not None:
            return folded
    words = encoded_words(value, MAX_LINE - len(name) - 2, MAX_LINE - 1)
    return f"{name}: " + "\n ".join(words)


def phrase(name: str, first_room: int) -> list[str]:
    """A display name as phrase tokens: atoms, one quoted string, or encoded words."""
    if _ATOM_PHRASE.match(name) and "=?" not in name:
        return name.split(" ")
    if _PRINTABLE.match(name) and "=?" not in name:
        return ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    return encoded_words(name, first_room, MAX_LINE - 1, phrase=True)


def mailbox(header: str, display_name: str, address: str) -> str:
    """``Header: Display Name <address>`` (or just the address), folded; ``address`` an ASCII addr-spec."""
    if not display_name:
        return fold(header, [address]) or f"{header}: {address}"
    tokens = [*phrase(display_name, MAX_LINE - len(header) - 2), f"<{address}>"]
    return fold(header, tokens) or f"{header}: " + " ".join(tokens)


def body(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, encoded bytes ending in LF) of a UTF-8 text part — the same choice as the
    standard library's ``email.contentmanager``: 7bit, 8bit, or the shorter of quoted-printable and base64."""
    lines = text.encode("utf-8").splitlines()
    data = b"\n".join(lines) + b"\n"
    if max(map(len, lines), default=0) <= MAX_LINE:
        return ("7bit" if data.isascii() else "8bit"), data
    sniff = b"\n".join(lines[:10]) + b"\n"
    if len(binascii.b2a_qp(sniff, istext=True)) > len(binascii.b2a_base64(sniff)):
        return "base64", base64.encodebytes(data)
    return "quoted-printable", binascii.b2a_qp(data, istext=True)


def new_boundary() -> str:
    """The standard library's form: fifteen ``=``, a random 19-digit number, ``==``."""
    return "=" * 15 + f"{random.randrange(sys.maxsize):0{_BOUNDARY_WIDTH}d}" + "=="


def multipart_alternative(headers: list[str], trailing: list[str], parts: list[tuple[str, str]]) -> bytes:
    """The whole message: ``headers`` (already folded ``Name: value`` fields), MIME-Version and the
    multipart Content-Type, then ``trailing`` headers, then one part per (subtype, text) — in the order
    given, the plainest first (RFC 2046 §5.1.4)."""
    encoded = [(subtype, *body(text)) for subtype, text in parts]
    boundary = new_boundary()
    marker = b"--" + boundary.encode("ascii")
    while any(marker in data for _, _, data in encoded):
        boundary = new_boundary()
        marker = b"--" + boundary.encode("ascii")
    out = [*headers, "MIME-Version: 1.0", f'Content-Type: multipart/alternative;\n boundary="{boundary}"', *trailing]
    chunks = ["\n".join(out).encode("ascii"), b"\n\n"]  # every field is ASCII by construction
    for subtype, cte, data in encoded:
        chunks += [marker, f'\nContent-Type: text/{subtype}; charset="utf-8"\nContent-Transfer-Encoding: {cte}\n\n'
                   .encode("ascii"), data, b"\n"]
    chunks += [marker, b"--\n"]
    return b"".join(chunks)
