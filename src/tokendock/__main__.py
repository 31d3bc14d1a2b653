from tokendock.cli import main

raise SystemExit(main())
