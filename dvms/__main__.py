from dvms.cli.main import main

raise SystemExit(main())
