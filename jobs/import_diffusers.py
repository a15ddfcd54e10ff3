"""Import a pretrained ``diffusers`` AutoencoderKL (Stable Diffusion, SDXL, FLUX VAEs) from a
local folder as a vaezip checkpoint:
``python -m jobs.import_diffusers --source FOLDER --output CKPT``.

The folder is what ``AutoencoderKL.save_pretrained`` writes (``config.json`` and
``diffusion_pytorch_model.safetensors``), or a whole pipeline folder with ``--subfolder vae``.
Nothing is downloaded and only safetensors weights are read. The checkpoint keeps the model's
scaling and shift factors, so the archive's latents are the ones the diffusion model expects.
Needs the ``diffusers`` extra.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jobs._cli import Parser, run_main
from pipeline.core.errors import ConfigError
from pipeline.model.checkpoint import save_checkpoint


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m jobs.import_diffusers", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--source",
        required=True,
        help="local folder of a diffusers AutoencoderKL (config.json + diffusion_pytorch_model.safetensors)",
    )
    p.add_argument("--subfolder", help="the VAE's folder inside a pipeline folder (e.g. vae)")
    p.add_argument("--output", required=True, help="vaezip checkpoint folder to write")
    args = p.parse_args(argv)
    from pipeline.model.nets.diffusers_vae import AutoencoderKL, DiffusersVAE, config_of

    try:
        vae = AutoencoderKL.from_pretrained(
            args.source, subfolder=args.subfolder, use_safetensors=True, local_files_only=True
        )
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{args.source}: not a local diffusers AutoencoderKL folder with "
            f"safetensors weights ({' '.join(str(err).split())[:300]})"
        ) from err
    config = config_of(vae)
    fingerprint = save_checkpoint(
        DiffusersVAE(config, vae.eval()),
        args.output,
        training={"imported_from": args.source, "subfolder": args.subfolder},
    )
    print(
        f"imported AutoencoderKL ({config.latent_channels} latent channels, downsampling "
        f"{config.downsample_factor}x, scaling {config.scaling_factor}, shift "
        f"{config.shift_factor}) as {args.output} (fingerprint {fingerprint[:12]})"
    )
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
