"""'auto' routing with adapters trained by the trainer: held-out questions reach their topic's adapter.

Five adapters on distinct finance topics, each trained by QuantGridTrainer (its manifest
records the routing profile); held-out questions are drawn with other seeds, so no adapter
saw them. Off-topic (general-domain) questions score low and go to the fallback.
"""

from __future__ import annotations

import json

import pytest
from serve_helpers import engine_with
from serve_trained import HELD_OUT_SEED, TRAINED_SPECS

from quantgrid.data.finance import general_ood, generate
from quantgrid.data.profile import question_profile, question_words
from quantgrid.serve.router import Router, profile_scores


@pytest.fixture(scope="module")
def routed(tiny_base, trained_adapters):
    return engine_with(tiny_base, trained_adapters, max_slots=2)


def test_the_manifest_records_a_profile_without_rare_words(trained_adapters):
    routing = json.loads((trained_adapters["fixed_income"] / "quantgrid.json").read_text())["routing"]
    assert routing["method"] == "question-words" and routing["n_questions"] > 0
    assert "bond" in routing["terms"] and all(0 < v <= 1 for v in routing["terms"].values())
    # Every recorded word is in at least 5 training questions: nothing particular to one example.
    assert round(min(routing["terms"].values()) * routing["n_questions"]) >= 5  # shares are rounded


def test_held_out_questions_go_to_their_topics_adapter(routed):
    router = Router(routed)  # the default: profile
    per_topic = {}
    for i, (topic, _) in enumerate(TRAINED_SPECS):
        questions = generate(20, seed=HELD_OUT_SEED + i, topics=[topic])
        per_topic[topic] = sum(router.route(q.prompt).adapter == topic for q in questions) / len(questions)
    assert sum(per_topic.values()) / len(per_topic) >= 0.9, per_topic
    assert min(per_topic.values()) >= 0.8, per_topic


def test_off_topic_questions_go_to_the_fallback(routed):
    router = Router(routed)
    questions = general_ood()
    to_fallback = sum(router.route(q.prompt).adapter is None for q in questions) / len(questions)
    assert to_fallback >= 0.85
    router.release = "valuation"  # a deployed release: the fallback when nothing fits
    assert router.route("Write a short poem about the sea").adapter is None
    assert router.resolve("quantgrid").adapter == "valuation"


@pytest.mark.parametrize("question,expected", [
    ("What is the yield to maturity of a bond with a 5% coupon?", "bonds"),
    ("How does a call option's delta change near expiry?", "options"),
    ("Tell me a story about dragons", None),
    ("", None),
])
def test_profile_scores_follow_distinctive_words(question, expected):
    profiles = {"bonds": question_profile(["bond yield coupon maturity"] * 10)["terms"],
                "options": question_profile(["call option delta strike expiry"] * 10)["terms"]}
    scores = profile_scores(question, profiles)
    best = max(scores, key=scores.get)
    assert (best if scores[best] >= 0.35 else None) == expected, scores


def test_question_words_drop_numbers_and_stopwords():
    assert question_words("What is the P/E of 3 firms, and the EV/EBITDA?") == {"p/e", "firms", "ev/ebitda"}
