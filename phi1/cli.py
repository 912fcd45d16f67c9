"""The command line: `PhiCLI`, a LightningCLI over `PhiLitModule` and any LightningDataModule named in the YAML.

    python -m phi1.cli fit --config experiments/phi1.yaml
    python -m phi1.cli fit --config experiments/phi1.yaml --print_config   # the whole run, resolved

A user's mistake (`phi1.errors.ConfigError`: a setting, flag or input file that cannot be used) is reported
as one line, `error: <message>`, with exit status 2; a bug keeps its traceback.
"""

import sys

from lightning.pytorch.cli import LightningCLI

from phi1.errors import ConfigError
from phi1.module import PhiLitModule


class PhiCLI(LightningCLI):
    """LightningCLI with phi1's model class; the `before_<subcommand>` hooks check a run before it starts."""

    def __init__(self, args=None, **kwargs):
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(PhiLitModule, subclass_mode_data=True, args=args, **kwargs)


def main(args=None):
    try:
        PhiCLI(args=args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
