"""The command line: LightningCLI over `PhiLitModule` and any LightningDataModule named in the YAML.

    python -m phi1.cli fit --config experiments/phi1.yaml
    python -m phi1.cli fit --config experiments/phi1.yaml --print_config   # the whole run, resolved

The resolved config is saved as `config.yaml` in the run's log folder; a restarted run overwrites its
own copy rather than refusing to start.
"""

from lightning.pytorch.cli import LightningCLI

from phi1.module import PhiLitModule


def main(args=None):
    LightningCLI(
        PhiLitModule,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
