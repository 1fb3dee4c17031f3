"""``crlib simulate``: write a local archive of realistic simulated ACS/WFC visits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crlib.cli.app import app


@app.command("simulate")
def simulate_command(
    out: Annotated[Path, typer.Option(help="Archive directory to create or extend.")],
    visits: Annotated[int, typer.Option(help="New visits to add (>= 1).")] = 2,
    exposures: Annotated[int, typer.Option(help="Exposures per visit, 1-8 (drizzle needs >= 2).")] = 4,
    field_type: Annotated[
        str,
        typer.Option(
            "--field-type",
            help="globular_cluster, extragalactic, resolved_galaxy, or mixed (cycle through the three).",
        ),
    ] = "mixed",
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", help="ACS/WFC filter; repeat to cycle filters over visits."),
    ] = None,
    size: Annotated[
        str, typer.Option(help="'full' 2x4096x2048 chips or 'small' 2x1024x512 crops.")
    ] = "small",
    seed: Annotated[int, typer.Option(help="Random seed >= 0 (same seed, same files).")] = 0,
    proposal_id: Annotated[int | None, typer.Option(help="Use this HST proposal id.")] = None,
    exptime: Annotated[float | None, typer.Option(help="Exposure time in seconds.")] = None,
    gaia_catalog: Annotated[
        Path | None,
        typer.Option(help="'ra dec mag' star list to simulate a real sky (e.g. NGC 6791 Gaia DR2)."),
    ] = None,
    dither: Annotated[
        str,
        typer.Option(
            help="'pattern' (standard LINE/BOX dithers) or 'none' (undithered CR-SPLIT visits, "
            "for `crlib truth --method multiframe`)."
        ),
    ] = "pattern",
    effects: Annotated[
        str,
        typer.Option(
            help="'basic' (no archive effects) or 'realistic' (real PSFs, CTE trails, dated hot/warm/sink "
            "pixels, prior DQ 4096, satellite trails, roll/scale errors, varying CR rate; docs/simulator.md)."
        ),
    ] = "realistic",
    filters_per_visit: Annotated[
        int, typer.Option(help="Filters within one visit (blocks of exposures); needs --filter repeated.")
    ] = 1,
) -> None:
    """Simulate HST ACS/WFC visits (FLC files + CR truth) into a local archive.

    Parameters are validated by the library (ConfigError -> one-line message), not by Typer.
    """
    import dataclasses

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from crlib.simulate import simulate_archive
    from crlib.simulate.effects import parse_effects

    chosen = dataclasses.replace(parse_effects(effects), filters_per_visit=filters_per_visit)

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("simulating", total=visits * exposures)

        def report(message: str, done: int, total: int) -> None:
            bar.update(task, description=message, completed=done, total=total)

        archive = simulate_archive(
            out,
            visits=visits,
            exposures=exposures,
            field_type=field_type,
            filters=tuple(filters or ("F606W",)),
            size=size,  # type: ignore[arg-type]
            seed=seed,
            proposal_id=proposal_id,
            exptime_s=exptime,
            gaia_catalog=gaia_catalog,
            dither=dither,
            effects=chosen,
            progress=report,
        )
    typer.echo(f"archive {archive.root}: {len(archive.visits)} visits, table {archive.observations_path}")
    for visit in archive.visits[-visits:]:
        fractions = ", ".join(f"{e.cr_pixel_fraction:.2%}" for e in visit.exposures)
        typer.echo(
            f"  {visit.visit}  {visit.field_type:<16} {visit.filter}  {len(visit.exposures)} exp  "
            f"pointing error {visit.pointing_error_px:.2f} px  CR pixels {fractions}"
        )
