"""Suite-wide: zeustune's user folder (exported schedules, preset lookup) is a fresh temporary
one, so what a developer tuned on this machine never changes what the tests see."""

import os
import tempfile

os.environ["ZEUSTUNE_HOME"] = tempfile.mkdtemp(prefix="zeustune-home-")
