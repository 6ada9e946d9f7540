"""Sample a sweep's configurations with Optuna instead of a grid: ``--search optuna --trials N``.

A multi-objective study (the sweep's two objectives, each maximised or minimised as the metric table says) with
Optuna's TPE sampler (seeded by ``sweep.sampler_seed`` plus the number of trials the study already holds). The grid's lists become categorical choices, ``sweep.space``
gives ranges (``{low, high, log, int}``). Each sampled configuration runs every seed of the sweep as ordinary trials
(run directories named by the configuration's hash, as for a grid), and the study is told the means over seeds.

The study lives in ``<sweep>/optuna.db`` (SQLite), so a second invocation continues it: finished configurations are
counted, and one that was running when the sweep was killed is marked failed and queued again with the same values,
so its run directories (finished seeds, a ``.partial`` one) are reused.
"""

from __future__ import annotations

from unlearnkit.errors import UnlearnkitError
from unlearnkit.sweep import leaderboard
from unlearnkit.sweep.plan import SweepConfig, Trial, make_trials


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UnlearnkitError("--search optuna needs the optuna package: pip install 'unlearnkit[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def sample(trial, settings: SweepConfig) -> dict:
    """One configuration: a choice for each grid key, a value in each range of ``space``."""
    overrides = {}
    for key, values in settings.grid.items():
        if any(isinstance(v, (list, dict)) for v in values):
            raise UnlearnkitError(f"sweep.grid {key!r}: an optuna search chooses among plain values (numbers, "
                                  "strings, true/false), not lists or mappings")
        overrides[key] = trial.suggest_categorical(key, values)
    for key, span in settings.space.items():
        if span.int:
            overrides[key] = trial.suggest_int(key, int(span.low), int(span.high), log=span.log)
        else:
            overrides[key] = trial.suggest_float(key, span.low, span.high, log=span.log)
    return overrides


def optuna_search(sweep) -> list[Trial]:
    """Run the study until it holds ``sweep.settings.trials`` finished configurations; return all their trials."""
    optuna = _optuna()
    from optuna.trial import TrialState

    settings = sweep.settings
    if not settings.grid and not settings.space:
        raise UnlearnkitError("an optuna search needs something to search: give sweep.space ranges or --grid choices")
    better = leaderboard.directions(settings.objectives)
    make_trials(sweep.base, [{}], settings)  # the base config itself is valid before anything is created
    sweep.write_manifest()
    storage = f"sqlite:///{(sweep.directory / 'optuna.db').resolve()}"
    study = optuna.create_study(study_name="sweep", storage=storage, load_if_exists=True,
                                directions=["maximize" if b == "higher" else "minimize" for b in better])
    # seeded by the study's length too: a resumed search must not draw again what the first invocation drew
    study.sampler = optuna.samplers.TPESampler(seed=settings.sampler_seed + len(study.trials))
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # the sweep was killed during it
        study.tell(stale.number, state=TrialState.FAIL)
        study.enqueue_trial(stale.params)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    while done < settings.trials:
        asked = study.ask()
        trials = make_trials(sweep.base, [sample(asked, settings)], settings)
        sweep.run(trials)
        row = leaderboard.collect(trials, sweep.runs, settings.objectives)
        means = [row[0].mean(o) for o in settings.objectives] if row else [None]
        if None in means or len(row[0].seeds) < len(trials):
            study.tell(asked, state=TrialState.FAIL)
        else:
            study.tell(asked, means)
        done += 1
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return make_trials(sweep.base, [{**t.params} for t in finished], settings)
