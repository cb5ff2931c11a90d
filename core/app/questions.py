"""Group the questions a persona could not answer: normalised text, then fuzzy leader clustering.

Two texts ask the same thing when, after :func:`normalise` (case, accents,
punctuation, filler words, a few synonyms), most of their words match, a word
matching another equal or one typo apart (rapidfuzz). The synonym map is what
makes "how old are you" and "what's your age" meet (both become ``age you``);
fuzzy word matching absorbs typos and word order ("do u liek music").
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rapidfuzz import fuzz

#: Words that carry no topic in a question to a persona. Question words go too:
#: "how old" and "what age" ask the same; the topic words tell the groups apart.
# fmt: off
STOPWORDS = frozenset([
    "a", "an", "the", "is", "are", "am", "was", "were", "be", "been", "being", "do", "does", "did", "doing",
    "have", "has", "had", "having", "i", "me", "my", "mine", "we", "us", "our", "it", "its", "this", "that",
    "these", "those", "there", "here", "what", "whats", "which", "who", "whom", "whose", "when", "where", "why",
    "how", "s", "t", "re", "ve", "ll", "d", "m", "r", "to", "of", "in", "on", "at", "for", "from", "by", "with",
    "about", "as", "onto", "and", "or", "but", "so", "if", "then", "than", "too", "very", "just", "really",
    "also", "can", "could", "would", "will", "shall", "should", "may", "might", "must", "please", "tell", "say",
    "know", "let", "give", "show", "hey", "hi", "hello", "ok", "okay", "oh", "um", "uh", "well", "yeah", "yes",
    "no", "not", "much", "many",
])
# fmt: on

#: A small canonical map: words that ask the same thing become one word.
SYNONYMS: Mapping[str, str] = {
    **dict.fromkeys(["u", "ya", "ye", "yo", "your", "yours", "ur", "yourself", "thou", "thee", "thy"], "you"),
    **dict.fromkeys(["old", "older", "oldest", "aged", "ages", "birthday", "born"], "age"),
    **dict.fromkeys(
        [
            "built",
            "build",
            "builds",
            "made",
            "make",
            "makes",
            "created",
            "create",
            "creates",
            "designed",
            "design",
            "designs",
            "constructed",
            "construct",
            "creator",
            "builder",
            "maker",
            "designer",
        ],
        "build",
    ),
    **dict.fromkeys(["heavy", "weigh", "weighs", "weight", "mass", "kg", "kilos"], "weight"),
    **dict.fromkeys(["big", "size", "large", "tall", "huge", "small", "tiny"], "size"),
    **dict.fromkeys(["like", "likes", "enjoy", "enjoys", "love", "loves", "into", "fan"], "like"),
    **dict.fromkeys(["favorite", "favourite", "fav", "fave", "preferred"], "favourite"),
    **dict.fromkeys(["color", "colour", "colors", "colours"], "colour"),
    **dict.fromkeys(["called", "named", "name", "names"], "name"),
    **dict.fromkeys(["eat", "eats", "food", "hungry", "eating"], "eat"),
}

#: Similarity (0-100) at or above which a text joins a group.
THRESHOLD = 75.0
#: rapidfuzz ratio at or above which two words of four letters or more count as one (a typo).
WORD_TYPO = 75.0


def normalise(text: str) -> str:
    """Casefold, strip accents and punctuation, map synonyms, drop filler words; words sorted by first use.

    A text made only of filler ("what is it?") keeps its words without the
    filler removal, so it still has a key of its own.
    """
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    words = "".join(ch if ch.isalnum() else " " for ch in bare).split()
    canonical = [SYNONYMS.get(w, w) for w in words]
    kept = [w for w in canonical if w not in STOPWORDS]
    chosen = kept or canonical
    return " ".join(dict.fromkeys(chosen)) if chosen else text.strip()


def _same_word(a: str, b: str) -> bool:
    """Equal words, or (four letters and more) one typo apart: "liek" is "like", "wieght" is "weight"."""
    if a == b:
        return True
    return min(len(a), len(b)) >= 4 and fuzz.ratio(a, b) >= WORD_TYPO


def similarity(a: str, b: str) -> float:
    """How alike two normalised texts are, 0 to 100: the share of words they have in common (Dice).

    Words are compared one by one, so a typo costs little, while one shared
    word among different ones ("age comet", "water comet") stays a minority
    the threshold keeps apart. A character-level ratio over the whole text
    would let a long shared word outweigh the words that differ.
    """
    left, right = a.split(), b.split()
    if not left or not right:
        return 100.0 if left == right else 0.0
    free = list(right)
    matched = 0
    for word in left:
        for i, other in enumerate(free):
            if _same_word(word, other):
                matched += 1
                del free[i]
                break
    return 200.0 * matched / (len(left) + len(right))


@dataclass(frozen=True, slots=True)
class Group:
    """Questions that ask the same thing: how many, and the distinct texts most asked first."""

    label: str
    key: str
    count: int
    examples: tuple[str, ...]
    personas: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "label": self.label,
            "key": self.key,
            "count": self.count,
            "examples": list(self.examples),
            "personas": list(self.personas),
        }


def group_questions(
    asked: Iterable[tuple[str, str]], *, threshold: float = THRESHOLD, examples: int = 5
) -> list[Group]:
    """Group ``(persona, text)`` pairs; the biggest group first.

    Greedy leader clustering: the most frequent normalised texts become
    leaders first, and each text joins the most similar leader at or above
    ``threshold``, else leads a group of its own. Deterministic: ties are
    broken by the text itself.
    """
    texts: Counter[str] = Counter()
    who: dict[str, set[str]] = {}
    for persona, text in asked:
        texts[text] += 1
        who.setdefault(text, set()).add(persona)
    by_key: dict[str, Counter[str]] = {}
    for text, n in texts.items():
        by_key.setdefault(normalise(text), Counter())[text] += n
    keys = sorted(by_key, key=lambda k: (-sum(by_key[k].values()), k))
    leaders: list[str] = []
    members: dict[str, Counter[str]] = {}
    for key in keys:
        best, best_score = None, threshold
        for leader in leaders:
            score = similarity(key, leader)
            if score >= best_score and (best is None or score > best_score):
                best, best_score = leader, score
        if best is None:
            leaders.append(key)
            members[key] = Counter(by_key[key])
        else:
            members[best].update(by_key[key])
    groups = []
    for leader in leaders:
        found = members[leader]
        ranked = sorted(found, key=lambda t: (-found[t], t))
        personas = sorted({p for t in found for p in who[t]})
        groups.append(Group(ranked[0], leader, sum(found.values()), tuple(ranked[:examples]), tuple(personas)))
    groups.sort(key=lambda g: (-g.count, g.label))
    return groups
