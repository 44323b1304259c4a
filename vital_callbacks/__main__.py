"""`python -m vital_callbacks` is the `vital-callbacks` command."""

from vital_callbacks.cli import main

raise SystemExit(main())
