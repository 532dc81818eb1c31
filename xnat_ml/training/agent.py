"""torchrun for one run's workers, bound to the process that started it.

torchrun starts each worker in a session of its own, so killing the launching process (or its
process group, as the local backend does) would leave the workers training on, and a relaunch
would then write the same run folder twice. This entry point makes torchrun die with its
launcher, and tells the workers whose death they must follow (``distributed.die_with_parent``).
"""

from __future__ import annotations

import os
import sys

from xnat_ml.training.distributed import AGENT_PID, LAUNCHER_PID, die_with_parent


def main() -> None:
    die_with_parent(LAUNCHER_PID)
    os.environ[AGENT_PID] = str(os.getpid())
    from torch.distributed.run import main as torchrun

    torchrun(sys.argv[1:])


if __name__ == "__main__":
    main()
