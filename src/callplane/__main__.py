from callplane.cli import main

raise SystemExit(main())
