"""``python -m warden.infra.cli``: the ``warden`` command, as child processes of Warden start it."""

import sys

from warden.infra.cli.main import main

sys.exit(main())
