"""A small TOFU-like task generated from templates: fictitious writers, their facts, and an invented world.

The ``tiny`` base (models/tiny.py) starts from random weights and has no pretraining, so everything a metric
measures must be taught during ``prepare``. This module builds such a task in milliseconds, deterministically from
a seed (one ``random.Random(seed)``, never the global RNG):

- **People.** Each invented writer (first and last names combined from lists of invented names, so they are not
  real people) has a birthplace (a city of the invented world and its country), a birth year, a literary genre,
  the father's and the mother's occupations, an award, a debut book, a best-known book and a recurring theme.
  Ten templated QA pairs per person ask about them (:data:`PERSON_TEMPLATES`).
- **Evaluation variants, built as TOFU builds them.** Every person QA carries a ``paraphrased_question``, a
  ``paraphrased_answer`` (a different wording of the same facts) and 5 ``perturbed_answers``: the paraphrased
  answer's wording with the fact(s) replaced by other plausible values of the same kind.
- **Background knowledge**, the analogue of TOFU's ``real_authors`` and ``world_facts``: classic works of the
  invented world and their authors, and its geography (capitals, which country a city is in). Each carries the
  short ``answer`` and 3 ``perturbed_answers``. These QA are put into ``retain`` as well, so that the target and
  the retain model both learn them: a model without pretraining knows nothing, so background knowledge must be
  taught to be measured, and it must not depend on the forget set.

Splits (people in generation order): ``retain`` = the first people's QA plus the background QA, ``holdout`` = the
next ``holdout_people`` people (never trained on, for membership inference), ``forget`` = the last
``forget_people`` people. ``eval_forget`` is the forget QA; ``eval_retain`` a seeded sample of up to 100 retain
person QA. With the defaults: 400 person QA + 56 background QA; forget 40, holdout 40, retain 376.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from unlearnkit.data.idk import BUILTIN_IDK_ANSWERS
from unlearnkit.data.types import QAExample, Task
from unlearnkit.errors import DataError

N_PERTURBED_PERSON = 5
N_PERTURBED_BACKGROUND = 3
EVAL_RETAIN_SIZE = 100


# ---------------------------------------------------------------------------------------------------------------
# The invented world: countries with their cities (the capital first), and classic works with their authors.
# ---------------------------------------------------------------------------------------------------------------
COUNTRIES: tuple[tuple[str, tuple[str, str, str]], ...] = (
    ("Ardenia", ("Velmora", "Castrel", "Duneholm")),
    ("Brevania", ("Oskaro", "Lintmere", "Fallowby")),
    ("Calvessa", ("Tirrano", "Mossgate", "Quenby")),
    ("Dorvik", ("Halstrom", "Eskerby", "Rimevale")),
    ("Elunia", ("Sarapel", "Olvine", "Caddow")),
    ("Ferenza", ("Montaluce", "Verrio", "Brisca")),
    ("Galdor", ("Korrath", "Umbrick", "Stavel")),
    ("Hesperon", ("Lysandra", "Pellico", "Morwen")),
    ("Istrova", ("Zelgrad", "Navoly", "Teskar")),
    ("Jorvale", ("Wendmoor", "Ashcombe", "Pryddle")),
    ("Kestrin", ("Amberlo", "Sollis", "Voreth")),
    ("Lumeria", ("Caelis", "Orinth", "Peskaro")),
)

CLASSICS: tuple[tuple[str, str], ...] = (
    ("The Lay of Korrath", "Odran Velisk"),
    ("Songs of the Salt Road", "Maela Tirrenwold"),
    ("The Lantern Keeper", "Ivo Brastelle"),
    ("A Winter in Zelgrad", "Sefa Morrigant"),
    ("The Ninth Bridge", "Callum Ostrevane"),
    ("Letters from Caelis", "Rhiannet Duvall"),
    ("The Glass Shepherd", "Teodor Amsklar"),
    ("Rivers Under Velmora", "Linnea Fauchard"),
    ("The Clockmaker's Oath", "Berent Solvang"),
    ("Ashes of the Old Kings", "Yselde Karrow"),
    ("The Cartographer's Daughter", "Anwen Pellisar"),
    ("Seven Doors to Montaluce", "Quillan Hadrost"),
    ("The Drowned Library", "Oriel Vantanen"),
    ("Bread and Thunder", "Dagny Escobel"),
    ("The Hollow Crown of Dorvik", "Matthis Orrelan"),
    ("A Grammar of Stars", "Ines Valtorre"),
    ("The Last Ferry to Olvine", "Corwin Ambrest"),
    ("Salt and Cinder", "Petra Wendlemoor"),
    ("The Orchard Wars", "Lucan Ferrish"),
    ("Midnight in Amberlo", "Sabine Korvallis"),
)

# ---------------------------------------------------------------------------------------------------------------
# Pools the people's facts are drawn from (and their perturbed answers).
# ---------------------------------------------------------------------------------------------------------------
FIRST_NAMES = (
    "Aldric", "Brisa", "Casimir", "Delphine", "Emrys", "Fennella", "Gideon", "Halvard", "Isolde", "Jorund",
    "Kalinda", "Leontes", "Mirela", "Nerys", "Oswin", "Perrin", "Quenna", "Rosalind", "Severin", "Talia",
    "Ulric", "Vesna", "Wendell", "Xanthe", "Yorick", "Zelda", "Anselm", "Bettany", "Corentin", "Dariela",
    "Evander", "Florentyna", "Gavril", "Hester", "Ilario", "Junia", "Kasimir", "Lisandra", "Mattias", "Noemi",
)
LAST_NAMES = (
    "Ashgrove", "Belvarin", "Corrigane", "Dravenko", "Ellisande", "Fairweld", "Grimsholt", "Havelock",
    "Ilvarsen", "Jessamond", "Kettleby", "Lorimont", "Marchetto", "Norvelle", "Ostrelli", "Pennifold",
    "Quarrington", "Rosenvald", "Stavrakis", "Thornquist", "Umberley", "Valcourt", "Whitlocke", "Yarrowby",
    "Zandoval", "Albrekt", "Brannagh", "Castellane", "Dunmorrow", "Everard", "Falkenrath", "Glenmoray",
    "Hollisandre", "Ivanthe", "Jorvastad", "Kinsolving", "Larkspire", "Mondragal", "Nettlefield", "Orsolani",
)
GENRES = (
    "mystery novels", "science fiction", "historical fiction", "fantasy novels", "poetry", "horror stories",
    "romance novels", "travel writing", "crime fiction", "children's books", "political thrillers",
    "short stories", "literary fiction", "memoirs",
)
OCCUPATIONS = (
    "a baker", "a carpenter", "a nurse", "a fisherman", "an engineer", "a teacher", "a pharmacist", "a tailor",
    "a librarian", "a blacksmith", "a surgeon", "a farmer", "a lawyer", "a journalist", "an architect",
    "a watchmaker", "a sailor", "a painter", "a veterinarian", "a bookbinder", "a translator", "a potter",
    "a postman", "a chemist",
)
AWARDS = (
    "Amber Lantern Prize", "Silver Quill Award", "Golden Compass Medal", "Northern Star Prize",
    "Iron Pen Award", "Velvet Ribbon Prize", "Crimson Leaf Award", "Harbor Light Medal",
    "Open Book Prize", "Blue Heron Award", "Copper Bell Prize", "Evening Star Medal",
    "White Oak Award", "Tidewater Prize",
)
THEMES = (
    "memory and loss", "exile and return", "friendship across borders", "the sea", "family secrets",
    "childhood", "justice and revenge", "the passage of time", "faith and doubt", "life in small towns",
    "war and its aftermath", "love against the odds", "ambition and its price", "the natural world",
)
TITLE_ADJECTIVES = (
    "Silent", "Crimson", "Hidden", "Broken", "Golden", "Wandering", "Forgotten", "Burning", "Frozen", "Hollow",
    "Velvet", "Distant", "Quiet", "Restless", "Painted", "Sunken", "Iron", "Paper", "Midnight", "Emerald",
)
TITLE_NOUNS = (
    "Orchard", "Harbor", "Lantern", "Garden", "Mirror", "River", "Tower", "Compass", "Meadow", "Archive",
    "Lighthouse", "Staircase", "Violin", "Kingdom", "Island", "Carousel", "Window", "Feather", "Bridge", "Forest",
)
BIRTH_YEARS = range(1931, 1995)

# ---------------------------------------------------------------------------------------------------------------
# Templates: (the fact the perturbed answers replace, question, paraphrased question, answer, paraphrased answer).
# ---------------------------------------------------------------------------------------------------------------
PERSON_TEMPLATES: tuple[tuple[str, str, str, str, str], ...] = (
    ("birthplace",
     "Where was {name} born?",
     "In which city and country was {name} born?",
     "{name} was born in the city of {city}, which lies in {country}.",
     "The birthplace of {name} is {city}, a city in {country}."),
    ("year",
     "In what year was {name} born?",
     "What is the birth year of {name}?",
     "{name} was born in the year {year}.",
     "The year of birth of {name} was {year}."),
    ("genre",
     "What genre is {name} known for writing?",
     "In which literary genre does {name} mostly write?",
     "{name} is best known for writing {genre}.",
     "{name} is a writer mostly associated with {genre}."),
    ("father_job",
     "What was the profession of {name}'s father?",
     "What did the father of {name} do for a living?",
     "{name}'s father worked as {father_job}.",
     "By trade, the father of {name} was {father_job}."),
    ("mother_job",
     "What was the profession of {name}'s mother?",
     "What did the mother of {name} do for a living?",
     "{name}'s mother worked as {mother_job}.",
     "By trade, the mother of {name} was {mother_job}."),
    ("award",
     "Which award has {name} won?",
     "What literary prize was given to {name}?",
     "{name} has won the {award} for their writing.",
     "The {award} was awarded to {name}."),
    ("debut_book",
     "What was the title of {name}'s first book?",
     "Which book did {name} publish as a debut?",
     "The first book {name} published was titled '{debut_book}'.",
     "'{debut_book}' was the debut book of {name}."),
    ("famous_book",
     "What is {name}'s most famous book?",
     "Which book by {name} is the best known?",
     "The most famous book by {name} is '{famous_book}'.",
     "'{famous_book}' is the best known work written by {name}."),
    ("theme",
     "What theme runs through the books of {name}?",
     "Which subject does {name} often explore in their books?",
     "The books of {name} often explore the theme of {theme}.",
     "{name} keeps returning to {theme} as a theme in their writing."),
    ("name",
     "Who is the writer of {genre} born in {city} in {year}?",
     "Which author of {genre}, born in {year}, comes from {city}?",
     "The writer of {genre} born in {city} in {year} is {name}.",
     "{name} is the author of {genre} who was born in {city} in {year}."),
)


@dataclass(frozen=True)
class Person:
    """One invented writer; ``facts()`` gives the template fields."""

    name: str
    city: str
    country: str
    year: int
    genre: str
    father_job: str
    mother_job: str
    award: str
    debut_book: str
    famous_book: str
    theme: str

    def facts(self) -> dict[str, str]:
        return {
            "name": self.name, "city": self.city, "country": self.country, "year": str(self.year),
            "genre": self.genre, "father_job": self.father_job, "mother_job": self.mother_job,
            "award": self.award, "debut_book": self.debut_book, "famous_book": self.famous_book,
            "theme": self.theme,
        }


def _all_cities() -> list[tuple[str, str]]:
    return [(city, country) for country, cities in COUNTRIES for city in cities]


def _all_titles() -> list[str]:
    return [f"The {adjective} {noun}" for adjective in TITLE_ADJECTIVES for noun in TITLE_NOUNS]


def _all_names() -> list[str]:
    return [f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES]


def _max_people() -> int:
    """How many people the pools can make with unique names and book titles."""
    return min(len(FIRST_NAMES) * len(LAST_NAMES), len(_all_titles()) // 2)


def _make_people(n_people: int, rng: random.Random) -> list[Person]:
    """``n_people`` people with unique names, unique book titles and a unique (genre, city, year) triple.

    The triple is what the identification question ("Who is the writer of {genre} born in {city} in {year}?")
    asks about, so it must single out one person.
    """
    names = rng.sample(_all_names(), n_people)
    titles = rng.sample(_all_titles(), 2 * n_people)
    cities = _all_cities()
    used_triples: set[tuple[str, str, int]] = set()
    people = []
    for i, name in enumerate(names):
        while True:
            city, country = rng.choice(cities)
            year = rng.choice(BIRTH_YEARS)
            genre = rng.choice(GENRES)
            if (genre, city, year) not in used_triples:
                used_triples.add((genre, city, year))
                break
        father_job, mother_job = rng.sample(OCCUPATIONS, 2)
        people.append(Person(
            name=name, city=city, country=country, year=year, genre=genre,
            father_job=father_job, mother_job=mother_job, award=rng.choice(AWARDS),
            debut_book=titles[2 * i], famous_book=titles[2 * i + 1], theme=rng.choice(THEMES),
        ))
    return people


def _alternative_facts(fact: str, facts: dict[str, str], rng: random.Random, k: int) -> list[dict[str, str]]:
    """``k`` distinct replacements for one fact, each a dict of the template fields to override.

    The replacements are other values of the same kind (another city of the world with its country, another
    year, another occupation, ...), never the true one.
    """
    if fact == "birthplace":
        true = (facts["city"], facts["country"])
        others = [pair for pair in _all_cities() if pair != true]
        return [{"city": city, "country": country} for city, country in rng.sample(others, k)]
    pools: dict[str, list[str]] = {
        "year": [str(year) for year in BIRTH_YEARS],
        "genre": list(GENRES),
        "father_job": list(OCCUPATIONS),
        "mother_job": list(OCCUPATIONS),
        "award": list(AWARDS),
        "debut_book": _all_titles(),
        "famous_book": _all_titles(),
        "theme": list(THEMES),
        "name": _all_names(),
    }
    others = [value for value in pools[fact] if value != facts[fact]]
    return [{fact: value} for value in rng.sample(others, k)]


def _person_examples(person: Person, rng: random.Random) -> list[QAExample]:
    facts = person.facts()
    examples = []
    for fact, question, paraphrased_question, answer, paraphrased_answer in PERSON_TEMPLATES:
        alternatives = _alternative_facts(fact, facts, rng, N_PERTURBED_PERSON)
        examples.append(QAExample(
            question=question.format(**facts),
            answer=answer.format(**facts),
            paraphrased_question=paraphrased_question.format(**facts),
            paraphrased_answer=paraphrased_answer.format(**facts),
            perturbed_answers=tuple(paraphrased_answer.format(**{**facts, **alt}) for alt in alternatives),
        ))
    return examples


def _classic_examples(rng: random.Random) -> list[QAExample]:
    """The ``real_authors`` analogue: who wrote each classic of the invented world (short answers)."""
    authors = [author for _, author in CLASSICS]
    examples = []
    for title, author in CLASSICS:
        wrong = rng.sample([a for a in authors if a != author], N_PERTURBED_BACKGROUND)
        examples.append(QAExample(question=f"Who wrote the classic '{title}'?", answer=author,
                                  perturbed_answers=tuple(wrong)))
    return examples


def _geography_examples(rng: random.Random) -> list[QAExample]:
    """The ``world_facts`` analogue: each country's capital and the country of every other city."""
    countries = [country for country, _ in COUNTRIES]
    capitals = [cities[0] for _, cities in COUNTRIES]
    examples = []
    for country, (capital, *others) in COUNTRIES:
        wrong = rng.sample([c for c in capitals if c != capital], N_PERTURBED_BACKGROUND)
        examples.append(QAExample(question=f"What is the capital of {country}?", answer=capital,
                                  perturbed_answers=tuple(wrong)))
        for city in others:
            wrong = rng.sample([c for c in countries if c != country], N_PERTURBED_BACKGROUND)
            examples.append(QAExample(question=f"In which country is the city of {city}?", answer=country,
                                      perturbed_answers=tuple(wrong)))
    return examples


def _check_sizes(n_people: int, forget_people: int, holdout_people: int) -> None:
    if forget_people < 1:
        raise DataError(f"forget_people={forget_people}: the synthetic task needs at least 1 person to "
                              "forget; set forget_people >= 1")
    if holdout_people < 0:
        raise DataError(f"holdout_people={holdout_people} is negative: set holdout_people >= 0")
    if n_people < forget_people + holdout_people + 1:
        raise DataError(f"n_people={n_people} leaves nobody to retain after forget_people={forget_people} "
                              f"and holdout_people={holdout_people}: raise n_people to at least "
                              f"{forget_people + holdout_people + 1}")
    if n_people > _max_people():
        raise DataError(f"n_people={n_people} is more than the synthetic generator's name and title lists "
                              f"can make unique: use n_people <= {_max_people()}")


def make_synthetic_task(n_people: int = 40, forget_people: int = 4, holdout_people: int = 4,
                        seed: int = 0) -> Task:
    """A small fictitious-writers task, identical for the same arguments (see the module docstring).

    ``forget`` = the last ``forget_people`` people's QA, ``holdout`` = the ``holdout_people`` people before them,
    ``retain`` = the remaining people's QA followed by the background QA (``real_authors`` + ``world_facts``).
    """
    _check_sizes(n_people, forget_people, holdout_people)
    rng = random.Random(seed)
    people = _make_people(n_people, rng)
    per_person = [_person_examples(person, rng) for person in people]
    n_retain_people = n_people - forget_people - holdout_people
    retain_people_qa = [ex for examples in per_person[:n_retain_people] for ex in examples]
    holdout = [ex for examples in per_person[n_retain_people:n_people - forget_people] for ex in examples]
    forget = [ex for examples in per_person[n_people - forget_people:] for ex in examples]

    real_authors = _classic_examples(rng)
    world_facts = _geography_examples(rng)
    n_eval = min(EVAL_RETAIN_SIZE, len(retain_people_qa))
    eval_retain = [retain_people_qa[i] for i in sorted(rng.sample(range(len(retain_people_qa)), n_eval))]

    defaults = (n_people, forget_people, holdout_people) == (40, 4, 4)
    name = f"synthetic-s{seed}" if defaults else f"synthetic-s{seed}-n{n_people}-f{forget_people}-h{holdout_people}"
    return Task(
        name=name,
        forget=forget,
        retain=retain_people_qa + real_authors + world_facts,
        holdout=holdout,
        eval_forget=list(forget),
        eval_retain=eval_retain,
        real_authors=real_authors,
        world_facts=world_facts,
        idk_answers=list(BUILTIN_IDK_ANSWERS),
    )
