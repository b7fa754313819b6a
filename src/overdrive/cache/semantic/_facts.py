"""What a text asserts that an embedding's cosine misses: the facts the guard compares.

Two sentences can sit at cosine 0.95 and mean opposite things: "turn on dark
mode" and "turn off dark mode", "$500" and "$5,000", "Alice sued Bob" and "Bob
sued Alice". :func:`facts_of` pulls out, once per text and with nothing but one
regular expression, a few word lists and sets, what such pairs differ in:
negation cues, numbers, dates and times, names and their order, antonym
families, the words beside role markers ("from X to Y", "X than Y"), and the
content words.

>>> facts = facts_of("Turn off dark mode on the iPhone before 5 pm on March 3rd")
>>> facts.negations, facts.numbers, sorted(facts.dates), sorted(facts.polar)
(0, (), ['d3', 'march', 't5'], ['power-', 'time-'])
>>> sorted(facts.entities), facts_of("Is it not safe to cut five of them?").negations
(['iphone'], 1)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Facts", "facts_of"]


@dataclass(frozen=True, slots=True)
class Facts:
    """What one text asserts, in forms that are cheap to compare."""

    negations: int  # negation cues: "not", "n't", "never", "without", "nobody", ...
    numbers: tuple[str, ...]  # normalised values, sorted: "5" and "five" are both "5"
    dates: frozenset[str]  # months, weekdays, years, "tomorrow", "last week", times, days
    entities: frozenset[str]  # names, acronyms, identifiers, paths, quoted strings (lowercase)
    order: tuple[str, ...]  # names in the order they first appear, sentence-initial ones too
    polar: frozenset[str]  # antonym families with their side: "power+" for on/enable/start
    roles: frozenset[tuple[str, str]]  # (word, slot) beside markers: ("paris", "from>")
    words: frozenset[str]  # every word and name, lowercase: where the other's names are sought
    content: frozenset[str]  # stems of the words that are neither stopwords nor numbers


def facts_of(text: str) -> Facts:
    """The facts of ``text``; compute them once per text, compare them many times."""
    return _Reader(_tokens(text)).facts()


Token = tuple[str, str, str]  # (kind, token as written, lowercase)

# One token: a plain word (most tokens: tried first), a dotted abbreviation ("U.S.",
# "p.m."), a URL, a path, a dotted or snake_case identifier, a command-line flag, a
# quoted string (seen, not consumed: its words count too), a clock time, a number, a
# word, or sentence punctuation.
_TOKEN = re.compile(
    r"""(?P<plain>[A-Za-z]+(?:'[A-Za-z]+)*(?![\w./(]))
    |(?P<abbr>(?:[A-Za-z]\.){2,})
    |(?P<code>https?://[^\s"'<>]+[\w/]|(?:[~.]{0,2}/)?(?:[\w.-]+/)+[\w.-]*\w
        |[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?:\(\))?|\w*_\w+|\w+\(\)|(?<![\w-])--?[A-Za-z][\w-]*)
    |(?=(?P<quote>"[^"\n]{1,40}"|`[^`\n]{1,40}`))
    |(?P<time>\d{1,2}:\d\d\b)
    |(?P<num>[$€£]?\d+(?:,\d{3})*(?:\.\d+)?(?:%|(?:st|nd|rd|th|s|k|m|bn)\b)?)
    |(?P<word>[A-Za-z]+(?:'[A-Za-z]+)*)
    |(?P<stop>[.!?;:])""",
    re.VERBOSE,
)


def _tokens(text: str) -> list[Token]:
    tokens = []
    for match in _TOKEN.finditer(text.replace("’", "'")):
        kind = match.lastgroup or "word"
        token = match.group(kind)
        kind = "word" if kind == "plain" else kind
        tokens.append((kind, token, token.lower()))
    return tokens


class _Reader:
    """One pass over a text's tokens, sorting each into the facts it bears on."""

    __slots__ = ("dates", "entities", "negations", "numbers", "order", "tokens")

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.negations = 0
        self.numbers: list[str] = []
        self.dates: set[str] = set()
        self.entities: set[str] = set()
        self.order: list[str] = []

    def facts(self) -> Facts:
        self._read()
        lowered = [lower for kind, _, lower in self.tokens if kind == "word"]
        return Facts(
            negations=self.negations,
            numbers=tuple(sorted(self.numbers)),
            dates=frozenset(self.dates),
            entities=frozenset(self.entities),
            order=tuple(dict.fromkeys(self.order)),
            polar=frozenset(_polar(self.tokens)),
            roles=frozenset(_roles(self.tokens)),
            words=frozenset(lowered) | self.entities | frozenset(_initials(self.tokens)),
            content=frozenset(_stem(w) for w in lowered if _content(w)),
        )

    def _read(self) -> None:
        initial, index, tokens = True, 0, self.tokens
        while index < len(tokens):
            kind, token, lower = tokens[index]
            if kind == "word" and lower in NUMBER_WORDS and not self._pronoun(index):
                index = self._read_number_words(index)
            elif kind == "stop":
                # "Mr. Bush": the full stop of a title does not start a sentence.
                initial = initial or _neighbour(tokens, index, -1) not in TITLES
            else:
                index = self._read_token(index, kind, token, lower, initial=initial)
                initial = False
            index += 1

    def _pronoun(self, index: int) -> bool:
        # "no one", "the one", "one of them": a pronoun; any number is elsewhere.
        if self.tokens[index][2] != "one":
            return False
        before, after = _neighbour(self.tokens, index, -1), _neighbour(self.tokens, index, 1)
        return before in {"no", "the", "which", "any", "every", "each", "this"} or after == "of"

    def _read_number_words(self, index: int) -> int:
        """Read "two hundred fifty" as 250; return the index of its last word."""
        run = [self.tokens[index][2]]
        while _neighbour(self.tokens, index + 1, 0) in NUMBER_WORDS:
            index += 1
            run.append(self.tokens[index][2])
        self.numbers.append(_number_text(_words_value(run)))
        return index

    def _read_token(self, index: int, kind: str, token: str, lower: str, *, initial: bool) -> int:
        if kind == "word":
            self._read_word(index, token, lower, initial=initial)
        elif kind == "num":
            return self._read_number(index, lower)
        elif kind == "time":
            self.dates.add(f"t{lower}")
        elif kind == "abbr":
            self._read_abbreviation(token, lower)
        else:  # a URL, path, identifier or quoted string: a name, as written
            self._name(lower.strip('"`.,;:!? '))
        return index

    def _name(self, name: str) -> None:
        self.entities.add(name)
        self.order.append(name)

    def _read_abbreviation(self, token: str, lower: str) -> None:
        if lower in {"a.m.", "p.m."}:
            return  # read with the number before it
        if any(c.isupper() for c in token):
            self._name(lower.replace(".", ""))

    def _read_word(self, index: int, token: str, lower: str, *, initial: bool) -> None:
        if token.islower() and lower not in _SPECIAL and "'" not in lower:
            return  # most words: no name, date, negation nor ordinal (the fast path)
        base = lower.removesuffix("'s")
        if lower in NEGATIONS or lower.endswith("n't"):
            self.negations += 1
        if self._read_date(index, token, base, initial=initial):
            return
        if base in ORDINALS:
            self.numbers.append(f"#{ORDINALS[base]}")
        elif _looks_like_a_name(token, initial=initial) and base not in NOT_NAMES:
            if len(token) == 1 and _neighbour(self.tokens, index, 1) == ".":
                return  # a middle initial: "Anthony M. Kennedy"
            self._name(base)
        elif initial and token[0].isupper() and base not in STOPWORDS | NOT_NAMES:
            self.order.append(base)  # "Alice sued Bob": a name we cannot tell from a verb

    def _read_date(self, index: int, token: str, lower: str, *, initial: bool) -> bool:
        if lower in MONTHS and _a_month(token, lower, initial=initial):
            self.dates.add(MONTHS[lower])
            return True
        before = _neighbour(self.tokens, index, -1)
        if lower in DATE_WORDS or (lower in RELATIVE_UNITS and before in RELATIVES):
            self.dates.add(f"{before} {lower}" if lower in RELATIVE_UNITS else lower)
            return True
        return lower in RELATIVES and _neighbour(self.tokens, index, 1) in RELATIVE_UNITS

    def _read_number(self, index: int, lower: str) -> int:
        """Read a number and the unit or scale after it; return the index of its last token."""
        value, suffix = _split_number(lower)
        after = _neighbour(self.tokens, index, 1)
        if len(value) == 4 and value.isdigit() and 1800 <= int(value) <= 2099 and suffix in "s":
            self.dates.add(f"y{value}{suffix}")
        elif suffix in _DAY_SUFFIXES and value.isdigit() and _near(self.tokens, index, MONTHS):
            self.dates.add(f"d{int(value)}")  # "March 3rd", "3 March", "August 24": a day
        elif suffix in _DAY_SUFFIXES[1:]:
            self.numbers.append(f"#{value}")
        elif after in {"am", "pm", "a.m.", "p.m."}:
            self.dates.add(f"t{value}")
            return index + 1
        elif after in SCALES and suffix == "":
            self.numbers.append(_number_text(float(value) * SCALES[after]))
            return index + 1
        else:
            percent = "%" if suffix == "%" or after in {"percent", "pct", "per"} else ""
            self.numbers.append(_number_text(float(value) * SCALES.get(suffix, 1)) + percent)
        return index


_DAY_SUFFIXES = ("", "st", "nd", "rd", "th")


def _neighbour(tokens: list[Token], index: int, step: int) -> str:
    other = index + step
    return tokens[other][2] if 0 <= other < len(tokens) else ""


def _near(tokens: list[Token], index: int, words: Iterable[str]) -> bool:
    around = {_neighbour(tokens, index, step) for step in (-2, -1, 1, 2)}
    return not around.isdisjoint(words)


def _a_month(token: str, lower: str, *, initial: bool) -> bool:
    """ "may", "march" and "jan" are months only capitalised, and "May I ...?" is not one."""
    if lower in {"may", "march", "jan"} and not token[0].isupper():
        return False
    return not (initial and lower == "may")


def _looks_like_a_name(token: str, *, initial: bool) -> bool:
    """Capitalised mid-sentence, or an acronym or mixed case ("iPhone") wherever it stands."""
    rest = token[1:]
    return (token[0].isupper() and not initial) or rest != rest.lower()


def _split_number(lower: str) -> tuple[str, str]:
    digits = lower.lstrip("$€£").replace(",", "")
    end = len(digits.rstrip("%abcdefghijklmnopqrstuvwxyz"))
    return digits[:end], digits[end:]


def _number_text(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.6g}"


def _words_value(words: list[str]) -> float:
    total, current = 0.0, 0.0
    for word in words:
        value = NUMBER_WORDS[word]
        if value >= 1000:
            total += max(current, 1.0) * value
            current = 0.0
        elif value == 100:
            current = max(current, 1.0) * value
        else:
            current += value
    return total + current


def _initials(tokens: list[Token]) -> Iterator[str]:
    """Initials of runs of capitalised words: "United States" meets "US", "Dept. of Justice" DOJ."""
    run: list[str] = []  # initials, small joining words in lowercase
    for kind, token, lower in [*tokens, ("stop", ".", ".")]:
        if kind == "word" and token[0].isupper() and (run or lower not in STOPWORDS):
            run.append(lower[0])
        elif run and kind == "word" and lower in {"of", "for", "and"}:
            run.append(lower[0].upper())
        else:
            if len(run) >= 2:
                yield "".join(run).lower()
                yield "".join(c for c in run if c.islower())
            run = []


def _polar(tokens: list[Token]) -> Iterator[str]:
    """The antonym families present, each with its side: "turn off" gives "power-"."""
    for index, (kind, _, lower) in enumerate(tokens):
        if kind != "word":
            continue
        if lower in POLAR:
            yield POLAR[lower]
        elif lower in PARTICLES and _a_particle(tokens, index):
            yield PARTICLES[lower]


def _a_particle(tokens: list[Token], index: int) -> bool:
    """ "on", "off", "up", "down", "in", "out" count after a verb that takes them."""
    before = {_neighbour(tokens, index, step) for step in (-1, -2, -3)}
    return not before.isdisjoint(PARTICLE_VERBS)


def _roles(tokens: list[Token]) -> Iterator[tuple[str, str]]:
    """The words beside role markers: "from Paris to London" gives paris from> and <to."""
    for index, (kind, _, lower) in enumerate(tokens):
        if kind != "word" or lower not in ROLE_MARKERS:
            continue
        after = _content_after(tokens, index)
        if after:
            yield after, f"{lower}>"
        # Every content word just before: "a cat bigger than" puts cat (and bigger) first.
        for kind_before, _, before in reversed(tokens[max(0, index - 3) : index]):
            if kind_before == "stop":
                break
            if before not in STOPWORDS and before not in ROLE_MARKERS:
                yield before, f"<{lower}"


def _content_after(tokens: list[Token], index: int) -> str:
    for kind, _, lower in tokens[index + 1 : index + 4]:
        if kind == "stop":
            return ""
        if lower not in STOPWORDS:
            return lower
    return ""


def _content(word: str) -> bool:
    return word not in NOT_CONTENT and word not in PARTICLE_VERBS and not word.endswith("n't")


@lru_cache(maxsize=8192)
def _stem(word: str) -> str:
    """A crude stem, enough that "passwords" meets "password" and "resetting" meets "reset"."""
    word = word.removesuffix("'s")
    for suffix in ("ies", "ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


# -- the word lists ----------------------------------------------------------------


def _words(text: str) -> list[str]:
    return text.split()


NEGATIONS = frozenset(
    _words("not no never none nobody nothing neither nor nowhere cannot without noone")
)
_UNITS = _words("zero one two three four five six seven eight nine ten eleven twelve thirteen")
_TEENS = _words("fourteen fifteen sixteen seventeen eighteen nineteen")
_TENS = _words("twenty thirty forty fifty sixty seventy eighty ninety")
SCALES = {"hundred": 100, "thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}
SCALES |= {"k": 1e3, "m": 1e6, "bn": 1e9}
NUMBER_WORDS: dict[str, float] = {w: i for i, w in enumerate(_UNITS + _TEENS)}
NUMBER_WORDS |= {w: 20 + 10 * i for i, w in enumerate(_TENS)} | {"dozen": 12}
NUMBER_WORDS |= {w: v for w, v in SCALES.items() if len(w) > 2}
_ORDINAL_WORDS = _words(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth"
)
ORDINALS = {w: i + 1 for i, w in enumerate(_ORDINAL_WORDS)} | {"twentieth": 20, "hundredth": 100}
_MONTHS = _words(
    "january february march april may june july august september october november december"
)
MONTHS = {m: m for m in _MONTHS} | {m[:3]: m for m in _MONTHS} | {"sept": "september"}
DATE_WORDS = frozenset(
    _words("""monday tuesday wednesday thursday friday saturday sunday yesterday today
    tomorrow tonight noon midnight morning afternoon evening overnight weekend summer winter
    autumn""")
)
RELATIVES = frozenset(_words("last next this previous coming past"))
RELATIVE_UNITS = frozenset(_words("week month year quarter decade century night"))
TITLES = frozenset(
    _words("mr mrs ms dr st jr sr gen sen rep gov lt col sgt prof inc corp co vs no")
)
NOT_NAMES = frozenset(_words("i i'm i've i'd i'll ok mr mrs ms dr president sen rep gov prof"))
STOPWORDS = frozenset(
    _words("""a about above after again against all am an and any are as at be because been
    before being below between both but by can could did do does doing down during each few
    for from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves also may might must shall us let get got what's how's it's that's
    there's i'm i've you're way ways please tell know want need like say said says""")
)
# Words another check compares already: the content gate weighs the rest.
NOT_CONTENT = STOPWORDS | NEGATIONS | NUMBER_WORDS.keys() | ORDINALS.keys() | MONTHS.keys()
NOT_CONTENT |= DATE_WORDS | RELATIVES | RELATIVE_UNITS | TITLES | {"percent", "pct", "cent"}
# Words _read_word must look at even in lowercase.
_SPECIAL = NEGATIONS | MONTHS.keys() | DATE_WORDS | RELATIVES | RELATIVE_UNITS | ORDINALS.keys()
ROLE_MARKERS = frozenset(_words("from to into than versus vs"))

# Antonym families: (family, words on its "+" side, words on its "-" side). Words of
# one side of a family are near-synonyms ("turn on", "enable", "start"), so a
# paraphrase keeps its side while a reversal flips it.
_FAMILIES = (
    (
        "power",
        "enable activate start launch open show unlock allow permit connect mount",
        "disable deactivate stop halt close hide lock deny block forbid disconnect unmount",
    ),
    (
        "install",
        "install subscribe login include accept approve",
        "uninstall unsubscribe logout exclude reject refuse decline",
    ),
    (
        "level",
        """increase raise grow expand maximize maximum max more most higher highest bigger
        biggest larger largest greater greatest faster longer heavier upper above rise rose
        risen gain gained add append insert plus ascend""",
        """decrease reduce lower shrink shrank minimize minimum min less least fewer fewest
        lowest smaller smallest slower shorter lighter below fall fell fallen drop remove
        delete minus descend""",
    ),
    (
        "time",
        "after later afterwards future next newer newest latest",
        "before earlier prior past previous older oldest",
    ),
    (
        "trade",
        "buy bought purchase import download receive borrow",
        "sell sold export upload send sent lend",
    ),
    (
        "outcome",
        "win won true pass succeed success correct valid positive",
        "lose lost false fail failure incorrect wrong invalid negative",
    ),
    ("kin", "parent ancestor superclass", "child children descendant subclass"),
    ("code", "encrypt encode compress serialize", "decrypt decode decompress deserialize"),
    (
        "place",
        "north east left inside internal public",
        "south west right outside external private",
    ),
    ("quality", "better best good cheap cheaper cheapest safe", "worse worst bad expensive unsafe"),
)


def _inflections(word: str) -> set[str]:
    """A word and the regular forms of it a reader would still call the same word."""
    stem = word[:-1] if word.endswith("e") else word
    double = word + word[-1] if len(word) <= 4 and word[-1] in "pgnt" else word
    return {word, word + "s", word + "es", stem + "ed", stem + "ing", double + "ed", double + "ing"}


POLAR = {
    form: f"{family}{sign}"
    for family, plus, minus in _FAMILIES
    for sign, words in (("+", plus), ("-", minus))
    for word in words.split()
    for form in _inflections(word)
}
PARTICLES = {"on": "power+", "off": "power-", "up": "level+", "down": "level-"}
PARTICLES |= {"in": "install+", "out": "install-"}
PARTICLE_VERBS = frozenset(
    _words("""turn turned turning turns switch switched switching power powered toggle flip
    set log logged sign signed opt opted zoom scale scaled shut ramp""")
)
