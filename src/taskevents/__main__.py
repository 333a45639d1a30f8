from taskevents.cli import main

raise SystemExit(main())
