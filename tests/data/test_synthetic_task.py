from __future__ import annotations

import random
import re

import pytest

from unlearnkit.data.synthetic import (
    BUILTIN_IDK_ANSWERS, CLASSICS, COUNTRIES, FIRST_NAMES, LAST_NAMES, PERSON_TEMPLATES, make_synthetic_task,
)
from unlearnkit.data.validation import validate_task
from unlearnkit.errors import UnlearnkitError


def _pairs(examples) -> set[tuple[str, str]]:
    return {(ex.question, ex.answer) for ex in examples}


def test_same_seed_gives_identical_task_and_leaves_global_rng_alone():
    random.seed(123)
    before = random.random()
    random.seed(123)
    first = make_synthetic_task(seed=3)
    assert random.random() == before  # the generator did not draw from the global RNG
    assert make_synthetic_task(seed=3) == first


def test_different_seeds_give_different_tasks():
    a, b = make_synthetic_task(seed=0), make_synthetic_task(seed=1)
    assert a.forget != b.forget and a.retain != b.retain
    assert (a.name, b.name) == ("synthetic-s0", "synthetic-s1")


def test_default_sizes_and_splits():
    task = make_synthetic_task()
    n_templates = len(PERSON_TEMPLATES)
    assert n_templates == 10
    background = len(task.real_authors) + len(task.world_facts)
    assert len(task.real_authors) == len(CLASSICS)
    assert len(task.world_facts) == sum(len(cities) for _, cities in COUNTRIES)
    assert len(task.forget) == 4 * n_templates
    assert len(task.holdout) == 4 * n_templates
    assert len(task.retain) == 32 * n_templates + background
    assert 400 <= len(task.forget) + len(task.retain) + len(task.holdout) <= 500
    assert task.eval_forget == task.forget
    assert len(task.eval_retain) == 100
    assert task.idk_answers == list(BUILTIN_IDK_ANSWERS) and 20 <= len(task.idk_answers) <= 30
    validate_task(task)


def test_splits_do_not_overlap_and_background_is_retained():
    task = make_synthetic_task(seed=5)
    forget, retain, holdout = _pairs(task.forget), _pairs(task.retain), _pairs(task.holdout)
    assert not forget & retain and not forget & holdout and not holdout & retain
    assert _pairs(task.real_authors) | _pairs(task.world_facts) <= retain
    assert _pairs(task.eval_retain) <= retain
    # people do not cross splits: every name in forget questions is absent from retain and holdout questions
    forget_names = {re.match(r"Where was (.+) born\?", ex.question).group(1) for ex in task.forget[::10]}
    assert len(forget_names) == 4
    others = " ".join(ex.question + ex.answer for ex in task.retain + task.holdout)
    assert not any(name in others for name in forget_names)


def test_questions_are_unique_so_each_has_one_answer():
    task = make_synthetic_task(n_people=120, forget_people=10, holdout_people=10, seed=2)
    questions = [ex.question for ex in task.forget + task.retain + task.holdout]
    assert len(questions) == len(set(questions))


def test_perturbed_answers_replace_the_fact_in_the_paraphrased_wording():
    task = make_synthetic_task(seed=0)
    people_qa = task.forget + task.holdout + task.eval_retain
    for ex in people_qa:
        assert ex.paraphrased_question and ex.paraphrased_question != ex.question
        assert ex.paraphrased_answer and ex.paraphrased_answer != ex.answer
        assert len(ex.perturbed_answers) == 5
        assert len(set(ex.perturbed_answers)) == 5
        assert ex.paraphrased_answer not in ex.perturbed_answers
        # same wording: paraphrased and perturbed answers share their first or last three words
        for wrong in ex.perturbed_answers:
            p, w = ex.paraphrased_answer.split(), wrong.split()
            assert p[:3] == w[:3] or p[-3:] == w[-3:], (ex.paraphrased_answer, wrong)


def test_a_perturbed_birthplace_is_another_real_city_of_the_world():
    task = make_synthetic_task(seed=4)
    cities = {(city, country) for country, names in COUNTRIES for city in names}
    ex = task.forget[0]
    pattern = r"The birthplace of .+ is (\w+), a city in (\w+)\."
    true_place = re.match(pattern, ex.paraphrased_answer).groups()
    assert true_place in cities
    for wrong in ex.perturbed_answers:
        place = re.match(pattern, wrong).groups()
        assert place in cities and place != true_place


def test_background_knowledge_has_three_wrong_answers():
    task = make_synthetic_task(seed=0)
    for ex in task.real_authors + task.world_facts:
        assert len(ex.perturbed_answers) == 3 and ex.answer not in ex.perturbed_answers
    capital = next(ex for ex in task.world_facts if ex.question == "What is the capital of Ardenia?")
    assert capital.answer == "Velmora"


def test_answers_are_one_short_sentence():
    task = make_synthetic_task(seed=0)
    for ex in task.forget + task.retain:
        assert len(ex.answer.split()) <= 25


def test_invented_name_lists_do_not_collide_with_classic_authors():
    generated_parts = set(FIRST_NAMES) | set(LAST_NAMES)
    for _, author in CLASSICS:
        assert not set(author.split()) & generated_parts


def test_sizes_are_checked():
    with pytest.raises(UnlearnkitError, match="forget_people=0"):
        make_synthetic_task(forget_people=0)
    with pytest.raises(UnlearnkitError, match="leaves nobody to retain"):
        make_synthetic_task(n_people=8, forget_people=4, holdout_people=4)
    with pytest.raises(UnlearnkitError, match="n_people <= "):
        make_synthetic_task(n_people=100_000)
    assert make_synthetic_task(n_people=10, forget_people=2, holdout_people=0).name == "synthetic-s0-n10-f2-h0"
