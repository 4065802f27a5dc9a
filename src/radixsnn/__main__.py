import sys

from radixsnn.cli import main

sys.exit(main())
