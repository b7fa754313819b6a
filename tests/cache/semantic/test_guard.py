"""The facts a text asserts and the guard's checks, each on its own (no model)."""

from __future__ import annotations

import pytest

from overdrive.cache.semantic._facts import facts_of
from overdrive.cache.semantic._guard import (
    CHECKS,
    DEFAULT_THRESHOLD,
    MAX_CONTENT_CHANGE,
    Guard,
    content_agrees,
    reason,
)

# -- facts ---------------------------------------------------------------------


def test_negation_cues_are_counted() -> None:
    assert facts_of("Is it safe?").negations == 0
    assert facts_of("Is it not safe?").negations == 1
    assert facts_of("Why isn't it safe without a lock?").negations == 2
    assert facts_of("Nobody can't say never").negations == 3


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        ("the top 5 results", ("5",)),
        ("the top five results", ("5",)),
        ("it costs $1,000", ("1000",)),
        ("two hundred fifty people", ("250",)),
        ("2.5 million users", ("2500000",)),
        ("up 3 percent, then 3%", ("3%", "3%")),
        ("the third attempt and the 3rd try", ("#3", "#3")),
        ("no one of them", ()),
    ],
)
def test_numbers_are_normalised(text: str, numbers: tuple[str, ...]) -> None:
    assert facts_of(text).numbers == numbers


@pytest.mark.parametrize(
    ("text", "dates"),
    [
        ("What happened in March 2023?", {"march", "y2023"}),
        ("meet me tomorrow at 3:30", {"tomorrow", "t3:30"}),
        ("call at 5 pm on Friday", {"t5", "friday"}),
        ("sales fell last week", {"last week"}),
        ("on August 24", {"august", "d24"}),
        ("May I come in?", set()),  # the modal verb, not the month
    ],
)
def test_dates_and_times(text: str, dates: set[str]) -> None:
    assert facts_of(text).dates == dates


def test_names_acronyms_identifiers_and_quotes_are_entities() -> None:
    facts = facts_of('Does the NASA API call os.path.join in src/app.py for "dark mode" on iOS?')
    assert facts.entities == {"nasa", "api", "os.path.join", "src/app.py", "dark mode", "ios"}


def test_a_sentence_start_is_not_a_name_but_keeps_its_place_in_the_order() -> None:
    facts = facts_of("Alice sued Bob.")
    assert facts.entities == {"bob"}
    assert facts.order == ("alice", "bob")


def test_initials_of_a_name_are_words_of_the_text() -> None:
    assert {"us", "eu"} <= facts_of("The United States and the European Union met").words


def test_antonym_families_keep_their_side() -> None:
    assert facts_of("Turn on dark mode").polar == {"power+"}
    assert facts_of("Enable dark mode").polar == {"power+"}
    assert facts_of("Turn dark mode off").polar == {"power-"}
    assert facts_of("Is 5 bigger than 3?").polar == {"level+"}
    assert facts_of("Put it on the table").polar == frozenset()  # "on" as a preposition


def test_roles_are_the_words_beside_the_markers() -> None:
    assert facts_of("flights from Paris to London").roles == {
        ("paris", "from>"),
        ("paris", "<to"),
        ("london", "to>"),
        ("flights", "<from"),
        ("flights", "<to"),
    }


def test_content_words_are_stemmed_and_skip_stopwords() -> None:
    assert facts_of("How do I reset my passwords?").content == {"reset", "password"}


# -- each check on its own --------------------------------------------------------

SAME = 0.99  # a similarity that clears any threshold: only the check decides


def refused_by(check: str, first: str, second: str) -> str | None:
    return Guard(0.0, checks=(check,)).judge(SAME, facts_of(first), facts_of(second))


@pytest.mark.parametrize(
    ("check", "first", "second"),
    [
        ("negation", "Can I delete the file?", "Can I not delete the file?"),
        ("negation", "Is it safe?", "Isn't it safe?"),
        ("numbers", "the top 5 movies", "the top 10 movies"),
        ("numbers", "a $500 loan", "a $5,000 loan"),
        ("dates", "flights in March", "flights in May"),
        ("dates", "the 2023 results", "the 2024 results"),
        ("dates", "the weather tomorrow", "the weather yesterday"),
        ("entities", "the capital of France", "the capital of Germany"),
        ("antonyms", "turn on dark mode", "turn off dark mode"),
        ("antonyms", "enable the cache", "disable the cache"),
        ("antonyms", "sort before the merge", "sort after the merge"),
        ("order", "Does Alice owe Bob money?", "Does Bob owe Alice money?"),
        ("order", "Does Python call C?", "Does C call Python?"),
        ("roles", "convert celsius to fahrenheit", "convert fahrenheit to celsius"),
        ("roles", "is a cat bigger than a dog", "is a dog bigger than a cat"),
        ("content", "How do I install numpy?", "How do I install pandas?"),
    ],
)
def test_each_check_refuses_what_it_is_for(check: str, first: str, second: str) -> None:
    assert refused_by(check, first, second) == check
    assert refused_by(check, second, first) == check  # both ways round


@pytest.mark.parametrize(
    ("check", "first", "second"),
    [
        ("negation", "Is it safe?", "Is it safe to do?"),
        ("numbers", "the top 5 movies", "the top five films"),
        ("numbers", "It costs $1,000", "It costs 1000 dollars"),
        ("dates", "flights in March", "flights in March from Rome"),  # added, not changed
        ("entities", "Bob sued Alice", "Alice sued Bob"),  # the order's to refuse
        ("entities", "What did the United States say?", "What did the US say?"),
        ("antonyms", "turn on dark mode", "enable dark mode"),
        ("order", "Alice met Bob", "Alice met Bob and Carol"),
        ("roles", "flights from Paris to London", "flights to London from Paris"),
        ("content", "How do I reset my password?", "What's the way to reset my password?"),
    ],
)
def test_each_check_lets_a_paraphrase_through(check: str, first: str, second: str) -> None:
    assert refused_by(check, first, second) is None


def test_the_content_limit_is_a_share_of_the_shorter_text() -> None:
    short, longer = facts_of("reset my password"), facts_of("reset my password on android")
    assert not content_agrees(short, longer, limit=0.49)
    assert content_agrees(short, longer, limit=0.5)


# -- the guard ---------------------------------------------------------------------


def test_similarity_is_asked_first() -> None:
    facts = facts_of("Is it safe?")
    assert Guard(0.9).judge(0.89, facts, facts) == "similarity"
    assert Guard(0.9).judge(0.9, facts, facts) is None


def test_every_check_is_in_force_by_default_and_none_with_an_empty_tuple() -> None:
    assert Guard().checks == CHECKS
    assert Guard().threshold == DEFAULT_THRESHOLD
    assert Guard(checks=()).judge(SAME, facts_of("turn on"), facts_of("turn off")) is None


def test_the_first_check_to_find_a_difference_names_the_refusal() -> None:
    on = facts_of("Is the 5th light not turned on?")
    off = facts_of("Is the 6th light turned off?")
    assert Guard(0.0).judge(SAME, on, off) == "negation"
    assert Guard(0.0, checks=("antonyms", "numbers")).judge(SAME, on, off) == "antonyms"


def test_an_unknown_check_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown guard checks.*negation"):
        Guard(checks=("negation", "spelling"))


def test_the_content_limit_can_be_set() -> None:
    assert Guard().max_content_change == MAX_CONTENT_CHANGE
    loose = Guard(0.0, checks=("content",), max_content_change=1.0)
    assert loose.judge(SAME, facts_of("install numpy"), facts_of("install pandas")) is None
    assert "max_content_change=1.0" in repr(loose)


def test_every_refusal_has_a_reason() -> None:
    for name in (*CHECKS, "similarity"):
        assert reason(name)
