"""``python -m control_plane.dns --topology FILE --region R ...`` (same as ``edgemesh dns``)."""

import sys

from control_plane.dns.cli import main

sys.exit(main())
