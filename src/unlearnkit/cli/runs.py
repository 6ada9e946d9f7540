"""The commands that read a finished run: attack, compare, verify, export, reapply."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from unlearnkit.cli.common import _guard, _overrides, _setup_logging, app


@app.command()
def attack(run_dir: Path = typer.Argument(..., help="a finished run directory"),
           attacks: Optional[str] = typer.Option(None, "--attack", help="comma-separated: relearn,quantize,suffix,latent (default: "
                                                 "the run config's attacks: block, else both)"),
           sets: Optional[List[str]] = typer.Option(None, "--set", help="override an attack setting, e.g. "
                                                    "--set relearn.steps=20 (repeatable)"),
           quiet: bool = typer.Option(False)):
    """Attack a run's unlearned model (beside its target and retain models): does the knowledge come back?"""
    _setup_logging(quiet)

    def go():
        from unlearnkit.config import AttacksConfig, set_dotted
        from unlearnkit.finished_run import load_run

        cfg, _ = load_run(run_dir)  # a missing or incomplete run directory stops here, before the heavy imports
        data = (cfg.attacks or AttacksConfig()).model_dump()
        if attacks:
            data["run"] = [a.strip() for a in attacks.split(",") if a.strip()]
        for key, value in _overrides(sets).items():
            set_dotted(data, key, value)
        from pydantic import ValidationError

        try:
            chosen = AttacksConfig.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise UnlearnkitError(f"attack settings: {'.'.join(map(str, err['loc']))}: {err['msg']} "
                                  f"(got {err.get('input')!r})") from None
        from unlearnkit.attacks.suite import run_attacks

        return run_attacks(run_dir, chosen, progress=not quiet)

    from unlearnkit.errors import UnlearnkitError

    robustness = _guard(go)
    _print_robustness(robustness)
    typer.echo(f"updated {run_dir / 'results.json'} and {run_dir / 'report.html'}")


def _print_robustness(robustness: dict) -> None:
    if "relearn" in robustness:
        typer.echo("relearning: recovered fraction of what unlearning removed (per forget metric)")
        for who, metrics in robustness["relearn"]["recovered_fraction"].items():
            cells = ", ".join(f"{name}={'undefined' if v['value'] is None else _num(v['value'])}"
                              for name, v in metrics.items())
            typer.echo(f"  {who:<10} {cells}")
    if "quantize" in robustness:
        typer.echo("quantization: forget_Q_A_Prob / model_utility")
        for who, schemes in robustness["quantize"].items():
            cells = ", ".join(f"{scheme}: {_num(r['aggregates'].get('forget_Q_A_Prob'))} / "
                              f"{_num(r['aggregates'].get('model_utility'))}" for scheme, r in schemes.items())
            typer.echo(f"  {who:<10} {cells}")
    if "suffix" in robustness:
        typer.echo(f"GCG suffix {robustness['suffix']['search']['suffix_text']!r}: forget_Q_A_Prob with suffix / paraphrased")
        for who, r in robustness["suffix"]["models"].items():
            typer.echo(f"  {who:<10} {_num(r['with_suffix'].get('forget_Q_A_Prob'))} / "
                       f"{_num(r['paraphrased'].get('forget_Q_A_Prob'))}")
    if "latent" in robustness:
        typer.echo("latent perturbation: forget answer probability per ε")
        for who, probe in robustness["latent"].items():
            eps = probe.get("epsilon_fractions") or probe["epsilons"]
            typer.echo(f"  {who:<10} " + ", ".join(f"ε={e:g}: {_num(p)}" for e, p in zip(eps, probe["prob"])))


def _num(value) -> str:
    return "—" if value is None else f"{value:.4g}"


@app.command()
def compare(run_a: Path = typer.Argument(..., help="first run directory"),
            run_b: Path = typer.Argument(..., help="second run directory"),
            model: str = typer.Option("unlearned", help="which model's results: unlearned, target or retain"),
            output: Optional[Path] = typer.Option(None, help="write the comparison JSON here")):
    """Paired difference A − B of two runs' metrics on the same examples, with a 95% interval and p-value."""

    def go():
        from unlearnkit.finished_run import load_results

        a, b = load_results(run_a), load_results(run_b)  # both read before the heavy imports
        from unlearnkit.report.compare import compare_results
        from unlearnkit.runio import write_json

        table = compare_results(a, b, model=model)
        if output is not None:
            write_json(output, table)
        return table

    table = _guard(go)

    def fmt(v):
        return "—" if v is None else f"{v:.4g}"

    typer.echo(f"{'metric':<26}{'A':>10}{'B':>10}{'A − B':>10}  {'95% interval':<22}{'p':>8}")
    for name, row in table.items():
        interval = f"[{fmt(row['low'])}, {fmt(row['high'])}]" if "low" in row else ""
        typer.echo(f"{name:<26}{fmt(row['a']):>10}{fmt(row['b']):>10}{fmt(row.get('difference')):>10}  "
                   f"{interval:<22}{fmt(row.get('p_value')):>8}")



@app.command()
def verify(run_dir: Path = typer.Argument(..., help="a finished run directory (with its audit.json)"),
           recompute: bool = typer.Option(False, help="re-evaluate every score afresh instead of reading the "
                                                      "evaluation store"),
           quiet: bool = typer.Option(False)):
    """Check a run against its audit record: re-hash data, weights and config, re-evaluate the forget set."""
    _setup_logging(quiet)

    def go():
        from unlearnkit.audit import verify as verify_run

        return verify_run(run_dir, recompute=recompute, progress=not quiet)

    problems = _guard(go)
    for line in problems:
        typer.echo(f"mismatch: {line}")
    if problems:
        typer.echo(f"{run_dir}: {len(problems)} mismatch(es) with its audit record", err=True)
        raise typer.Exit(1)
    typer.echo(f"{run_dir}: every digest and the re-evaluated forget-set metrics match the audit record")


@app.command()
def export(run_dir: Path = typer.Argument(..., help="a finished run directory"),
           to: Path = typer.Option(..., "--to", help="folder to write (must not exist, or be empty)")):
    """Write the unlearned model with its model card (README.md) and audit record to a folder ready for push_to_hub."""

    def go():
        from unlearnkit.report.export import export_run

        return export_run(run_dir, to)

    written = _guard(go)
    typer.echo(f"exported {written}")


@app.command()
def reapply(run_dir: Path = typer.Argument(..., help="a finished run directory holding update.safetensors (kfade)"),
            model: Path = typer.Option(..., "--model", help="model folder of the same architecture (e.g. the "
                                                            "target after further fine-tuning)"),
            output: Path = typer.Option(..., "--output", help="folder to write (must not exist, or be empty)"),
            trust_remote_code: bool = typer.Option(False, help="allow the model's own code")):
    """Add a run's stored weight update to another model of the same architecture and save the result."""

    def go():
        from unlearnkit.methods.updates import reapply as reapply_update

        return reapply_update(run_dir, model, output, trust_remote_code=trust_remote_code)

    written = _guard(go)
    typer.echo(f"re-applied the update of {run_dir} to {model}: {written}")
