"""Reply throughput on a realistic FAQ persona: personae (log on and off) against python-aiml and RiveScript.

The trigger set is written the way real FAQ personas are, not to make routing
easy:

- messages are built from English's most frequent words (the ``wordfreq``
  package's list: a 2,500-word chat vocabulary, drawn with Zipf weights),
  so questions are full of "what", "is", "the", "how", "far" …;
- regex rules share their phrases: ``what is the … of TOPIC``, ``how far is
  TOPIC from …``, ``tell me about TOPIC``, ``when did TOPIC …`` and five more;
  the shared phrase is usually the longest literal of the pattern, the topic
  (one rarer word per rule) the most selective one;
- keyword rules mix one- and two-word keys; commands are real words;
- a pool of at least 50,000 distinct messages per size, and every timed
  round draws messages no earlier round used.

Half the messages match a rule, half fall through to the fallback; many of the
misses contain a shared phrase with no topic, the case that makes a router
try every pattern sharing it. python-aiml and RiveScript get the same rules
and the same messages, and every engine must give the same answer to a check
sample before anything is timed (the run exits 1 if not). With the log on,
the time includes the final flush, and the bench counts the rows in the SQLite
file afterwards and exits 1 if any is missing.

Two rates per engine: replies per wall-clock second, and replies per CPU
second of the whole process (the log writer is a second thread). Rounds are
interleaved across engines and each keeps its best round and reports its median.
Before timing, every engine answers one message per rule, untimed: personae
compiles each regex for RE2 when first tried (so loading stays fast), which a
running bot pays once; the warm-up's CPU time is printed (`--no-warm-up` to time
from cold).

    python bench/realistic.py                         # 100, 1,000 and 10,000 rules
    python bench/realistic.py --sizes 10000 --rounds 5
    python bench/realistic.py --quick                 # a smoke run
    python bench/realistic.py --no-rivescript         # RiveScript scans linearly: slow at 10,000 rules

Needs the bench extra: pip install -e ".[bench]"
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from personae.app.cli import SWITCH_INTERVAL
from personae.engine.engine import Engine
from personae.engine.messages import Chat, Incoming, User
from personae.language.loader import parse_persona
from personae.storage.store import Store

FALLBACK = "fallback"

#: Shared FAQ phrasings: (regex with {t} for the topic and an optional capture, AIML/RiveScript words with * for it).
SHAPES: tuple[tuple[str, str], ...] = (
    (r"\bwhat is the (?P<x>\w+) of (?:the )?{t}\b", "what is the * of {the}{t}"),
    (r"\bhow far is (?:the )?{t} from (?P<x>\w+)\b", "how far is {the}{t} from *"),
    (r"\btell me about (?:the )?{t}\b", "tell me about {the}{t}"),
    (r"\bwhen did (?:the )?{t} (?P<x>\w+)\b", "when did {the}{t} *"),
    (r"\bwhere is (?:the )?{t}\b", "where is {the}{t}"),
    (r"\bwhy does (?:the )?{t} (?P<x>\w+)\b", "why does {the}{t} *"),
    (r"\bcan you (?P<x>\w+) (?:the )?{t}\b", "can you * {the}{t}"),
    (r"\bdo you know (?:the )?{t}\b", "do you know {the}{t}"),
    (r"\bhow big is (?:the )?{t}\b", "how big is {the}{t}"),
)


@dataclass(frozen=True, slots=True)
class Rule:
    """One trigger: ``kind`` is keyword, keyword2 (two words), command or regex; ``words`` are its own words."""

    kind: str
    k: int
    words: tuple[str, ...]
    shape: int = 0


@dataclass
class Vocabulary:
    """The chat vocabulary (common words, Zipf-weighted) and the rarer words rules own."""

    common: list[str]
    weights: list[float]
    rare: list[str]
    phrase_words: frozenset[str] = field(default_factory=frozenset)


def vocabulary() -> Vocabulary:
    from wordfreq import top_n_list

    words = [w for w in top_n_list("en", 60_000) if w.isascii() and w.isalpha() and len(w) > 1]
    words = ["i", "a", *words]
    common = list(dict.fromkeys(words[:2_500]))
    # The bot's built-in commands (/subscribe, /emit …) are not the persona's to answer.
    builtin = {"subscribe", "unsubscribe", "emit", "reload", "replay", "help", "start"}
    rare = [w for w in dict.fromkeys(words[2_500:]) if len(w) >= 4 and w not in builtin]
    weights = [1.0 / (rank + 10) for rank in range(len(common))]
    phrase = frozenset(w for _, aiml in SHAPES for w in aiml.split() if w.isalpha())
    return Vocabulary(common, weights, rare, phrase)


def trigger_set(n: int, vocab: Vocabulary) -> list[Rule]:
    """``n`` rules: 30 % one-word keywords, 10 % two-word keywords, 20 % commands, 40 % regexes."""
    kinds = ["keyword"] * 3 + ["keyword2"] + ["command"] * 2 + ["regex"] * 4
    rare = iter(vocab.rare)
    rules = []
    for k in range(n):
        kind = kinds[k % 10]
        own = (next(rare), next(rare)) if kind == "keyword2" else (next(rare),)
        rules.append(Rule(kind, k, own, shape=(k // 10) % len(SHAPES)))
    return rules


def persona_yaml(rules: Sequence[Rule]) -> str:
    out = ["persona: bench", "name: Bench", "replies:"]
    for r in rules:
        if r.kind in ("keyword", "keyword2"):
            out.append(f"  - when: {{keywords: ['{' '.join(r.words)}']}}")
        elif r.kind == "command":
            out.append(f"  - when: {{command: {r.words[0]}}}")
        else:
            rx = "(?i)" + SHAPES[r.shape][0].format(t=r.words[0])
            out.append(f"  - when: {{regex: '{rx}'}}")
        out.append(f'    say: "r{r.k}"')
    out.append(f'fallback: {{say: "{FALLBACK}"}}')
    return "\n".join(out) + "\n"


def _regex_variants(r: Rule) -> list[str]:
    """The word patterns (with * wildcards) a regex rule stands for, optional 'the' spelt out."""
    shape = SHAPES[r.shape][1]
    return [shape.format(the=the, t=r.words[0]) for the in ("", "the ")]


def rivescript_source(rules: Sequence[Rule]) -> str:
    out = []
    for r in rules:
        if r.kind in ("keyword", "keyword2"):
            out += [f"+ [*] {' '.join(r.words)} [*]", f"- r{r.k}"]
        elif r.kind == "command":
            out += [f"+ {r.words[0]} [*]", f"- r{r.k}"]
        else:
            for pattern in _regex_variants(r):
                out += [f"+ [*] {pattern} [*]", f"- r{r.k}"]
    out += ["+ *", f"- {FALLBACK}"]
    return "\n".join(out) + "\n"


def aiml_source(rules: Sequence[Rule]) -> str:
    def cat(pattern: str, template: str) -> str:
        return f"<category><pattern>{pattern.upper()}</pattern><template>{template}</template></category>"

    def anywhere(words: str, template: str) -> list[str]:
        return [cat(p, template) for p in (words, f"* {words}", f"{words} *", f"* {words} *")]

    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<aiml version="1.0.1">']
    for r in rules:
        if r.kind in ("keyword", "keyword2"):
            out += anywhere(" ".join(r.words), f"r{r.k}")
        elif r.kind == "command":
            out += [cat(r.words[0], f"r{r.k}"), cat(f"{r.words[0]} *", f"r{r.k}")]
        else:
            for pattern in _regex_variants(r):
                out += anywhere(pattern, f"r{r.k}")
    out += [cat("*", FALLBACK), "</aiml>"]
    return "\n".join(out) + "\n"


class Messages:
    """Seeded message source: half hit one rule, half miss every rule (often with a shared phrase in them)."""

    def __init__(self, rules: Sequence[Rule], vocab: Vocabulary, seed: int) -> None:
        self.rules = rules
        self.vocab = vocab
        self.rng = random.Random(seed)
        # Filler never holds a word that could complete a shared phrase into a hit, nor a rule's own word.
        self.filler_words = [w for w in vocab.common if w not in vocab.phrase_words or w in ("i", "a", "is")]
        self.filler_weights = [vocab.weights[vocab.common.index(w)] for w in self.filler_words]
        owned = {w for r in rules for w in r.words}
        self.unused = [w for w in vocab.rare[len(owned) + 10 : len(owned) + 5_010] if w not in owned]

    def filler(self, lo: int, hi: int) -> str:
        n = self.rng.randint(lo, hi)
        return " ".join(self.rng.choices(self.filler_words, self.filler_weights, k=n))

    def one(self, hit: bool) -> str:
        rng, r = self.rng, self.rng.choice(self.rules)
        word = self.rng.choices(self.filler_words, self.filler_weights)[0]
        the = rng.choice(("", "the "))
        if hit:
            if r.kind in ("keyword", "keyword2"):
                text = f"{self.filler(0, 7)} {' '.join(r.words)} {self.filler(0, 7)}"
            elif r.kind == "command":
                text = rng.choice([f"/{r.words[0]}", f"/{r.words[0]} {self.filler(1, 3)}"])
            else:
                pattern = SHAPES[r.shape][1].format(the=the, t=r.words[0]).replace("*", word)
                text = f"{self.filler(0, 4)} {pattern} {self.filler(0, 3)}"
        else:
            other = rng.choice(self.unused)
            shape = rng.choice(SHAPES)[1]
            text = rng.choice(
                [
                    # A shared phrase about something no rule knows: the router's hard case.
                    f"{self.filler(0, 4)} {shape.format(the=the, t=other).replace('*', word)} {self.filler(0, 3)}",
                    f"{self.filler(0, 3)} {shape.format(the=the, t=other).replace('*', word)}",
                    f"/{other} {self.filler(0, 2)}",
                    # Only one word of a two-word key.
                    f"{self.filler(1, 5)} {r.words[0]} {self.filler(1, 5)}"
                    if r.kind == "keyword2"
                    else self.filler(3, 12),
                    self.filler(3, 14),
                ]
            )
        text = " ".join(text.split())
        if not text.startswith("/") and rng.random() < 0.3:
            text += "?"
        return text

    def warm_up(self) -> list[str]:
        """One message hitting each rule, in rule order (see --no-warm-up)."""
        keep = self.rules
        out = []
        for r in keep:
            self.rules = [r]
            out.append(self.one(True))
        self.rules = keep
        return out

    def draw(self, count: int) -> list[str]:
        return [self.one(i % 2 == 0) for i in range(count)]


# -- the engines --------------------------------------------------------------------------------------------------


class Personae:
    """personae's Engine, optionally logging every exchange to a real SQLite file."""

    def __init__(self, source: str, db: Path | None) -> None:
        self.persona = parse_persona(source, "bench.yaml")
        self.db = db
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.chats = [Chat(str(i)) for i in range(50)]
        self.users = [User(str(i), f"user{i}") for i in range(50)]
        self.answered = 0

    async def open(self) -> None:
        if self.db is not None:
            self.store = await Store(self.db).open()
        self.engine = Engine({"bench": self.persona}, store=self.store)

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()

    async def answer(self, texts: Sequence[str]) -> list[str]:
        assert self.engine is not None
        handle, out, base = self.engine.handle, [], self.answered
        for i, text in enumerate(texts, base):
            incoming = Incoming(
                "bench", "console", self.chats[i % 50], self.users[i % 50], text, bot_username="benchbot"
            )
            replies = await handle(incoming)
            out.append(replies[0].text if replies else "")
        self.answered += len(texts)
        return out

    async def flush(self) -> None:
        if self.store is not None:
            await self.store.flush()


def rivescript_engine(rules: Sequence[Rule]) -> Callable[[str], str]:
    from rivescript import RiveScript

    rs = RiveScript()
    rs.stream(rivescript_source(rules))
    rs.sort_replies()
    return lambda text: str(rs.reply("bench", text))


def aiml_engine(rules: Sequence[Rule], folder: Path) -> Callable[[str], str]:
    import aiml

    path = folder / "bench.aiml"
    path.write_text(aiml_source(rules), encoding="utf-8")
    kernel = aiml.Kernel()
    kernel.verbose(False)
    kernel.learn(str(path))
    return lambda text: str(kernel.respond(text, "bench"))


# -- timing -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rate:
    """One timed round: replies per wall second and per CPU second of the process."""

    wall: float
    cpu: float


def timed_sync(fn: Callable[[str], str], texts: Sequence[str], budget: float) -> Rate:
    gc.collect()
    done, t0, c0 = 0, time.perf_counter(), time.process_time()
    while done < len(texts):
        for text in texts[done : done + 50]:
            fn(text)
        done = min(done + 50, len(texts))
        if time.perf_counter() - t0 >= budget:
            break
    return Rate(done / (time.perf_counter() - t0), done / max(time.process_time() - c0, 1e-9))


async def timed_personae(p: Personae, texts: Sequence[str], budget: float) -> Rate:
    gc.collect()
    done, t0, c0 = 0, time.perf_counter(), time.process_time()
    while done < len(texts):
        await p.answer(texts[done : done + 50])
        done = min(done + 50, len(texts))
        await asyncio.sleep(0)  # a bot waits on its network between batches; the log writer runs meanwhile
        if time.perf_counter() - t0 >= budget:
            break
    await p.flush()
    return Rate(done / (time.perf_counter() - t0), done / max(time.process_time() - c0, 1e-9))


@dataclass
class Row:
    size: int
    distinct: int
    results: dict[str, list[Rate]]


ENGINES = ("personae log off", "personae log on", "python-aiml", "RiveScript")


async def measure(size: int, args: argparse.Namespace, vocab: Vocabulary, folder: Path) -> Row:
    rules = trigger_set(size, vocab)
    source = Messages(rules, vocab, seed=size)
    sample = source.draw(args.check)
    say = lambda msg: print(f"· {size:,} rules: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    say("loading the engines…")
    yaml = persona_yaml(rules)
    off, on = Personae(yaml, None), Personae(yaml, folder / f"log-{size}.db")
    peers: dict[str, Callable[[str], str]] = {"python-aiml": aiml_engine(rules, folder)}
    if args.rivescript:
        peers["RiveScript"] = rivescript_engine(rules)
    await off.open()
    await on.open()
    try:
        say(f"checking answers on {len(sample):,} messages…")
        want = await off.answer(sample)
        hits = sum(a != FALLBACK for a in want)
        if not 0.4 <= hits / len(want) <= 0.6:
            sys.exit(f"the sample should hit about half the time; it hit {hits} of {len(want)}")
        others = {"personae (log on)": await on.answer(sample), **{n: [f(t) for t in sample] for n, f in peers.items()}}
        for name, got in others.items():
            wrong = [(t, w, g) for t, w, g in zip(sample, want, got, strict=True) if w != g]
            if wrong:
                t, w, g = wrong[0]
                sys.exit(f"{name} disagrees on {len(wrong)} of {len(sample)} messages, e.g. {t!r}: {w!r} vs {g!r}")
        if args.warm_up:
            # personae compiles each regex for RE2 when it is first tried (loading stays fast);
            # a running bot pays that once. Every engine sees one message per rule, untimed.
            warm = source.warm_up()
            t0 = time.process_time()
            await off.answer(warm)
            say(f"warm-up: {len(warm):,} messages, personae {time.process_time() - t0:.2f} CPU-s (untimed)")
            await on.answer(warm)
            for fn in peers.values():
                for text in warm:
                    fn(text)
        budget = args.budget / args.rounds
        per_round = max(args.pool // args.rounds, 1)
        rounds = [source.draw(per_round) for _ in range(args.rounds)]
        distinct = len(set(sample).union(*rounds))
        if distinct < args.min_distinct:
            sys.exit(f"only {distinct:,} distinct messages; raise --pool")
        say(f"timing ({args.rounds} rounds of {per_round:,} new messages; {distinct:,} distinct in all)…")
        results: dict[str, list[Rate]] = {name: [] for name in ENGINES if name != "RiveScript" or args.rivescript}
        for texts in rounds:
            results["personae log off"].append(await timed_personae(off, texts, budget))
            results["personae log on"].append(await timed_personae(on, texts, budget))
            for name, fn in peers.items():
                results[name].append(timed_sync(fn, texts, budget))
        await on.flush()
        assert on.store is not None and on.db is not None
        await on.store.close()
        on.store = None
        with sqlite3.connect(on.db) as db:
            ins, outs = db.execute("SELECT sum(direction = 'in'), sum(direction = 'out') FROM interactions").fetchone()
        if ins != on.answered or outs != on.answered:
            sys.exit(
                f"log incomplete: {on.answered:,} replies, but {ins:,} 'in' and {outs:,} 'out' rows in the database"
            )
        say(f"log checked: {ins:,} in and {outs:,} out rows for {on.answered:,} replies")
        return Row(size, distinct, results)
    finally:
        await off.close()
        await on.close()


def show(rows: Sequence[Row], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="realistic FAQ persona: replies/s, best round (median) · replies per CPU-second, best round")
    table.add_column("rules", justify="right")
    table.add_column("distinct msgs", justify="right")
    names = [n for n in ENGINES if n in rows[0].results]
    for n in names:
        table.add_column(n, justify="right")
    table.add_column("log on vs aiml (wall)", justify="right")
    table.add_column("log on vs aiml (CPU)", justify="right")
    for r in rows:
        cells = []
        for n in names:
            best = max(r.results[n], key=lambda x: x.wall)
            med = statistics.median(x.wall for x in r.results[n])
            cpu = max(x.cpu for x in r.results[n])
            cells.append(f"{best.wall:,.0f} ({med:,.0f})\n{cpu:,.0f}/cpu-s")
        on = max(x.wall for x in r.results["personae log on"])
        aiml = max(x.wall for x in r.results["python-aiml"])
        on_cpu = max(x.cpu for x in r.results["personae log on"])
        aiml_cpu = max(x.cpu for x in r.results["python-aiml"])
        table.add_row(f"{r.size:,}", f"{r.distinct:,}", *cells, f"{on / aiml:.2f}×", f"{on_cpu / aiml_cpu:.2f}×")
    Console(width=max(Console().width, 140)).print(table)
    sizes = " ".join(str(s) for s in args.sizes)
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"command: python bench/realistic.py --sizes {sizes} --budget {args.budget:g} --rounds {args.rounds}"
        + ("" if args.rivescript else " --no-rivescript")
        + ("" if args.warm_up else " --no-warm-up")
    )


async def main_async(args: argparse.Namespace) -> None:
    vocab = vocabulary()
    print(
        f"· vocabulary: {len(vocab.common):,} common words, {len(vocab.rare):,} rarer words for rules",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as d:
        rows = [await measure(size, args, vocab, Path(d)) for size in args.sizes]
    show(rows, args)


def main() -> None:
    sys.setswitchinterval(SWITCH_INTERVAL)  # as the personae CLI does
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000], help="rule counts")
    parser.add_argument("--budget", type=float, default=6.0, help="seconds per engine and size, all rounds (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, each with new messages (default 3)")
    parser.add_argument("--pool", type=int, default=150_000, help="messages for the timed rounds")
    parser.add_argument("--min-distinct", type=int, default=50_000, help="fail below this many distinct messages")
    parser.add_argument("--check", type=int, default=1_000, help="messages all engines must answer alike")
    parser.add_argument("--no-rivescript", dest="rivescript", action="store_false", help="leave RiveScript out")
    parser.add_argument(
        "--no-warm-up", dest="warm_up", action="store_false", help="time from cold: no untimed message per rule first"
    )
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 rules, short budget: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.budget, args.pool, args.check, args.min_distinct = [100, 1_000], 1.5, 60_000, 400, 50_000
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
