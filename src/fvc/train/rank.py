"""One rank of a training job with several processes (`fvc.train.distributed.launch` starts it as
`python -m fvc.train.rank <train_rank's kwargs as JSON>`)."""

from __future__ import annotations

import json
import sys

import torch.distributed

from fvc.train import distributed


def main(kwargs_json: str) -> int:
    """One rank: join the group, train, leave; exit code `TrainingStopped.exit_code` on a stop."""
    import logging

    from fvc.core.config import ModelSpec
    from fvc.train.stopping import TrainingStopped, hold_stop_signals
    from fvc.train.training import train_rank

    hold_stop_signals()
    kwargs = json.loads(kwargs_json)
    kwargs["spec"] = ModelSpec(**kwargs["spec"])
    kwargs["device"] = str(distributed.init_ranks(kwargs["device"]))
    ranks = distributed.current()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s rank {ranks.rank}/{ranks.world} %(name)s: %(message)s",
        force=True,
    )
    try:
        train_rank(**kwargs)
    except TrainingStopped:
        return TrainingStopped.exit_code
    finally:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
