"""The ``vidtok`` command line. Commands are thin: parse, build a config, call vidtok's Python API.

torch and everything heavy is imported inside command bodies so ``vidtok --help`` is instant. Any
:class:`~vidtok.errors.VidtokError` is printed as one line ``error: ...`` on stderr with a non-zero exit code;
``vidtok --debug CMD`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from importlib import metadata

import click

from vidtok import __version__
from vidtok.errors import ConfigError, VidtokError


class _Group(click.Group):
    """Maps vidtok errors to one-line messages and exit codes (2 for config errors, 1 otherwise)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except VidtokError as e:
            if ctx.params.get("debug"):
                raise
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.version_option(__version__, "--version", prog_name="vidtok")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """vidtok: video understanding with tubelet tokens.

    \b
    Examples:
      vidtok info
      vidtok synth data/synth --classes 4 --per-class 40
      vidtok train --config configs/demo_vidtok_ti.yaml --out runs/demo
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def config_options(f):
    """``--config FILE`` and repeatable ``--set key.sub=value`` for commands that build a Config."""
    f = click.option(
        "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value (repeatable)."
    )(f)
    f = click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")(f)
    return f


def load_cli_config(config_path: str | None, overrides: tuple[str, ...]):
    from vidtok.config import load_config

    return load_config(config_path, overrides)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


@cli.command()
@click.option("--model", "model_name", default=None, help="Also show parameters and FLOPs of this registry model.")
@config_options
def info(model_name: str | None, config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Versions, video decoders, attention backends and devices on this machine.

    \b
    Examples:
      vidtok info
      vidtok info --model vivit_b16x2
    """
    import torch

    from vidtok import io as vio
    from vidtok import kernels

    cfg = load_cli_config(config_path, overrides) if (config_path or overrides) else None
    rows = [("vidtok", __version__), ("python", sys.version.split()[0])]
    for dist in ("torch", "torchvision", "av", "decord", "torchcodec", "triton", "transformers"):
        rows.append((dist, _version(dist)))
    rows.append(("video backends", ", ".join(vio.available_backends()) + f"  (auto: {vio.resolve_backend('auto')})"))
    cuda = torch.cuda.is_available()
    probe = torch.empty(1, 1, 1, 1, 8, device="cuda" if cuda else "cpu")
    rows.append(
        (
            "attention backends",
            ", ".join(kernels.available_backends()) + f"  (auto: {kernels.resolve_backend('auto', probe)})",
        )
    )
    device = f"cuda ({torch.cuda.get_device_name(0)})" if cuda else "cpu"
    rows.append(("device", device))
    rows.append(("cpu threads", str(torch.get_num_threads())))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")
    if cfg is not None and model_name is None:
        model_name = cfg.model.name
    if model_name:
        from vidtok.models import describe_model

        click.echo("")
        for k, v in describe_model(model_name, cfg.model if cfg is not None else None).items():
            click.echo(f"{k:<{width}}  {v}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="vidtok", standalone_mode=True)
    except ConfigError as e:  # raised before a command body runs (e.g. by click callbacks)
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
