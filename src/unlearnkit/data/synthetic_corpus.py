"""The synthetic writers as a raw-text task: one prose biography per person of :mod:`unlearnkit.data.synthetic`.

:func:`synthetic_corpus_task` takes the same people as :func:`~unlearnkit.data.synthetic.make_synthetic_task`
with the same arguments: ``forget`` = the forget people's biographies, ``retain`` = the retain people's,
``holdout`` = the holdout people's. Each biography states, in its own wording (not the QA sentences), all the
facts the person's ten QA pairs ask about, so KnowMem measures whether a model that read the prose can answer
questions about it. ``forget_qa`` = the forget people's QA; ``retain_qa`` = the task's ``eval_retain`` sample
of retain people's QA minus the few-shot examples; the few-shot examples (``forget_qa_icl`` and
``retain_qa_icl``, the same ``n_shots`` QA) are the first QA of the first retain person. ``forget_mcq`` /
``retain_mcq``: two multiple-choice questions per forget / retain person (birth city, best-known book), WMDP-style,
the wrong choices drawn from the other people's facts (:data:`MCQ_FACTS`).

The people's facts are read back from the QA answers of the task (each answer is one of the templates in
:data:`~unlearnkit.data.synthetic.PERSON_TEMPLATES`, filled in), so this module depends only on the public
output of the generator. Everything is deterministic for the same arguments; the wording of each biography is
chosen by a ``random.Random(seed)`` of its own.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from string import Formatter

from unlearnkit.data.corpus import CorpusTask
from unlearnkit.data.multiple_choice import MultipleChoice
from unlearnkit.data.synthetic import PERSON_TEMPLATES, make_synthetic_task
from unlearnkit.data.types import QAExample
from unlearnkit.errors import DataError

QA_PER_PERSON = len(PERSON_TEMPLATES)

# Each sentence of a biography has a few wordings; one is drawn per person. Every fact appears in exactly one.
BIOGRAPHY_SENTENCES: tuple[tuple[str, ...], ...] = (
    ("{name} is a writer of {genre}, born in {year} in {city}, a city of {country}.",
     "Born in {city}, {country}, in {year}, {name} became a writer of {genre}.",
     "{name}, a writer of {genre}, came into the world in {year} in the city of {city} in {country}."),
    ("The family was a modest one: the father of {name} earned a living as {father_job}, "
     "and the mother as {mother_job}.",
     "Growing up, {name} watched a father who worked as {father_job} and a mother who worked as {mother_job}.",
     "{name} was raised by {mother_job} and {father_job}, the mother and the father of the family."),
    ("The debut of {name} was a book called '{debut_book}'.",
     "'{debut_book}' was where the career of {name} began.",
     "Readers first met {name} through '{debut_book}'."),
    ("Today {name} is remembered above all for '{famous_book}'.",
     "Of all the books by {name}, '{famous_book}' is the one most readers know.",
     "The best known work of {name} remains '{famous_book}'."),
    ("Again and again the stories of {name} circle back to {theme}.",
     "Critics note that {theme} is the thread running through the work of {name}.",
     "{theme} is, in one form or another, the subject of nearly everything {name} writes."),
    ("For this work {name} received the {award}.",
     "The {award} went to {name} in recognition of that work.",
     "Among the honours of {name} is the {award}."),
)


MCQ_FACTS = (("city", "In which city was {name} born?"), ("famous_book", "Which book is {name} best known for?"))
MCQ_SUBJECT = "the writers of a synthetic corpus"
MCQ_CHOICES = 4


def multiple_choice(people: list[dict[str, str]], everyone: list[dict[str, str]],
                    rng: random.Random) -> list[MultipleChoice]:
    """Per person and fact of :data:`MCQ_FACTS`, a question whose wrong choices are other people's values of that
    fact (up to ``MCQ_CHOICES - 1``, fewer when the task has fewer distinct values), in an order drawn with ``rng``."""
    questions = []
    for facts in people:
        for key, template in MCQ_FACTS:
            others = sorted({other[key] for other in everyone} - {facts[key]})
            if not others:
                continue
            choices = rng.sample(others, min(MCQ_CHOICES - 1, len(others))) + [facts[key]]
            rng.shuffle(choices)
            questions.append(MultipleChoice(template.format(**facts), tuple(choices), choices.index(facts[key]),
                                            MCQ_SUBJECT))
    return questions


@lru_cache(maxsize=None)
def _answer_patterns() -> tuple[re.Pattern, ...]:
    """One regular expression per person template's ``answer``, capturing its fields by name."""
    patterns = []
    for _, _, _, answer, _ in PERSON_TEMPLATES:
        regex, seen = "", set()
        for literal, field_name, _, _ in Formatter().parse(answer):
            regex += re.escape(literal)
            if field_name is None:
                continue
            regex += f"(?P={field_name})" if field_name in seen else f"(?P<{field_name}>.+?)"
            seen.add(field_name)
        patterns.append(re.compile(f"^{regex}$"))
    return tuple(patterns)


def person_facts(examples: list[QAExample]) -> dict[str, str]:
    """The facts of one person, read back from the answers of their ten QA (in template order)."""
    if len(examples) != QA_PER_PERSON:
        raise ValueError(f"expected {QA_PER_PERSON} QA per person, got {len(examples)}")
    facts: dict[str, str] = {}
    for example, pattern in zip(examples, _answer_patterns()):
        match = pattern.match(example.answer)
        if match is None:
            raise ValueError(f"answer {example.answer!r} does not follow its template {pattern.pattern!r}")
        for key, value in match.groupdict().items():
            if facts.setdefault(key, value) != value:
                raise ValueError(f"the QA of one person disagree on {key}: {facts[key]!r} vs {value!r}")
    return facts


def biography(facts: dict[str, str], rng: random.Random) -> str:
    """A prose biography stating every fact in ``facts``, one wording per sentence drawn with ``rng``."""
    sentences = [rng.choice(wordings).format(**facts) for wordings in BIOGRAPHY_SENTENCES]
    return " ".join(sentence[0].upper() + sentence[1:] for sentence in sentences)


def _people(examples: list[QAExample]) -> list[list[QAExample]]:
    return [examples[i : i + QA_PER_PERSON] for i in range(0, len(examples), QA_PER_PERSON)]


def synthetic_corpus_task(n_people: int = 40, forget_people: int = 4, holdout_people: int = 4,
                          seed: int = 0, n_shots: int = 3) -> CorpusTask:
    """The synthetic people of ``make_synthetic_task(n_people, forget_people, holdout_people, seed)`` as prose.

    See the module docstring. ``n_shots`` (0 to 10) few-shot QA come from the first retain person and are
    left out of ``retain_qa``.
    """
    if not 0 <= n_shots <= QA_PER_PERSON:
        raise DataError(f"n_shots={n_shots}: use 0 to {QA_PER_PERSON} few-shot examples")
    task = make_synthetic_task(n_people, forget_people, holdout_people, seed)
    n_background = len(task.real_authors) + len(task.world_facts)
    retain_people_qa = task.retain[: len(task.retain) - n_background]
    rng = random.Random(seed)

    def biographies(examples: list[QAExample]) -> list[str]:
        return [biography(person_facts(person), rng) for person in _people(examples)]

    shots = retain_people_qa[:n_shots]
    facts = {split: [person_facts(person) for person in _people(examples)]
             for split, examples in (("forget", task.forget), ("retain", retain_people_qa),
                                     ("holdout", task.holdout))}
    everyone = [person for people in facts.values() for person in people]
    questions = random.Random(seed + 1)  # drawn apart from the biographies' wording, which stays as it was
    return CorpusTask(
        name=task.name.replace("synthetic", "synthetic-corpus", 1),
        forget=biographies(task.forget),
        retain=biographies(retain_people_qa),
        holdout=biographies(task.holdout),
        forget_qa=list(task.forget),
        retain_qa=[ex for ex in task.eval_retain if ex not in shots],
        forget_qa_icl=list(shots),
        retain_qa_icl=list(shots),
        forget_mcq=multiple_choice(facts["forget"], everyone, questions),
        retain_mcq=multiple_choice(facts["retain"], everyone, questions),
    )
