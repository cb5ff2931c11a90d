"""The voice lint: every text a persona may post, rendered with sample data, checked against its ``voice:``.

What is checked is what comes out (see :mod:`personae.language.voice_samples`
for the data), on each platform in its own dialect and measure:

* length: past ``voice.max_length`` of a platform, or, where none is given, long
  enough that the platform would split the post (Telegram 4,096 and Discord
  2,000 UTF-16 units, Mastodon 500 characters with a URL counting 23, Bluesky
  300 graphemes): a warning at the text's ``file:line``;
* ``banned_words``: whole words, ignoring case and accents, in the text as
  written or as rendered: an error;
* ``required_variants``: an event reaction (or schedule entry) that says
  something without a variant for each of these platforms: an error at the event;
* ``alt_text: required``: a media item without ``alt`` text: an error.

Rendering runs under the template budget; a text that cannot render with its
sample data is not checked, and a note says so.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, nodes

from ..delivery.split import Measure, measure_length, split_message
from ..engine.persona import Action, Persona
from .errors import Diagnostic
from .media import kind_of, mime_of
from .schema import MediaFile, Reaction, Voice
from .source import DataPath, Source
from .templates import Dialect, Templates, Text
from .voice_samples import EventSamples, Sample, event_samples_for, reply_samples, schedule_samples


@dataclass(frozen=True, slots=True)
class PlatformVoice:
    """How a platform renders and counts a post, and when it splits one (``limit``; ``None``: never)."""

    dialect: Dialect
    measure: Measure
    limit: int | None
    unit: str = "characters"


#: Telegram is read as plain text (its default; with parse_mode html, tags would not count).
PLATFORM_VOICES: dict[str, PlatformVoice] = {
    "telegram": PlatformVoice("plain", "utf16", 4096),
    "discord": PlatformVoice("markdown", "utf16", 2000),
    "mastodon": PlatformVoice("social", "mastodon", 500),
    "bluesky": PlatformVoice("social", "bluesky", 300, "graphemes"),
}
#: Platforms without a known limit: measured only against a declared ``max_length``.
_UNLIMITED = PlatformVoice("plain", "utf16", None)
#: What is checked when ``voice.platforms`` does not say.
DEFAULT_PLATFORMS = tuple(PLATFORM_VOICES)


# --------------------------------------------------------------------------- banned words


#: Letters whose mark is part of the letter, so Unicode does not decompose them (Łódź is Lodz to a reader).
_STROKES = str.maketrans({"ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ŧ": "t", "ı": "i", "ƀ": "b", "ƶ": "z", "ɨ": "i"})


def fold(text: str) -> str:
    """``text`` without case or accents: casefolded, decomposed (NFKD), combining marks dropped, letters
    with a stroke read as their base letter, casefolded again (U+210C decomposes to a capital)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).translate(_STROKES).casefold()


@dataclass(frozen=True)
class BannedWords:
    """A list of banned words or phrases, matched whole, ignoring case and accents."""

    words: tuple[str, ...]
    pattern: re.Pattern[str] | None
    by_folded: Mapping[str, str]

    @classmethod
    def of(cls, words: Iterable[str]) -> BannedWords:
        """Compile ``words`` (a phrase matches with any run of spaces between its words)."""
        by_folded: dict[str, str] = {}
        for word in words:
            folded = " ".join(fold(word).split())
            if folded:
                by_folded.setdefault(folded, word)
        if not by_folded:
            return cls((), None, {})
        # Longest first, so that a phrase wins over a word it starts with.
        parts = [r"\s+".join(map(re.escape, w.split(" "))) for w in sorted(by_folded, key=len, reverse=True)]
        pattern = re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)")
        return cls(tuple(by_folded.values()), pattern, by_folded)

    def found(self, text: str) -> list[str]:
        """The banned words (as the author wrote them) that ``text`` contains, in order, each once."""
        if self.pattern is None or not text:
            return []
        out: list[str] = []
        for m in self.pattern.finditer(fold(text)):
            word = self.by_folded.get(" ".join(m.group().split()), m.group())
            if word not in out:
                out.append(word)
        return out


def literal_text(text: Text, templates: Templates) -> str:
    """The template text of ``text`` written as is (outside ``{{ }}`` and ``{% %}``), joined by line breaks."""
    if text.constant:
        return text.render({})
    try:
        tree = templates.parse(text.source)
    except (TemplateSyntaxError, RecursionError, MemoryError):
        return ""
    return "\n".join(n.data for n in tree.find_all(nodes.TemplateData))


# --------------------------------------------------------------------------- the checks


@dataclass(frozen=True, slots=True)
class _Over:
    """The longest rendering of a text on one platform, when it is too long."""

    length: int
    allowed: int
    pieces: int  # 0 when judged against a declared max_length
    origin: str


class _Checker:
    """Checks one persona's texts against its voice, collecting diagnostics."""

    def __init__(self, source: Source, persona: Persona, templates: Templates, notes: bool) -> None:
        self.src = source
        self.persona = persona
        self.voice = persona.spec.voice or Voice()
        self.templates = templates
        self.notes = notes
        self.banned = BannedWords.of(self.voice.banned_words)
        self.platforms = tuple(self.voice.platforms or DEFAULT_PLATFORMS)
        self.diags: list[Diagnostic] = []
        #: Events whose texts need data no linted timeline or emit gives: one note for them all.
        self.unsampled: list[str] = []

    def site(self, path: DataPath, action: Action, reaction: Reaction | None, samples: Sequence[Sample]) -> None:
        """Check every text ``action`` may post, on each platform it posts there."""
        if reaction is None:
            return
        plain = [p for p in self.platforms if p not in action.platforms]
        for text_path, text in self._texts(path, ("say",), action.say, reaction.say):
            self.text(text_path, text, plain, samples)
        for platform, texts in action.platforms.items():
            on = [platform] if platform in self.platforms else []
            variant = reaction.platforms.get(platform)
            raw = variant.say if variant is not None else None
            sub: DataPath = ("platforms", platform)
            if any(p in self.src.values for p in ((*path, *sub, "say"), (*path, *sub, "say", 0))):
                sub = (*sub, "say")  # written as a mapping: {say: …, media: …}
            for text_path, text in self._texts(path, sub, texts, raw):
                self.text(text_path, text, on, samples)
        self.alts((*path, "media"), reaction.media)
        for platform, variant in reaction.platforms.items():
            self.alts((*path, "platforms", platform, "media"), variant.media or ())
        if action.cooldown is not None and action.cooldown.say:
            # Said instead of the rule while it rests, on every platform: checked like its say.
            for text_path, text in self._texts(path, ("cooldown_say",), action.cooldown.say, reaction.cooldown_say):
                self.text(text_path, text, self.platforms, samples)

    def alts(self, path: DataPath, media: Sequence[MediaFile]) -> None:
        """Banned words in alt text: Mastodon and Bluesky show it to everyone who asks."""
        for i, m in enumerate(media):
            item = (*path, i) if (*path, i) in self.src.values else path
            at = (*item, "alt") if (*item, "alt") in self.src.values else item
            for word in self.banned.found(m.alt or ""):
                self.diags.append(self.src.diagnostic(at, f"banned word '{word}' in alt text (voice.banned_words)"))

    def notice(self, samples: Sequence[Sample]) -> None:
        """The ``limits.notice`` a user past the limit is told, on every platform."""
        limits = self.persona.limits
        raw = self.persona.spec.limits.notice if self.persona.spec.limits is not None else None
        if limits is None or not limits.notice.say:
            return
        for text_path, text in self._texts(("limits",), ("notice",), limits.notice.say, raw):
            self.text(text_path, text, self.platforms, samples)

    def phrases(self, samples: Sequence[Sample]) -> None:
        """Banned words in phrase options (each may be picked; lengths are checked where they are used)."""
        if self.banned.pattern is None:
            return
        for bank, texts in self.persona.phrases.items():
            raw = self.persona.spec.phrases.get(bank)
            for text_path, text in self._texts(("phrases", bank), (), texts, raw):
                self.text(text_path, text, [], samples)

    def _texts(
        self, path: DataPath, sub: DataPath, compiled: Sequence[Text], raw: Sequence[str] | None
    ) -> list[tuple[DataPath, Text]]:
        """Each text with the path of its own item in the file (``say[2]``, or ``say`` when it is a string)."""
        raw = list(raw or ())
        if [t.source for t in compiled] == raw:
            pairs = list(enumerate(compiled))
        else:  # some did not compile (the loader reported them): check those that do, at their own index
            pairs = [(i, t) for i, s in enumerate(raw) if (t := self._compile(s)) is not None]
        base = (*path, *sub)
        return [((*base, i) if (*base, i) in self.src.values else base, t) for i, t in pairs]

    def _compile(self, source: str) -> Text | None:
        try:
            return self.templates.text(source)
        except Exception:
            return None

    def text(self, path: DataPath, text: Text, platforms: Sequence[str], samples: Sequence[Sample]) -> None:
        """Render ``text`` with each sample, then check its length on ``platforms`` and its words."""
        banned: dict[str, str | None] = {w: None for w in self.banned.found(literal_text(text, self.templates))}
        over: dict[str, _Over] = {}
        failures: list[tuple[Sample, str]] = []
        voices = {p: PLATFORM_VOICES.get(p, _UNLIMITED) for p in platforms}
        checked = [p for p in platforms if p in self.voice.max_length or voices[p].limit is not None]
        dialects: list[Dialect] = ["plain", *sorted({voices[p].dialect for p in checked} - {"plain"})]
        for sample in samples:
            try:
                rendered = {d: text.render(sample.context, d) for d in dialects}
            except Exception as exc:
                failures.append((sample, _reason(exc)))
                continue
            for word in self.banned.found(rendered["plain"]):
                banned.setdefault(word, sample.origin)
            for p in checked:
                found = self._measure(p, voices[p], rendered[voices[p].dialect], sample.origin)
                if found is not None and (p not in over or found.length > over[p].length):
                    over[p] = found
        for word, origin in banned.items():
            where = f" (rendered with {origin})" if origin else ""
            self.diags.append(self.src.diagnostic(path, f"banned word '{word}'{where} (voice.banned_words)"))
        if over:
            self.diags.append(self.src.diagnostic(path, self._too_long(over), severity="warning"))
        if failures and all(s.stand_in for s, _ in failures) and path[0] == "events":
            if path[1] not in self.unsampled:
                self.unsampled.append(str(path[1]))
        elif failures and self.notes:
            sample, reason = failures[0]
            if len(failures) == len(samples):
                message = f"not checked (length, banned words): it cannot render with {sample.origin}: {reason}"
            else:
                message = (
                    f"checked with {len(samples) - len(failures)} of {len(samples)} samples: "
                    f"it cannot render with {sample.origin}: {reason}"
                )
            self.diags.append(self.src.diagnostic(path, message, severity="note"))

    def _measure(self, platform: str, voice: PlatformVoice, out: str, origin: str) -> _Over | None:
        declared = self.voice.max_length.get(platform)
        if declared is not None:
            if _surely_within(out, voice.measure, declared):
                return None
            n = measure_length(out, voice.measure)
            return _Over(n, declared, 0, origin) if n > declared else None
        assert voice.limit is not None
        if _surely_within(out, voice.measure, voice.limit):
            return None
        pieces = len(split_message(out, voice.limit, voice.dialect, voice.measure))
        if pieces <= 1:
            return None
        return _Over(measure_length(out, voice.measure), voice.limit, pieces, origin)

    def _too_long(self, over: Mapping[str, _Over]) -> str:
        parts = []
        for platform, o in over.items():
            unit = PLATFORM_VOICES.get(platform, _UNLIMITED).unit
            what = (
                f"{platform} would split it into {o.pieces} posts ({o.length:,} {unit}, limit {o.allowed:,})"
                if o.pieces
                else f"{o.length:,} {unit} on {platform}, over voice.max_length ({o.allowed:,})"
            )
            parts.append(what)
        origins = sorted({o.origin for o in over.values()})
        return f"too long: {'; '.join(parts)} (rendered with {', '.join(origins)})"

    def required_variants(self, path: DataPath, reaction: Reaction | None) -> None:
        """An event reaction or schedule entry that says something, without every required variant."""
        if reaction is None or not (reaction.say or reaction.platforms):
            return
        missing = [p for p in self.voice.required_variants if p not in reaction.platforms]
        if missing:
            what = f"event '{path[1]}'" if path[0] == "events" else "schedule entry"
            names = ", ".join(missing)
            message = (
                f"{what} has no {names} variant "
                f"(voice.required_variants): add {'them' if len(missing) > 1 else 'it'} under 'platforms:'"
            )
            self.diags.append(self.src.diagnostic(path, message, key=path[0] == "events"))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _surely_within(text: str, measure: Measure, limit: int) -> bool:
    """Whether ``text`` fits ``limit`` without counting: a UTF-16 unit or a grapheme is at most one code point
    (two units for astral ones); Bluesky's 3,000 bytes hold 750 code points; only Mastodon's URLs count more."""
    n = len(text)
    if measure == "utf16":
        return 2 * n <= limit
    if measure == "bluesky":
        return n <= min(limit, 750)
    return n <= limit and "://" not in text


# --------------------------------------------------------------------------- media


def alt_text_problems(source: Source) -> list[Diagnostic]:
    """Media items without ``alt`` text, read from the file (``media:`` on a reaction or a platform variant)."""
    data = source.data if isinstance(source.data, dict) else {}
    out: list[Diagnostic] = []
    for path, reaction in _reactions(data):
        out.extend(_media(source, (*path, "media"), reaction.get("media")))
        platforms = reaction.get("platforms")
        for name, variant in platforms.items() if isinstance(platforms, dict) else ():
            if isinstance(variant, dict):
                out.extend(_media(source, (*path, "platforms", name, "media"), variant.get("media")))
    return out


def _reactions(data: Mapping[str, Any]) -> list[tuple[DataPath, Mapping[str, Any]]]:
    found: list[tuple[DataPath, Any]] = []
    events = data.get("events")
    if isinstance(events, dict):
        found.extend((("events", name), r) for name, r in events.items())
    for section in ("replies", "schedule"):
        items = data.get(section)
        if isinstance(items, list):
            found.extend(((section, i), r) for i, r in enumerate(items))
    found.append((("fallback",), data.get("fallback")))
    return [(p, r) for p, r in found if isinstance(r, dict)]


def _media(source: Source, path: DataPath, media: Any) -> list[Diagnostic]:
    items = media if isinstance(media, list) else [] if media is None else [media]
    out = []
    for i, item in enumerate(items):
        alt = item.get("alt") if isinstance(item, dict) else None
        if isinstance(alt, str) and alt.strip():
            continue
        name = item.get("file") if isinstance(item, dict) else item
        mime = mime_of(name) if isinstance(name, str) else None
        if mime is not None and kind_of(mime) == "image":
            continue  # an image needs alt text whatever the voice says: the media lint reports it
        what = f"media '{name}'" if isinstance(name, str) else "a media item"
        where = (*path, i) if (*path, i) in source.values else path
        message = f"{what} has no alt text (voice.alt_text: required): add 'alt:' saying what it shows"
        out.append(source.diagnostic(where, message))
    return out


# --------------------------------------------------------------------------- public API


def voice_problems(
    source: Source,
    persona: Persona,
    samples: EventSamples,
    *,
    templates: Templates | None = None,
    notes: bool = True,
) -> list[Diagnostic]:
    """Everything the voice lint finds in one persona file (``notes``: say which texts could not be rendered)."""
    checker = _Checker(source, persona, templates or Templates(), notes)
    spec = persona.spec
    for name, action in persona.events.items():
        reaction = spec.events.get(name)
        checker.site(("events", name), action, reaction, event_samples_for(persona, name, samples))
        checker.required_variants(("events", name), reaction)
    for rule, action in zip(spec.replies, persona.replies, strict=False):
        checker.site(_path(action), action, rule, reply_samples(persona, rule, samples))
    if persona.fallback is not None:
        checker.site(("fallback",), persona.fallback, spec.fallback, reply_samples(persona, None, samples))
    for entry, scheduled in zip(spec.schedule, persona.schedule, strict=False):
        path = _path(scheduled.action)
        checker.site(path, scheduled.action, entry, schedule_samples(persona, scheduled.event, samples))
        checker.required_variants(path, entry)
    checker.notice(reply_samples(persona, None, samples))
    checker.phrases(reply_samples(persona, None, samples))
    if checker.unsampled and notes:
        names = checker.unsampled
        message = (
            f"{len(names)} event reaction(s) not checked for length and banned words: no timeline or emit "
            f"in this lint run raises {', '.join(names[:5])}{', ...' if len(names) > 5 else ''} with the data "
            "their texts use (lint the persona together with its timelines)"
        )
        checker.diags.append(source.diagnostic(("events",), message, key=True, severity="note"))
    if checker.voice.alt_text == "required":
        checker.diags.extend(alt_text_problems(source))
    return checker.diags


def _path(action: Action) -> DataPath:
    """``replies[3]`` as the data path ``("replies", 3)``."""
    m = re.fullmatch(r"(\w+)\[(\d+)\]", action.name)
    return (m.group(1), int(m.group(2))) if m else (action.name,)


__all__ = [
    "DEFAULT_PLATFORMS",
    "PLATFORM_VOICES",
    "BannedWords",
    "PlatformVoice",
    "alt_text_problems",
    "fold",
    "literal_text",
    "voice_problems",
]
