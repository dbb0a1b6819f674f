"""`dal-dist model ...`: create checkpoints (training arrives with the driver; scoring works before it)."""

from __future__ import annotations

from pathlib import Path

import typer

from dal_dist.cli import checks
from dal_dist.cli.app import app

model_app = typer.Typer(help="Model checkpoints.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("init")
def init(
    model: str = typer.Option(..., "--model", help="Model name: mnist-cnn, resnet18-small (32 px), resnet18, resnet34, "
                              "resnet50, efficientnet_b0, convnext_tiny, vit_b_16, or a plug-in "
                              "package.module:factory (imported from the current directory)."),
    classes: int = typer.Option(..., "--classes", min=2, max=1_000_000, help="Number of classes."),
    out: Path = typer.Option(..., "--out", help="Checkpoint file to write (refused if it exists)."),
    in_channels: int = typer.Option(None, "--in-channels", min=1, max=64, help="Input channels (default per model)."),
    image_size: int = typer.Option(None, "--image-size", min=8, max=4096,
                                   help="Input side in pixels (default per model)."),
    dropout: float = typer.Option(0.5, "--dropout", min=0.0, max=0.99, help="Dropout rate of the head."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint file."),
    seed: int = typer.Option(0, "--seed", min=0, help="Initialisation seed."),
    weights: str = typer.Option(None, "--weights", help="Local torchvision state_dict the backbone starts from "
                                 "(torch.save(model.state_dict(), FILE)); its classifier is dropped. Never downloads."),
    normalize: str = typer.Option(None, "--normalize", help="imagenet, half or none (default per model: imagenet "
                                  "for torchvision architectures and plug-ins)."),
) -> None:
    """Write a freshly initialised, seeded checkpoint."""
    from dal_dist.errors import DalDistError
    from dal_dist.models import build_model, default_config, save_checkpoint

    if out.is_dir():
        raise DalDistError(f"--out {out}: is a directory; expected a checkpoint file path")
    if out.exists() and not overwrite:
        raise DalDistError(f"--out {out}: exists; pass --overwrite to replace it")

    if weights is not None:
        weights = str(checks.input_file("--weights", weights, "a torchvision state_dict file"))
    if normalize is not None:
        checks.nonempty("--normalize", normalize, "imagenet, half or none")
    config = default_config(model, classes, in_channels=in_channels, image_size=image_size, seed=seed,
                            dropout=dropout, weights=weights, normalize=normalize)
    save_checkpoint(build_model(config), out)
    typer.echo(f"wrote {out} ({config.name}, {config.num_classes} classes, "
               f"{config.in_channels}x{config.image_size}x{config.image_size}"
               f"{', backbone from ' + str(weights) if weights else ''})")
