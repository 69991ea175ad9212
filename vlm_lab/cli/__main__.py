import sys

from vlm_lab.cli import main

sys.exit(main())
