import sys

from xnat_ml.cli import main

sys.exit(main())
